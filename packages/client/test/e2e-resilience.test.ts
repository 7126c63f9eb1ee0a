/**
 * The SDK against a real `rill serve` (lmdb, child process) through a TCP proxy that delays bytes
 * and cuts every connection mid-stream, with the server SIGKILLed and restarted on the same port
 * and data directory, then stopped gracefully and restarted: for each transport, the application
 * sees seqs 1..N exactly once, in order. A refused subscription ends with a named error.
 * And a publish whose answer is lost on the way back is retried with the same key and stored once.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  freePort,
  spawnServer,
  startServer,
  tempDir,
  type ChildServer,
  useCleanups,
} from '@rill/testkit';
import {
  createClient,
  InvalidRequestError,
  NotFoundError,
  TooLargeError,
  type StateChange,
} from '../src/index.js';
import { TcpProxy } from '@rill/testkit/proxy';

const TOPIC = 'sdk.resilience';
const BATCH = 10;
/** 8 batches, SIGKILL restart, 4 batches, graceful (SIGTERM) restart, 2 batches. */
const TOTAL = 14 * BATCH;

async function publishDirect(base: string, from: number, count: number): Promise<void> {
  const body = Array.from({ length: count }, (_, i) => ({ data: { n: from + i } }));
  const res = await fetch(`${base}/v1/topics/${TOPIC}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(201);
}

describe('SDK resilience against a real server', () => {
  const { cleanups, track } = useCleanups();

  async function start(port: number, dir: string): Promise<ChildServer> {
    const srv = await spawnServer(
      ['--engine', 'lmdb', '--data-dir', dir, '--port', String(port)],
      // A short retry hint: the SDK must honour it (it replaces the backoff base).
      { RILL_SSE__RETRY: '100ms' },
    );
    return track(srv);
  }

  for (const transport of ['sse', 'ws', 'poll'] as const) {
    it(`${transport}: exactly once, in order, across cuts, delays, a SIGKILL and a graceful restart`, async () => {
      const dir = tempDir();
      cleanups.push(dir.remove);
      const port = await freePort();
      const first = await start(port, dir.path);
      const direct = `http://127.0.0.1:${port}`;
      const proxy = new TcpProxy(port);
      const url = await proxy.listen();
      cleanups.push(() => proxy.close());
      proxy.delayMs = 3;

      const client = createClient({
        url,
        transport,
        WebSocket,
        backoff: { initialDelay: 50, maxDelay: 300 },
      });
      cleanups.push(() => client.close());
      const states: StateChange[] = [];
      const sub = client.subscribe<{ n: number }>(TOPIC, {
        from: 'earliest',
        onState: (s) => {
          states.push(s);
          if (process.env.DEBUG_SDK)
            console.log(Date.now() % 100000, s.state, s.error?.message, s.delay);
        },
      });
      const seqs: number[] = [];
      const ns: number[] = [];
      let total = 0;
      let notify: () => void = () => {};
      const reading = (async () => {
        for await (const ev of sub) {
          seqs.push(ev.seq);
          ns.push(ev.data.n);
          notify();
          if (seqs.length === TOTAL) break;
        }
      })();
      const reached = (n: number): Promise<void> =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`got ${seqs.length} of ${n}: ${seqs.slice(-5).join(',')}`)),
            30_000,
          );
          notify = () => {
            if (seqs.length >= n) {
              clearTimeout(timer);
              resolve();
            }
          };
          notify();
        });

      // Phase 1: cut every connection after each batch, while its events are in flight.
      let cuts = 0;
      for (let i = 0; i < 8; i++) {
        await publishDirect(direct, total + 1, BATCH);
        total += BATCH;
        cuts += proxy.cutAll();
      }
      await reached(total);
      expect(cuts).toBeGreaterThan(0);

      // Phase 2: SIGKILL, publish nothing while down, restart on the same port and data.
      first.proc.kill('SIGKILL');
      await first.exited;
      const second = await start(port, dir.path);
      for (let i = 0; i < 4; i++) {
        await publishDirect(direct, total + 1, BATCH);
        total += BATCH;
        if (i === 1) cuts += proxy.cutAll();
      }
      await reached(total);

      // Phase 3: a graceful stop ends streams with shutting_down (SSE error frame, WS close 4001),
      // which is retryable: the SDK comes back once the server is up again.
      second.proc.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      await start(port, dir.path);
      for (let i = 0; i < 2; i++) {
        await publishDirect(direct, total + 1, BATCH);
        total += BATCH;
      }
      await reached(total);
      await reading;
      expect(total).toBe(TOTAL);

      const expected = Array.from({ length: total }, (_, i) => i + 1);
      expect(seqs).toEqual(expected);
      expect(ns).toEqual(expected);
      expect(states.filter((s) => s.state === 'reconnecting').length).toBeGreaterThan(0);
      if (transport !== 'poll') {
        // Long-polls in flight are answered before shutdown; streams are told why they end.
        expect(
          states.some((s) => s.error?.code === 'shutting_down' || s.error?.closeCode === 4001),
        ).toBe(true);
      }
      expect(sub.state).toBe('closed');
    });
  }

  for (const transport of ['sse', 'ws', 'poll'] as const) {
    it(`${transport}: a refused subscription closes with a named error and the server's code`, async () => {
      const srv = await startServer();
      cleanups.push(srv.close);
      const client = createClient({ url: srv.url, transport, WebSocket });
      const sub = client.subscribe('a.>.b');
      let caught: unknown;
      try {
        await sub[Symbol.asyncIterator]().next();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(InvalidRequestError);
      expect(caught).toMatchObject({ code: 'invalid_pattern', retryable: false });
      expect(sub.state).toBe('closed');
    });
  }

  it('publish errors come as named subclasses with the server code, without retrying', async () => {
    const srv = await startServer({ limits: { maxEventBytes: 100 } });
    cleanups.push(srv.close);
    let posts = 0;
    const client = createClient({
      url: srv.url,
      fetch: (input, init) => {
        if (init?.method === 'POST') posts++;
        return fetch(input, init);
      },
    });
    await expect(client.publish('bad topic', 1)).rejects.toMatchObject({
      name: 'InvalidRequestError',
      code: 'invalid_topic',
      status: 400,
      retryable: false,
    });
    await expect(client.publish('ok', 'x'.repeat(200))).rejects.toBeInstanceOf(TooLargeError);
    await expect(client.history('never.published')).rejects.toBeInstanceOf(NotFoundError);
    expect(posts).toBe(2);
  });

  it('a publish whose answer is lost is retried with the same key and stored once', async () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const port = await freePort();
    await start(port, dir.path);
    const proxy = new TcpProxy(port);
    const url = await proxy.listen();
    cleanups.push(() => proxy.close());
    const client = createClient({ url, backoff: { initialDelay: 20, maxDelay: 100 } });

    proxy.swallowAnswerTo = 'POST ';
    const r = await client.publish('sdk.publish', { hello: 1 }, { type: 'greeting' });
    expect(proxy.swallowed).toBe(1);
    expect(r.seq).toBe(1);
    expect(r.duplicate).toBe(true);

    const page = await client.history('sdk.publish');
    expect(page.events.map((e) => [e.seq, e.data, e.type])).toEqual([
      [1, { hello: 1 }, 'greeting'],
    ]);
  });

  it('a publish refused with 507 insufficient_storage is retried after Retry-After and stored once there is room', async () => {
    // A 300-byte store; `roll` keeps one event, so a small event there frees what a big one took.
    const srv = await startServer({
      storage: { maxBytes: 300 },
      retention: { rules: [{ pattern: 'roll', maxEvents: 1 }] },
    });
    cleanups.push(srv.close);
    const post = (topic: string, data: string) =>
      fetch(`${srv.url}/v1/topics/${topic}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data }),
      });
    expect((await post('roll', 'x'.repeat(200))).status).toBe(201);
    let posts = 0;
    const client = createClient({
      url: srv.url,
      backoff: { initialDelay: 20, maxDelay: 100 },
      // Room is made once the first attempt was refused, before the client sees the answer.
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        if (init?.method === 'POST' && ++posts === 1) {
          expect(res.status).toBe(507);
          expect((await post('roll', 'y')).status).toBe(201);
        }
        return res;
      },
    });
    const retries: { code: string; delay: number }[] = [];
    const r = await client.publish('sdk.full', 'z'.repeat(150), {
      onRetry: ({ error, delay }) => retries.push({ code: error.code, delay }),
    });
    expect(retries).toHaveLength(1);
    expect(retries[0]!.code).toBe('insufficient_storage');
    expect(retries[0]!.delay).toBeGreaterThanOrEqual(1_000);
    expect([r.seq, r.duplicate, posts]).toEqual([1, false, 2]);
    expect((await client.history('sdk.full')).events.map((e) => e.seq)).toEqual([1]);
  });
});
