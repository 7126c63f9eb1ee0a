/**
 * The SDK against a real Rill server's rate and count limits (`rateLimits`, in process, loopback
 * not exempt: `exemptAddresses: []`). A publish over `publishesPerSecond` waits the Retry-After,
 * never less, and is then stored once; with its retries off or its wait capped it ends with a
 * RateLimitedError naming the limit. A subscription refused at connect by a `connections` limit
 * (SSE and long-poll: 429 per address; WebSocket: the `auth` op over the key's limit, then close
 * 4008) reconnects no sooner than the Retry-After, and streams once the other connection closes.
 *
 * The clients' own backoff is set to tens of milliseconds, so only the server's Retry-After can
 * make them wait a second: an SDK that ignored it would retry at once and fail these tests.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { openSse, publish, startServer, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig, bearer } from '@rill/testkit/auth';
import { wsUrl, WsClient } from '@rill/testkit/ws';
import {
  createClient,
  RateLimitedError,
  type PublishRetry,
  type StateChange,
} from '../src/index.js';

const { cleanups } = useCleanups();

/** Reconnect and retry backoff far below any Retry-After. */
const QUICK = { initialDelay: 20, maxDelay: 50 };

async function server(rateLimits: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const s = await startServer({ rateLimits: { exemptAddresses: [], ...rateLimits }, ...extra });
  cleanups.push(() => s.close());
  return s;
}

/** A `fetch` that records when each request went out and what it was answered. */
function recordingFetch(): {
  fetch: typeof fetch;
  calls: Array<{ path: string; at: number; status?: number; body?: string }>;
} {
  const calls: Array<{ path: string; at: number; status?: number; body?: string }> = [];
  return {
    calls,
    fetch: async (input, init) => {
      const call: (typeof calls)[number] = {
        path: new URL(String(input instanceof Request ? input.url : input)).pathname,
        at: Date.now(),
        ...(typeof init?.body === 'string' ? { body: init.body } : {}),
      };
      calls.push(call);
      const res = await fetch(input, init);
      call.status = res.status;
      return res;
    },
  };
}

describe('publish over a rate limit', () => {
  it('waits the Retry-After, then is stored once with the same key', async () => {
    // One event every 2 s: the second publish finds the bucket empty.
    const { url } = await server({ perAddress: { publishesPerSecond: { rate: 0.5, burst: 1 } } });
    const rec = recordingFetch();
    const retries: PublishRetry[] = [];
    const client = createClient({ url, fetch: rec.fetch, backoff: QUICK });
    expect((await client.publish('t', 1)).seq).toBe(1);
    const r = await client.publish('t', 2, { onRetry: (x) => retries.push(x) });
    expect(r.seq).toBe(2);

    expect(retries.length).toBeGreaterThanOrEqual(1);
    for (const x of retries) {
      expect(x.error).toBeInstanceOf(RateLimitedError);
      expect(x.error).toMatchObject({
        code: 'rate_limited',
        status: 429,
        limit: 'publishesPerSecond',
        scope: 'address',
        limitValue: 0.5,
      });
      expect(x.error.retryAfter).toBeGreaterThanOrEqual(1);
      expect(x.delay).toBeGreaterThanOrEqual(x.error.retryAfter! * 1000);
    }
    // What the server saw: each attempt after a 429 came at least its Retry-After later, all with
    // one idempotency key, and the event was stored once.
    const attempts = rec.calls.slice(1);
    expect(attempts.map((c) => c.status)).toEqual([...retries.map(() => 429), 201]);
    for (let i = 1; i < attempts.length; i++) {
      const waited = attempts[i]!.at - attempts[i - 1]!.at;
      expect(waited).toBeGreaterThanOrEqual(retries[i - 1]!.error.retryAfter! * 1000 - 10);
    }
    expect(new Set(attempts.map((c) => JSON.parse(c.body!)[0].key as string)).size).toBe(1);
    const hist = await client.history('t');
    expect(hist.events.map((e) => e.data)).toEqual([1, 2]);
  });

  it('with retries off, ends at once with RateLimitedError naming the limit', async () => {
    // So slow that nothing refills during the test: Retry-After ~100 s.
    const { url } = await server({ perAddress: { publishesPerSecond: { rate: 0.01, burst: 1 } } });
    const client = createClient({ url, publishRetries: 0 });
    await client.publish('t', 1);
    const started = Date.now();
    const err = await client.publish('t', 2).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect(err).toMatchObject({
      code: 'rate_limited',
      limit: 'publishesPerSecond',
      scope: 'address',
      limitValue: 0.01,
    });
    expect((err as RateLimitedError).retryAfter).toBeGreaterThan(10);
  });

  it('a Retry-After past maxRetryAfter is cut to it, then the error surfaces', async () => {
    const { url } = await server({ perAddress: { publishesPerSecond: { rate: 0.01, burst: 1 } } });
    const rec = recordingFetch();
    const retries: PublishRetry[] = [];
    const client = createClient({
      url,
      fetch: rec.fetch,
      backoff: QUICK,
      publishRetries: 1,
      maxRetryAfter: 300,
    });
    await client.publish('t', 1);
    const err = await client
      .publish('t', 2, { onRetry: (x) => retries.push(x) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).limit).toBe('publishesPerSecond');
    expect(retries).toHaveLength(1);
    expect(retries[0]!.error.retryAfter).toBeGreaterThan(10);
    expect(retries[0]!.delay).toBe(300);
    expect(rec.calls.slice(1).map((c) => c.status)).toEqual([429, 429]);
    expect(rec.calls[2]!.at - rec.calls[1]!.at).toBeGreaterThanOrEqual(290);
  });
});

