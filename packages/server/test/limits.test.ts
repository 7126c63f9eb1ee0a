/**
 * Rate and count limits on a real server, one limit at a time on each transport: HTTP publish
 * (events, bytes, topics created), SSE, NDJSON, long-poll, WebSocket handshake, `subscribe`,
 * `publish` and `auth`. Each refusal is `rate_limited` with Retry-After and the limit, scope and
 * value; a WebSocket op over a limit is refused alone while the socket's other subscriptions flow.
 * Trusted proxies: only their X-Forwarded-For is believed. Loopback is not exempt here
 * (`exemptAddresses: []`), so the per-address limits apply to the test's own connections.
 */
import { describe, expect, it } from 'vitest';
import type { RillConfigInput } from '../src/config.js';
import { openSse, publish, startServer, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig, bearer } from '@rill/testkit/auth';
import { rawRequest, wsUrl, WsClient } from '@rill/testkit/ws';

const { cleanups } = useCleanups();

/** Rates so slow that nothing refills during a test: a refusal's Retry-After is ~100 s. */
const SLOW = (burst: number) => ({ rate: burst / 100, burst });

async function server(rateLimits: Record<string, unknown>, extra: RillConfigInput = {}) {
  const s = await startServer({
    rateLimits: { exemptAddresses: [], ...rateLimits },
    ...extra,
  } as RillConfigInput);
  cleanups.push(() => s.close());
  return s;
}

interface Refusal {
  status: number;
  retryAfter: string | null;
  error: Record<string, unknown>;
}

async function refusal(res: Response): Promise<Refusal> {
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    error: ((await res.json()) as { error: Record<string, unknown> }).error,
  };
}

function expectLimited(r: Refusal, limit: string, scope: string, limitValue: number): void {
  expect(r.status).toBe(429);
  expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
  expect(r.error).toMatchObject({
    code: 'rate_limited',
    limit,
    scope,
    limitValue,
    retryable: true,
    closeCode: 4008,
    retryAfter: Number(r.retryAfter),
  });
}

const post = (url: string, topic: string, body: string, type = 'application/json', headers = {}) =>
  fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': type, ...headers },
    body,
  });

describe('HTTP publish', () => {
  it('publishesPerSecond counts events (a batch of n is n) and refuses past the burst', async () => {
    const { url } = await server({ perAddress: { publishesPerSecond: SLOW(5) } });
    expect((await post(url, 't', '[{"data":1},{"data":2},{"data":3}]')).status).toBe(201);
    expect((await post(url, 't', '{"data":4}\n{"data":5}\n', 'application/x-ndjson')).status).toBe(
      201,
    );
    const r = await refusal(await post(url, 't', '{"data":6}'));
    expectLimited(r, 'publishesPerSecond', 'address', 1 / 20);
    expect(Number(r.retryAfter)).toBeGreaterThan(10);
  });

  it('publishBytesPerSecond counts body bytes', async () => {
    const { url } = await server({ perAddress: { publishBytesPerSecond: SLOW(1000) } });
    const body = JSON.stringify({ data: 'x'.repeat(600) });
    expect((await post(url, 't', body)).status).toBe(201);
    expectLimited(
      await refusal(await post(url, 't', body)),
      'publishBytesPerSecond',
      'address',
      10,
    );
  });

  it('topicsPerMinute counts publishes to topics that did not exist, not to known ones', async () => {
    const { url } = await server({ perAddress: { topicsPerMinute: { rate: 0.01, burst: 2 } } });
    expect((await publish(url, 'new.a', { data: 1 })).status).toBe(201);
    expect((await publish(url, 'new.b', { data: 1 })).status).toBe(201);
    expectLimited(
      await refusal(await post(url, 'new.c', '{"data":1}')),
      'topicsPerMinute',
      'address',
      0.01,
    );
    // Existing topics still take publishes.
    for (let i = 0; i < 5; i++) expect((await publish(url, 'new.a', { data: i })).status).toBe(201);
  });

  it('an API key is held to its own limits: perKey, an override, the key entry', async () => {
    const a = apiKey('plain', { publish: ['>'], subscribe: ['>'] });
    const b = apiKey('own', { publish: ['>'], subscribe: ['>'] });
    const c = apiKey('config', { publish: ['>'], subscribe: ['>'] });
    const { url } = await server(
      {
        perKey: { publishesPerSecond: SLOW(1) },
        overrides: { keys: { config: { publishesPerSecond: SLOW(3) } } },
      },
      {
        auth: authConfig({
          apiKeys: [a.entry, { ...b.entry, limits: { publishesPerSecond: SLOW(2) } }, c.entry],
        }),
      },
    );
    const run = async (key: string) => {
      const codes: number[] = [];
      let last: Refusal | null = null;
      for (let i = 0; i < 5; i++) {
        const res = await post(url, 'k', '{"data":1}', 'application/json', bearer(key));
        codes.push(res.status);
        if (res.status !== 201) last = await refusal(res);
      }
      return { ok: codes.filter((c) => c === 201).length, last: last! };
    };
    const ra = await run(a.key);
    expect(ra.ok).toBe(1);
    expectLimited(ra.last, 'publishesPerSecond', 'key', 0.01);
    expect((await run(b.key)).ok).toBe(2);
    expect((await run(c.key)).ok).toBe(3);
  });
});

