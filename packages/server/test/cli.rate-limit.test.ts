/**
 * `rill publish` and `rill tail` against a real Rill server whose per-key limits refuse them
 * (`429 rate_limited`): they say which limit, whose and its value, wait the Retry-After and go
 * on. The server runs in the test's process; the CLI is the built bin, a child process. What the
 * CLI prints when it gives up is checked in cli.refusal.unit.test.ts.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BIN, openSse, startServer, useCleanups } from '@rill/testkit';
import { apiKey, authConfig, bearer } from '@rill/testkit/auth';
import type { RillConfigInput } from '../src/config.js';

const { cleanups } = useCleanups();

/** A server whose one API key is held to `limits` (per key; loopback is exempt per address). */
async function server(limits: Record<string, unknown>) {
  const k = apiKey('cli', { publish: ['>'], subscribe: ['>'] });
  const s = await startServer({
    rateLimits: { perKey: limits },
    auth: authConfig({ apiKeys: [k.entry] }),
  } as RillConfigInput);
  cleanups.push(() => s.close());
  return { ...s, key: k.key };
}

/** The data of the events stored on `topic`, read with `key`. */
async function stored(url: string, topic: string, key: string): Promise<unknown[]> {
  const res = await fetch(`${url}/v1/topics/${topic}/events`, { headers: bearer(key) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { events: Array<{ data: unknown }> }).events.map((e) => e.data);
}

/**
 * Runs the CLI to its end, or until `stop` says so of what it wrote (then SIGINT); `watch` sees
 * the output as it comes.
 */
function run(
  args: string[],
  opts: {
    stdin?: string;
    stop?: (out: string, err: string) => boolean;
    watch?: (out: string, err: string) => void;
  } = {},
): Promise<{ code: number | string; out: string; err: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (opts.stdin !== undefined) proc.stdin!.end(opts.stdin);
  let out = '';
  let err = '';
  const seen = (): void => {
    opts.watch?.(out, err);
    if (opts.stop?.(out, err)) proc.kill('SIGINT');
  };
  proc.stdout!.on('data', (d: Buffer) => ((out += d.toString()), seen()));
  proc.stderr!.on('data', (d: Buffer) => ((err += d.toString()), seen()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 40_000);
  return new Promise((r) =>
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      r({ code: code ?? signal ?? -1, out, err });
    }),
  );
}

describe('CLI and 429 rate_limited from a real server', () => {
  it('rill publish (stdin) waits Retry-After, prints the limit, and stores every event', async () => {
    // One event a second, no burst: the second request of the run is refused for ~1 s.
    const { url, key } = await server({ publishesPerSecond: { rate: 1, burst: 1 } });
    const started = Date.now();
    const r = await run(['publish', '--url', url, '--token', key, '--batch-size', '1', 't'], {
      stdin: '{"data":1}\n{"data":2}\n',
    });
    expect(r.code).toBe(0);
    const lines = r.err.trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const l of lines.slice(0, -1)) {
      expect(l).toMatch(
        /^rill: rate limited: publishesPerSecond per key \(limit 1\), retry in (1|1\.\d)s$/,
      );
    }
    expect(lines.at(-1)).toMatch(/^published 2 events to t \(seq 1–2\) in [\d.]+ s$/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(await stored(url, 't', key)).toEqual([1, 2]);
  });

  it('rill publish (one event) says the same when the key’s bucket is already empty', async () => {
    // One event every 5 s: the CLI starts well within that after the test's own publish.
    const { url, key } = await server({ publishesPerSecond: { rate: 0.2, burst: 1 } });
    const res = await fetch(`${url}/v1/topics/t/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(key) },
      body: '{"data":1}',
    });
    expect(res.status).toBe(201);
    const r = await run(['publish', '--url', url, '--token', key, 't', '2']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ topic: 't', seq: 2 });
    expect(r.err).toMatch(
      /^rill: rate limited: publishesPerSecond per key \(limit 0\.2\), retry in [1-5](\.\d)?s\n$/,
    );
    expect(await stored(url, 't', key)).toEqual([1, 2]);
  });

  it('rill tail reports the limit in its JSON state line, waits, then prints events', async () => {
    const { url, key } = await server({ connections: 1 });
    // The one stream this key may hold.
    const held = await openSse(`${url}/v1/topics/other/stream`, bearer(key));
    expect(held.status).toBe(200);
    cleanups.push(() => held.close());
    let released = false;
    const r = await run(
      [
        'tail',
        '--url',
        url,
        '--token',
        key,
        '--from',
        'earliest',
        '--format',
        'json',
        '--transport',
        'sse',
        't',
      ],
      {
        // Once refused, free the key's place and publish: the tail's next attempt streams it.
        watch: (_out, err) => {
          if (released || !err.includes('"rate_limited"')) return;
          released = true;
          held.close();
          void fetch(`${url}/v1/topics/t/events`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...bearer(key) },
            body: '{"data":"hi"}',
          });
        },
        stop: (out) => out.includes('"hi"'),
      },
    );
    expect(JSON.parse(r.out.split('\n')[0]!)).toMatchObject({ topic: 't', data: 'hi' });
    const states = r.err
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const refused = states.find((s) => s.error === 'rate_limited')!;
    expect(refused).toMatchObject({
      limit: 'connections',
      scope: 'key',
      limitValue: 1,
      retryAfter: 1,
    });
    expect(refused.delay).toBeGreaterThanOrEqual(1000);
    expect(states.at(-1)).toMatchObject({ state: 'closed' });
    expect(states.some((s) => s.state === 'open')).toBe(true);
  });
});