describe('a subscription refused by a connections limit', () => {
  for (const transport of ['sse', 'poll'] as const) {
    it(`${transport}: reconnects after Retry-After, then streams once the other closes`, async () => {
      const { url } = await server({ perAddress: { connections: 1 } });
      // The one connection this address may hold.
      const held = await openSse(`${url}/v1/topics/other/stream`);
      cleanups.push(() => held.close());
      const rec = recordingFetch();
      const states: StateChange[] = [];
      const client = createClient({ url, transport, fetch: rec.fetch, backoff: QUICK });
      cleanups.push(() => client.close());
      const sub = client.subscribe('t', { from: 'earliest', onState: (s) => states.push(s) });
      // Two refusals: the second attempt was also timed by the first one's Retry-After.
      await waitFor(
        () => states.filter((s) => s.error?.code === 'rate_limited').length >= 2,
        20_000,
      );
      held.close();
      expect((await publish(url, 't', { data: 'hi' })).status).toBe(201);
      for await (const ev of sub) {
        expect(ev.data).toBe('hi');
        break;
      }

      const refused = states.filter((s) => s.error?.code === 'rate_limited');
      for (const s of refused) {
        expect(s.error).toBeInstanceOf(RateLimitedError);
        expect(s.error).toMatchObject({ limit: 'connections', scope: 'address', limitValue: 1 });
        expect(s.error!.retryAfter).toBeGreaterThanOrEqual(1);
        expect(s.delay).toBeGreaterThanOrEqual(s.error!.retryAfter! * 1000);
      }
      // Every request after a 429 went out at least the Retry-After (1 s) later.
      const attempts = rec.calls.filter((c) => c.path !== '/v1/topics/t/events');
      const first = attempts.findIndex((c) => c.status === 429);
      expect(first).toBeGreaterThanOrEqual(0);
      for (let i = first + 1; i < attempts.length; i++) {
        if (attempts[i - 1]!.status !== 429) continue;
        expect(attempts[i]!.at - attempts[i - 1]!.at).toBeGreaterThanOrEqual(990);
      }
      expect(attempts.filter((c) => c.status === 429).length).toBe(refused.length);
    });
  }

  it('ws: refused at auth over the key’s connections (close 4008), waits, then streams', async () => {
    const k = apiKey('limited', { subscribe: ['>'], publish: ['>'] });
    const { url } = await server(
      { perKey: { connections: 1 } },
      { auth: authConfig({ apiKeys: [k.entry] }) },
    );
    const held = await WsClient.open(wsUrl(url), { headers: bearer(k.key) });
    cleanups.push(() => held.close());
    const opened: number[] = [];
    class Recording extends WebSocket {
      constructor(u: string, p?: string | string[]) {
        super(u, p);
        opened.push(Date.now());
      }
    }
    const states: StateChange[] = [];
    const client = createClient({
      url,
      token: k.key,
      transport: 'ws',
      WebSocket: Recording,
      backoff: QUICK,
    });
    cleanups.push(() => client.close());
    const sub = client.subscribe('t', { from: 'earliest', onState: (s) => states.push(s) });
    await waitFor(() => states.filter((s) => s.error?.code === 'rate_limited').length >= 2, 20_000);
    held.close();
    await held.closed;
    expect((await publish(url, 't', { data: 'hi' }, bearer(k.key))).status).toBe(201);
    for await (const ev of sub) {
      expect(ev.data).toBe('hi');
      break;
    }

    const refused = states.filter((s) => s.error?.code === 'rate_limited');
    for (const s of refused) {
      expect(s.error).toBeInstanceOf(RateLimitedError);
      expect(s.error).toMatchObject({ limit: 'connections', scope: 'key', limitValue: 1 });
      expect(s.delay).toBeGreaterThanOrEqual(1000);
    }
    // One socket per attempt: each after a refusal opened at least the Retry-After later.
    expect(opened.length).toBe(refused.length + 1);
    for (let i = 1; i < opened.length; i++) {
      expect(opened[i]! - opened[i - 1]!).toBeGreaterThanOrEqual(990);
    }
  });
});
