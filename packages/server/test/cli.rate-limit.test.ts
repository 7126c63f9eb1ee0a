/**
 * `rill publish` and `rill tail` told to wait: against a loopback node:http peer answering `429
 * rate_limited` the way a Rill server's limits do (a protocol peer standing in for `rill serve`,
 * whose limits are not there yet), and against a real `rill serve` refusing with `503
 * overloaded`. They wait the Retry-After, say which limit was hit, and go on.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN } from '@rill/testkit';

const servers: http.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function peer(
  handle: (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void,
): Promise<{ url: string; arrivals: number[] }> {
  const arrivals: number[] = [];
  const srv = http.createServer((req, res) => {
    arrivals.push(Date.now());
    req.resume();
    req.on('end', () => handle(req, res, arrivals.length));
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, arrivals };
}

function refuse(res: http.ServerResponse, limit: string, scope: string, value: number): void {
  res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
  res.end(
    JSON.stringify({
      error: {
        limit,
        scope,
        limitValue: value,
        retryAfter: 1,
        code: 'rate_limited',
        message: 'A rate or count limit was reached; retry after the time given',
        retryable: true,
        closeCode: 4008,
      },
    }),
  );
}

/** Runs the CLI to its end (or, with `until`, until its output says so) and what it wrote. */
function run(
  args: string[],
  until?: (out: string) => boolean,
): Promise<{ code: number | string; out: string; err: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (until?.(out)) proc.kill('SIGINT');
  });
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  return new Promise((r) =>
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      r({ code: code ?? signal ?? -1, out, err });
    }),
  );
}

describe('CLI and 429 rate_limited', () => {
  it('rill publish waits Retry-After, prints the limit, and stores the event', async () => {
    const { url, arrivals } = await peer((_req, res, n) => {
      if (n === 1) return refuse(res, 'publishesPerSecond', 'key', 100);
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(
        '{"topic":"t","epoch":"e1","events":[{"seq":1,"id":"e1:1","time":1,"duplicate":false}]}',
      );
    });
    const r = await run(['publish', '--url', url, 't', '{"x":1}']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ seq: 1 });
    expect(r.err).toMatch(
      /^rill: rate limited: publishesPerSecond per key \(limit 100\), retry in (1|1\.\d)s\n$/,
    );
    expect(arrivals[1]! - arrivals[0]!).toBeGreaterThanOrEqual(990);
  });

  it('rill publish names the limit when it gives up', async () => {
    const { url } = await peer((_req, res) => refuse(res, 'topicsPerMinute', 'user', 10));
    // Six refusals of at least a second each: the SDK's five retries, then the failure.
    const r = await run(['publish', '--url', url, 't', '1']);
    expect(r.code).toBe(1);
    const lines = r.err.trim().split('\n');
    expect(lines).toHaveLength(6);
    expect(lines.at(-1)).toBe('rill: rejected: rate limited: topicsPerMinute per user (limit 10)');
  }, 40_000);

  it('rill tail reports the limit in its state line, waits, then prints events', async () => {
    const { url, arrivals } = await peer((_req, res, n) => {
      if (n === 1) return refuse(res, 'subscriptions', 'key', 5);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const ev = { topic: 't', seq: 1, id: 'e1:1', time: 1, data: 'hi' };
      res.write(`id: e1:1\ndata: ${JSON.stringify(ev)}\n\n`);
    });
    const r = await run(
      ['tail', '--url', url, '--format', 'json', '--transport', 'sse', 't'],
      (o) => o.includes('"hi"'),
    );
    expect(JSON.parse(r.out.split('\n')[0]!)).toMatchObject({ seq: 1, data: 'hi' });
    const states = r.err
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const refused = states.find((s) => s.error === 'rate_limited')!;
    expect(refused).toMatchObject({
      limit: 'subscriptions',
      scope: 'key',
      limitValue: 5,
      retryAfter: 1,
    });
    expect(refused.delay).toBeGreaterThanOrEqual(1000);
    expect(arrivals[1]! - arrivals[0]!).toBeGreaterThanOrEqual(990);
  });
});
