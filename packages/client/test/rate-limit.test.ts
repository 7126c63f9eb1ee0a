/**
 * The SDK against a `429 rate_limited` over real HTTP on loopback. The peer is a plain node:http
 * server that answers the way a Rill server's rate limits do (the body of docs/protocol.md §
 * Errors and a Retry-After header): a protocol peer standing in for `rill serve`, whose limits
 * are not there yet. Publishes and subscriptions wait the Retry-After, never less, then go on.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createClient,
  RateLimitedError,
  type PublishRetry,
  type StateChange,
} from '../src/index.js';

function limited(limit: string, scope: string, limitValue: number, retryAfter: number): string {
  return JSON.stringify({
    error: {
      limit,
      scope,
      limitValue,
      retryAfter,
      code: 'rate_limited',
      message: 'A rate or count limit was reached; retry after the time given',
      retryable: true,
      closeCode: 4008,
    },
  });
}

const servers: http.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

/** A loopback peer: `handle` answers each request; every request's arrival time is recorded. */
async function peer(
  handle: (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void,
): Promise<{ url: string; arrivals: Array<{ path: string; at: number }> }> {
  const arrivals: Array<{ path: string; at: number }> = [];
  const srv = http.createServer((req, res) => {
    arrivals.push({ path: req.url!.split('?')[0]!, at: Date.now() });
    req.resume();
    req.on('end', () => handle(req, res, arrivals.length));
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, arrivals };
}

describe('429 rate_limited', () => {
  it('a publish waits Retry-After, says which limit, and is retried with the same key', async () => {
    const keys: string[] = [];
    const { url, arrivals } = await peer((_req, res, n) => {
      if (n <= 2) {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
        res.end(limited('publishesPerSecond', 'key', 100, 1));
        return;
      }
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(
        '{"topic":"t","epoch":"e1","events":[{"seq":1,"id":"e1:1","time":1,"duplicate":false}]}',
      );
    });
    const retries: PublishRetry[] = [];
    const client = createClient({
      url,
      fetch: async (i, init) => {
        keys.push(JSON.parse(String(init?.body))[0].key as string);
        return fetch(i, init);
      },
    });
    const r = await client.publish('t', { x: 1 }, { onRetry: (x) => retries.push(x) });
    expect(r.seq).toBe(1);
    expect(arrivals).toHaveLength(3);
    expect(new Set(keys).size).toBe(1);
    expect(
      retries.map((x) => [x.error.code, x.error.limit, x.error.scope, x.error.limitValue]),
    ).toEqual([
      ['rate_limited', 'publishesPerSecond', 'key', 100],
      ['rate_limited', 'publishesPerSecond', 'key', 100],
    ]);
    for (const x of retries) {
      expect(x.error).toBeInstanceOf(RateLimitedError);
      expect(x.delay).toBeGreaterThanOrEqual(1000);
    }
    // The peer saw each retry at least the Retry-After after the refusal before it.
    for (let i = 1; i < arrivals.length; i++) {
      expect(arrivals[i]!.at - arrivals[i - 1]!.at).toBeGreaterThanOrEqual(990);
    }
  });

  it('gives up with RateLimitedError once the retries are spent', async () => {
    const { url, arrivals } = await peer((_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end(limited('publishBytesPerSecond', 'user', 65536, 1));
    });
    const client = createClient({ url, publishRetries: 1 });
    const err = await client.publish('t', 1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).limit).toBe('publishBytesPerSecond');
    expect((err as RateLimitedError).scope).toBe('user');
    expect(arrivals).toHaveLength(2);
  });

  for (const transport of ['sse', 'poll'] as const) {
    it(`${transport}: a refused subscription reconnects after Retry-After, then streams`, async () => {
      const { url, arrivals } = await peer((_req, res, n) => {
        if (n === 1) {
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
          res.end(limited('subscriptions', 'address', 10, 1));
          return;
        }
        const ev = { topic: 't', seq: 1, id: 'e1:1', time: 1, data: 'hi' };
        if (transport === 'sse') {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(`id: e1:1\ndata: ${JSON.stringify(ev)}\n\n`);
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ events: n === 2 ? [ev] : [], cursor: 'e1:1', resets: [] }));
        }
      });
      const states: StateChange[] = [];
      const client = createClient({ url, transport });
      const sub = client.subscribe('t', { onState: (s) => states.push(s) });
      for await (const ev of sub) {
        expect(ev.data).toBe('hi');
        break;
      }
      client.close();
      const refused = states.find((s) => s.error?.code === 'rate_limited')!;
      expect(refused.error).toBeInstanceOf(RateLimitedError);
      expect(refused.error!.limit).toBe('subscriptions');
      expect(refused.error!.scope).toBe('address');
      expect(refused.delay).toBeGreaterThanOrEqual(1000);
      expect(arrivals[1]!.at - arrivals[0]!.at).toBeGreaterThanOrEqual(990);
    });
  }
});