describe('streams', () => {
  it('SSE: connections past the limit get 429 with Retry-After before the stream starts', async () => {
    const { url, server: s } = await server({ perAddress: { connections: 2 } });
    const one = await openSse(`${url}/v1/topics/t/stream`);
    const two = await openSse(`${url}/v1/topics/t/stream`);
    cleanups.push(() => (one.close(), two.close()));
    const res = await fetch(`${url}/v1/topics/t/stream`, {
      headers: { accept: 'text/event-stream' },
    });
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expectLimited(await refusal(res), 'connections', 'address', 2);
    // Closing one gives its place back.
    one.close();
    await waitFor(() => s.limiter.get('address:127.0.0.1')?.connections === 1);
    const three = await openSse(`${url}/v1/topics/t/stream`);
    three.close();
  });

  it('NDJSON: new streams per second past the burst are refused', async () => {
    const { url } = await server({ perAddress: { connectionsPerSecond: SLOW(2) } });
    const streams: Response[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${url}/v1/topics/t/stream?format=ndjson`);
      expect(res.status).toBe(200);
      streams.push(res);
    }
    cleanups.push(() => streams.forEach((r) => void r.body?.cancel()));
    const res = await fetch(`${url}/v1/topics/t/stream?format=ndjson`);
    expectLimited(await refusal(res), 'connectionsPerSecond', 'address', 0.02);
  });

  it('long-poll: subscriptions past the limit are refused while one waits', async () => {
    const { url } = await server({ perAddress: { subscriptions: 1 } });
    const ac = new AbortController();
    cleanups.push(() => ac.abort());
    const waiting = fetch(`${url}/v1/events?topics=t&wait=20`, { signal: ac.signal }).catch(
      () => null,
    );
    const res = await (async () => {
      for (;;) {
        const r = await fetch(`${url}/v1/events?topics=t&wait=0`);
        if (r.status === 429) return r;
        // The first poll may not have arrived yet.
        await r.body?.cancel();
      }
    })();
    expectLimited(await refusal(res), 'subscriptions', 'address', 1);
    ac.abort();
    await waiting;
  });
});

describe('WebSocket', () => {
  it('a handshake over the connection limit is refused with 429 and Retry-After', async () => {
    const { url } = await server({ perAddress: { connections: 1 } });
    const ws = await WsClient.open(wsUrl(url));
    cleanups.push(() => ws.close());
    const r = await rawRequest(url);
    expect(r.status).toBe(429);
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(r.body).error).toMatchObject({
      code: 'rate_limited',
      limit: 'connections',
      scope: 'address',
      limitValue: 1,
    });
  });

  it('publish and subscribe over their limits get an error; the other subscription flows', async () => {
    const { url, server: s } = await server({
      perAddress: { publishesPerSecond: SLOW(3), subscriptions: 2 },
    });
    const ws = await WsClient.open(wsUrl(url));
    cleanups.push(() => ws.close());
    const sub = await ws.request({ op: 'subscribe', topics: ['live'] });
    expect(sub.op).toBe('subscribed');
    const sub2 = await ws.request({ op: 'subscribe', topics: ['other'] });
    expect(sub2.op).toBe('subscribed');
    const third = await ws.request({ op: 'subscribe', topics: ['third'] });
    expect(third).toMatchObject({
      op: 'error',
      error: { code: 'rate_limited', limit: 'subscriptions', scope: 'address', limitValue: 2 },
    });
    for (let i = 0; i < 3; i++) {
      expect(await ws.request({ op: 'publish', topic: 'live', data: i })).toMatchObject({
        op: 'ack',
      });
    }
    const refused = await ws.request({ op: 'publish', topic: 'live', data: 3 });
    expect(refused).toMatchObject({
      op: 'error',
      error: { code: 'rate_limited', limit: 'publishesPerSecond', scope: 'address' },
    });
    expect((refused.error as unknown as { retryAfter: number }).retryAfter).toBeGreaterThan(10);
    // The subscription goes on: it got the three stored events, and gets what others publish
    // (here straight into the engine: every publish from this address is refused now).
    await s.engine.append('live', [{ data: '99' }]);
    const events = await ws.until(
      (m) => m.filter((x) => x.op === 'event' && x.sub === sub.sub).length === 4,
    );
    expect(events.filter((x) => x.op === 'event').map((x) => x.event!.data)).toEqual([0, 1, 2, 99]);
    expect(ws.closeInfo).toBeNull();
  });

  it('a socket that authenticates past its key’s connection limit is closed with 4008', async () => {
    const k = apiKey('limited', { subscribe: ['>'] });
    const { url } = await server(
      { perKey: { connections: 1 } },
      { auth: authConfig({ apiKeys: [k.entry] }) },
    );
    const first = await WsClient.open(wsUrl(url), { headers: bearer(k.key) });
    cleanups.push(() => first.close());
    // At the handshake, with the key: 429.
    const r = await rawRequest(url, { headers: { Authorization: `Bearer ${k.key}` } });
    expect(r.status).toBe(429);
    // Without credentials at the handshake, then `auth`: closed with 4008 after an error.
    const second = await WsClient.open(wsUrl(url));
    const reply = await second.request({ op: 'auth', token: k.key });
    expect(reply).toMatchObject({
      op: 'error',
      error: { code: 'rate_limited', limit: 'connections', scope: 'key', limitValue: 1 },
    });
    expect((await second.closed).code).toBe(4008);
    expect(first.closeInfo).toBeNull();
  });
});

describe('client address', () => {
  const xffPost = (url: string, xff: string) =>
    post(url, 't', '{"data":1}', 'application/json', { 'x-forwarded-for': xff });

  it('from an untrusted peer a spoofed X-Forwarded-For changes nothing', async () => {
    const { url } = await server({ perAddress: { publishesPerSecond: SLOW(2) } });
    expect((await xffPost(url, '198.51.100.1')).status).toBe(201);
    expect((await xffPost(url, '198.51.100.2')).status).toBe(201);
    expect((await xffPost(url, '198.51.100.3')).status).toBe(429);
  });

  it('behind a trusted proxy each forwarded client counts apart', async () => {
    const { url, server: s } = await server({
      perAddress: { publishesPerSecond: SLOW(2) },
      trustedProxies: ['loopback'],
    });
    for (const client of ['198.51.100.1', '198.51.100.2']) {
      // A client's own spoofed entry on the left is not believed: the proxy appended the right one.
      const xff = `6.6.6.6, ${client}`;
      expect((await xffPost(url, xff)).status).toBe(201);
      expect((await xffPost(url, xff)).status).toBe(201);
      const r = await refusal(await xffPost(url, xff));
      expectLimited(r, 'publishesPerSecond', 'address', 0.02);
    }
    expect(s.limiter.get('address:198.51.100.1')).toBeDefined();
    expect(s.limiter.get('address:6.6.6.6')).toBeUndefined();
  });
});

describe('defaults', () => {
  it('loopback is exempt from per-address limits by default; limits can be turned off', async () => {
    const s = await startServer({ rateLimits: { perAddress: { connections: 1 } } });
    cleanups.push(() => s.close());
    const a = await openSse(`${s.url}/v1/topics/t/stream`);
    const b = await openSse(`${s.url}/v1/topics/t/stream`);
    a.close();
    b.close();
    expect(s.server.limiter.size).toBe(0);
  });
});
