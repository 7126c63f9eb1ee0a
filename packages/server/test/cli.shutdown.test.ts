/**
 * Graceful shutdown of `rill serve` as operators meet it: SIGTERM with idle keep-alive
 * connections, connections that never sent a request, a publish still arriving, a broker that is
 * gone, and the shutdown timeout.
 */
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { spawnLogged, within, type LoggedServer } from './cli-ops-helpers.js';
import { freePort, tempDir, useCleanups } from '@rill/testkit';
import { OwnNats } from '@rill/testkit/nats';
import { OwnRedis } from '@rill/testkit/redis';

const { cleanups } = useCleanups();

function serve(args: string[], env: NodeJS.ProcessEnv = {}): LoggedServer {
  const s = spawnLogged(args, env);
  cleanups.push(() => s.kill());
  return s;
}

function lmdbArgs(): string[] {
  const dir = tempDir('rill-shutdown-');
  cleanups.push(() => dir.remove());
  return ['--data-dir', dir.path, '--port', '0'];
}

/** A raw TCP connection to the server, its received bytes kept. */
async function connectRaw(url: string): Promise<{ socket: net.Socket; received: () => string }> {
  const u = new URL(url);
  const socket = net.connect(Number(u.port), u.hostname);
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
  socket.on('error', () => undefined);
  cleanups.push(() => void socket.destroy());
  await new Promise<void>((r, j) => {
    socket.once('connect', r);
    socket.once('error', j);
  });
  return { socket, received: () => got };
}

function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  return within(
    new Promise<void>((resolve) => {
      const tick = (): void => {
        if (cond()) resolve();
        else setImmediate(tick);
      };
      tick();
    }),
    ms,
    what,
  );
}

async function ready(url: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await fetch(`${url}/readyz`).catch(() => null);
    if (r?.status === 200) return;
    if (Date.now() > end) throw new Error(`${url} not ready in ${ms} ms`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** SIGTERMs the server and resolves with its exit code and how long it took. */
async function terminate(
  s: LoggedServer,
  ms = 9_000,
): Promise<{ code: number | string; ms: number }> {
  const t0 = Date.now();
  s.proc.kill('SIGTERM');
  const code = await within(s.exited, ms, 'rill to exit after SIGTERM');
  return { code, ms: Date.now() - t0 };
}

describe('SIGTERM', () => {
  it('closes idle keep-alive connections and not-yet-used ones at once and exits 0', async () => {
    const s = serve(lmdbArgs());
    const url = await s.listening;
    // Keep-alive connections that served a request and now sit idle in the agent's pool.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    cleanups.push(() => agent.destroy());
    await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          new Promise<void>((resolve, reject) => {
            http
              .get(`${url}/healthz`, { agent }, (res) => {
                res.resume();
                res.on('end', resolve);
              })
              .on('error', reject);
          }),
      ),
    );
    expect(Object.values(agent.freeSockets).flat().length).toBe(4);
    // Connections opened ahead of use (as browsers and pools do) that have sent nothing, and one
    // that has sent only part of a request head.
    const fresh = await Promise.all([connectRaw(url), connectRaw(url), connectRaw(url)]);
    fresh[2]!.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');

    const { code, ms } = await terminate(s);
    expect(code).toBe(0);
    // Well under the 10 s shutdown timeout.
    expect(ms).toBeLessThan(3_000);
    const msgs = s.lines().map((l) => l.msg);
    expect(msgs).toContain('stopped');
    expect(msgs).not.toContain('shutdown timed out; exiting');
  });

  it('lets a publish in flight finish and acknowledges it with 201 before exiting 0', async () => {
    const s = serve(lmdbArgs());
    const url = await s.listening;
    const { socket, received } = await connectRaw(url);
    const body = JSON.stringify([{ data: 'first' }, { data: 'last' }]);
    // The server answers 100 Continue once it has the head: from then on the request is in
    // flight, and its body is still on the way when the signal comes.
    socket.write(
      `POST /v1/topics/inflight/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    );
    await until(() => received().includes('100 Continue'), 10_000, '100 Continue');
    socket.write(body.slice(0, 10));
    s.proc.kill('SIGTERM');
    await s.waitLog((l) => l.msg === 'shutting down');
    socket.write(body.slice(10));
    const ended = new Promise<void>((r) => socket.once('end', r));
    await within(ended, 5_000, 'the server to end the connection after answering');
    const res = received();
    expect(res).toMatch(/HTTP\/1\.1 201 /);
    expect(res.toLowerCase()).toContain('connection: close');
    const json = JSON.parse(res.slice(res.indexOf('{'))) as { events: Array<{ seq: number }> };
    expect(json.events.map((e) => e.seq)).toEqual([1, 2]);
    expect(await within(s.exited, 5_000, 'rill to exit')).toBe(0);
    expect(s.lines().map((l) => l.msg)).toContain('stopped');
  });

  it('past the shutdown timeout still closes the engine, then exits 1', async () => {
    const s = serve(lmdbArgs(), { RILL_SHUTDOWN_TIMEOUT: '500ms' });
    const url = await s.listening;
    const { socket, received } = await connectRaw(url);
    // A publish whose body never completes.
    socket.write(
      `POST /v1/topics/stuck/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Content-Length: 100\r\nExpect: 100-continue\r\n\r\n{"data":`,
    );
    await until(() => received().includes('100 Continue'), 10_000, '100 Continue');
    const { code } = await terminate(s, 5_000);
    expect(code).toBe(1);
    // Ordered by their own timestamps: two lines written within a millisecond can reach the pipe
    // in either order.
    const at = (msg: string): number | undefined =>
      s.lines().find((l) => l.msg === msg)?.time as number | undefined;
    const timedOut = at('shutdown timed out; exiting');
    const closed = at('engine closed');
    expect(timedOut).toBeDefined();
    expect(closed).toBeDefined();
    expect(closed!).toBeGreaterThanOrEqual(timedOut!);
  });

  it('exits 0 promptly when NATS went away', async () => {
    const nats = await OwnNats.create();
    cleanups.push(() => nats.destroy());
    const s = serve(['--engine', 'nats', '--nats-url', nats.url, '--port', '0']);
    const url = await s.listening;
    await ready(url);
    const p = await fetch(`${url}/v1/topics/gone/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(p.status).toBe(201);
    await nats.stop();
    const { code, ms } = await terminate(s);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(5_000);
  });

  it('exits 0 promptly when NATS was never reachable', async () => {
    const port = await freePort();
    const s = serve(['--engine', 'nats', '--nats-url', `nats://127.0.0.1:${port}`, '--port', '0']);
    await s.listening;
    const { code, ms } = await terminate(s);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(5_000);
  });

  it('exits 0 promptly when Redis went away', async () => {
    const redis = await OwnRedis.create();
    cleanups.push(() => redis.destroy());
    const s = serve(['--engine', 'redis', '--redis-url', redis.url, '--port', '0']);
    const url = await s.listening;
    await ready(url);
    await redis.stop();
    const { code, ms } = await terminate(s);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(5_000);
  });

  it('exits 0 promptly when Redis was never reachable', async () => {
    const port = await freePort();
    const s = serve([
      '--engine',
      'redis',
      '--redis-url',
      `redis://127.0.0.1:${port}`,
      '--port',
      '0',
    ]);
    await s.listening;
    const { code, ms } = await terminate(s);
    expect(code).toBe(0);
    expect(ms).toBeLessThan(5_000);
  });
});
