/**
 * `rill tail` and `rill publish`: the real CLI (the built bin, a child process) against a real
 * server. tail prints JSON lines when piped, resumes through the SDK after its connection is cut
 * (every event once, in order) and exits 0 on SIGINT; publish streams stdin NDJSON in batches,
 * prints a summary, and exits non-zero with a clear message (storing nothing of the batch) when
 * the server rejects an event.
 */
import { describe, expect, it } from 'vitest';
import { TcpProxy } from '@rill/testkit/proxy';
import { BIN, freePort, publish, startServer, waitFor, useCleanups } from '@rill/testkit';
import { rill, killAtCleanup, type Run } from './cli-ops-helpers.js';

describe('rill tail / rill publish', () => {
  const { cleanups } = useCleanups();

  async function server(config = {}): Promise<string> {
    const s = await startServer(config);
    cleanups.push(s.close);
    return s.url;
  }

  const track = (r: Run): Run => killAtCleanup(cleanups, r);

  it('tail prints JSON lines, resumes after a cut exactly once, and exits 0 on SIGINT', async () => {
    const url = await server();
    const proxy = new TcpProxy(Number(new URL(url).port));
    const purl = await proxy.listen();
    cleanups.push(() => proxy.close());
    for (let n = 1; n <= 3; n++) await publish(url, 'cli.tail', { data: { n } });
    const t = track(
      rill(['tail', 'cli.tail', 'cli.other.*', '--from', 'earliest'], undefined, {
        RILL_URL: purl,
      }),
    );
    await t.lines(3);
    expect(proxy.cutAll()).toBeGreaterThan(0);
    for (let n = 4; n <= 6; n++) await publish(url, 'cli.tail', { data: { n } });
    await publish(url, 'cli.other.x', { type: 'hello', data: 'x' });
    const lines = await t.lines(7);
    const evs = lines.map(
      (l) => JSON.parse(l) as { topic: string; seq: number; data: unknown; type?: string },
    );
    // Order is per topic; across topics a replay may interleave differently.
    expect(evs.filter((e) => e.topic === 'cli.tail').map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    const other = evs.filter((e) => e.topic === 'cli.other.x');
    expect(other).toHaveLength(1);
    expect(other[0]).toMatchObject({ type: 'hello', data: 'x' });
    t.proc.kill('SIGINT');
    expect(await t.exited).toBe(0);
    expect(t.stderr()).toContain('"state":"reconnecting"');
  });

  it('tail --format pretty aligns topics; a bad pattern exits 1 with the server code', async () => {
    const url = await server();
    await publish(url, 'a', { data: 1 });
    await publish(url, 'bbbbbb', { type: 't.x', data: { v: 2 } });
    const t = track(
      rill(['tail', 'a', 'bbbbbb', '--from', 'earliest', '--format', 'pretty', '--url', url]),
    );
    const lines = await t.lines(2);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} a\s+#1 1$/);
    expect(lines[1]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} bbbbbb\s+#1 t\.x \{"v":2\}$/);
    t.proc.kill('SIGINT');
    expect(await t.exited).toBe(0);

    const bad = track(rill(['tail', 'a.>.b', '--url', url]));
    expect(await bad.exited).toBe(1);
    expect(bad.stderr()).toContain('rill: invalid_pattern');
  });

  it('publish streams stdin NDJSON in batches and prints a summary', async () => {
    const url = await server();
    const input =
      Array.from({ length: 1201 }, (_, i) => JSON.stringify({ type: 'n', data: { i } })).join(
        '\n',
      ) + '\n\n';
    const r = track(rill(['publish', 'cli.pub', '--url', url, '--batch-size', '500'], input));
    expect(await r.exited).toBe(0);
    expect(r.stderr()).toMatch(/^published 1201 events to cli\.pub \(seq 1–1201\) in [\d.]+ s\n$/);
    const page = (await (await fetch(`${url}/v1/topics/cli.pub`)).json()) as { lastSeq: number };
    expect(page.lastSeq).toBe(1201);

    const one = track(rill(['publish', 'cli.pub', '{"x":1}', '--type', 'single', '--url', url]));
    expect(await one.exited).toBe(0);
    expect(JSON.parse(one.stdout())).toMatchObject({
      topic: 'cli.pub',
      seq: 1202,
      duplicate: false,
    });
  });

  it('publish exits 1 with a clear message on a rejected event and stores nothing of its batch', async () => {
    const url = await server();
    const lines = [
      JSON.stringify({ data: 1 }),
      JSON.stringify({ data: 2 }),
      JSON.stringify({ type: 'rill.reserved', data: 3 }),
      JSON.stringify({ data: 4 }),
    ];
    const r = track(
      rill(['publish', 'cli.bad', '--url', url, '--batch-size', '2'], lines.join('\n')),
    );
    expect(await r.exited).toBe(1);
    expect(r.stderr()).toContain('lines 3–4 rejected (nothing of them stored): invalid_event');
    expect(r.stderr()).toContain('(2 events before were stored)');
    const info = (await (await fetch(`${url}/v1/topics/cli.bad`)).json()) as { lastSeq: number };
    expect(info.lastSeq).toBe(2);

    const notJson = track(rill(['publish', 'cli.bad', '--url', url], 'nope\n'));
    expect(await notJson.exited).toBe(1);
    expect(notJson.stderr()).toBe('rill: line 1: not JSON\n');
  });

  /** Runs the bin under a pseudo-terminal (`script`), so stdout and stderr are TTYs. */
  function rillTty(args: string[]): Run {
    const cmd = [process.execPath, BIN, ...args].map((a) => `'${a}'`).join(' ');
    return rill([], undefined, {}, ['/usr/bin/script', '-qfec', cmd, '/dev/null']);
  }

  /** Resolves once `text()` matches `re` (fails after 20 s, showing the text). */
  async function until(text: () => string, re: RegExp): Promise<void> {
    await waitFor(() => re.test(text()), 20_000).catch(() => {
      throw new Error(`no ${re} in:\n${text()}`);
    });
  }

  it('publish to a server that is down names the URL and the cause, and the retries on a TTY', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const tty = track(rillTty(['publish', 'cli.down', '1', '--url', dead]));
    await until(
      tty.stdout,
      new RegExp(
        `rill: cannot reach ${dead} \\(connection refused: is rill serve running there\\?\\), retrying in \\d+(\\.\\d)?m?s`,
      ),
    );
    tty.proc.kill('SIGKILL');

    const r = track(rill(['publish', 'cli.down', '1', '--url', dead]));
    expect(await r.exited).toBe(1);
    // Not a terminal: no retry chatter, one line saying what failed.
    expect(r.stderr()).toBe(
      `rill: cannot reach ${dead} (connection refused: is rill serve running there?), gave up after 6 attempts\n`,
    );
  }, 60_000);

  it('publish to a port fetch refuses says so instead of "fetch failed"', async () => {
    const r = track(rill(['publish', 'cli.down', '1', '--url', 'http://127.0.0.1:9']));
    expect(await r.exited).toBe(1);
    expect(r.stderr()).toBe(
      'rill: cannot reach http://127.0.0.1:9 (port 9 is one fetch refuses to connect to; use another port), gave up after 6 attempts\n',
    );
  }, 60_000);

  it('tail to a server that is down says it is reconnecting and why; once per state when piped', async () => {
    const port = await freePort();
    const dead = `http://127.0.0.1:${port}`;
    const tty = track(rillTty(['tail', 'cli.down', '--url', dead]));
    await until(
      tty.stdout,
      new RegExp(
        `~ cannot reach ${dead} \\(connection refused: is rill serve running there\\?\\), reconnecting in \\d`,
      ),
    );
    tty.proc.kill('SIGKILL');

    const r = track(rill(['tail', 'cli.down', '--url', dead]));
    await until(r.stderr, /"state":"connecting"/);
    // The server comes up on that port: the tail connects and says so, one line.
    const s = await startServer({ port });
    cleanups.push(s.close);
    await until(r.stderr, /"state":"open"/);
    await publish(s.url, 'cli.down', { data: 7 });
    expect(JSON.parse((await r.lines(1))[0]!)).toMatchObject({ topic: 'cli.down', data: 7 });
    const states = r
      .stderr()
      .split('\n')
      .filter(Boolean)
      .map(
        (l) => JSON.parse(l) as { state: string; url: string; error?: string; message?: string },
      );
    expect(states[0]).toMatchObject({
      state: 'connecting',
      url: dead,
      error: 'connection_failed',
      message: 'Connection failed: ECONNREFUSED',
      cause: 'connection refused: is rill serve running there?',
    });
    // However many attempts it took: one line for the refused state, one for open.
    expect(states.map((x) => x.state)).toEqual(['connecting', 'open']);
    r.proc.kill('SIGINT');
    expect(await r.exited).toBe(0);
  }, 60_000);
});
