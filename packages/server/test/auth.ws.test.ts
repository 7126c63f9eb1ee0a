/**
 * Authentication on the WebSocket of a real server: credentials at the upgrade (header, query,
 * cookie) or a first `auth` message within `auth.wsAuthTimeout` (other requests before it are
 * refused, the deadline closes 4524); refused credentials close 4524 (4006 when expired); the same
 * op refreshes (same subject only; new grants replace the old, subscriptions they no longer allow
 * end with `forbidden`); `token_expiring` before the expiry and close 4006 at it; per-request
 * grant checks (subscribe per topic and pattern, publish); the anonymous grants.
 */
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '@rill/testkit';
import { WsClient, wsUrl, type WsMsg } from '@rill/testkit/ws';
import type { RillServer } from '../src/server.js';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';

const key = apiKey('backend', { publish: ['orders.>'], subscribe: ['orders.>'] });
let server: RillServer;
let url: string;
let anonUrl: string;
const closing: Array<() => Promise<void>> = [];
const sockets: WsClient[] = [];

const WS_AUTH_TIMEOUT = 1500;
const EXPIRY_WARNING = 1000;

beforeAll(async () => {
  const a = await startServer({
    auth: authConfig({
      apiKeys: [key.entry],
      cookie: 'rill_token',
      wsAuthTimeout: WS_AUTH_TIMEOUT,
      expiryWarning: EXPIRY_WARNING,
    }),
  });
  const b = await startServer({
    auth: authConfig({ anonymous: { subscribe: ['public.>'], publish: [] } }),
  });
  ({ server, url } = a);
  anonUrl = b.url;
  closing.push(a.close, b.close);
  await server.engine.append('orders.eu', [{ data: '1' }]);
  await server.engine.append('chat.a', [{ data: '1' }]);
});
afterAll(async () => {
  for (const s of sockets) s.terminate();
  for (const c of closing) await c();
});

async function open(
  options: { headers?: Record<string, string>; query?: string; base?: string } = {},
): Promise<WsClient> {
  const c = await WsClient.open(wsUrl(options.base ?? url, `/v1/ws${options.query ?? ''}`), {
    headers: options.headers ?? {},
  });
  sockets.push(c);
  return c;
}

const errorOf = (m: WsMsg): string | undefined => m.error?.code;

describe('credentials at the upgrade', () => {
  it('Authorization header, access_token query, cookie: requests work at once', async () => {
    const token = await sign({ sub: 'alice', subscribe: ['orders.>'] });
    for (const options of [
      { headers: bearer(token) },
      { query: `?access_token=${token}` },
      { headers: { cookie: `rill_token=${token}` } },
      { headers: bearer(key.key) },
    ]) {
      const c = await open(options);
      const r = await c.request({ op: 'subscribe', topics: ['orders.eu'], from: 'earliest' });
      expect(r.op).toBe('subscribed');
      await c.until(() => c.events().length === 1);
      c.close();
    }
    // Without them, the same request is refused.
    const none = await open();
    const r = await none.request({ op: 'subscribe', topics: ['orders.eu'], from: 'earliest' });
    expect(errorOf(r)).toBe('unauthorized');
  });

  it('bad credentials: an error message, then close 4524; an expired token: 4006', async () => {
    const forged = await sign({ sub: 'eve', subscribe: ['>'] }, 60_000, {
      secret: 'another-secret-0123456789-abcdefghijklmnop',
    });
    const bad = await open({ headers: bearer(forged) });
    expect((await bad.closed).code).toBe(4524);
    expect(bad.messages.map(errorOf)).toEqual(['unauthorized']);

    const expired = await open({ query: `?access_token=${await sign({ sub: 'a' }, -1000)}` });
    expect((await expired.closed).code).toBe(4006);
    expect(expired.messages.map(errorOf)).toEqual(['token_expired']);
  });
});

describe('the auth message', () => {
  it('authenticates a socket whose upgrade had no token; requests before it are refused', async () => {
    const c = await open();
    const early = await c.request({ op: 'subscribe', topics: ['orders.eu'] });
    expect(errorOf(early)).toBe('unauthorized');
    expect((await c.request({ op: 'ping' })).error?.code).toBe('unauthorized');
    const token = await sign({ sub: 'alice', subscribe: ['orders.>'] }, 60_000);
    const authed = await c.request({ op: 'auth', token });
    expect(authed).toMatchObject({ op: 'authed', sub: 'alice' });
    expect(authed.expiresAt).toBeGreaterThan(Date.now());
    const r = await c.request({ op: 'subscribe', topics: ['orders.eu'], from: 'earliest' });
    expect(r.op).toBe('subscribed');
    // An API key: no subject, no expiry.
    const k = await open();
    expect(await k.request({ op: 'auth', token: key.key })).toMatchObject({
      op: 'authed',
      sub: null,
      expiresAt: null,
    });
  });

  it('requests sent right behind the auth, without waiting for authed, are served as authenticated', async () => {
    const c = await open();
    const token = await sign({ sub: 'alice', subscribe: ['orders.>'], publish: ['orders.>'] });
    c.send({ op: 'auth', id: 1, token });
    c.send({ op: 'subscribe', id: 2, topics: ['orders.eu'], from: 'earliest' });
    c.send({ op: 'publish', id: 3, topic: 'orders.eu', data: 'x' });
    await c.until((m) => m.some((x) => x.op === 'ack') && m.some((x) => x.op === 'subscribed'));
    // Served as authenticated (replies to different requests may come in any order).
    const replies = c.messages.filter((m) => m.id !== undefined);
    expect(replies[0]).toMatchObject({ id: 1, op: 'authed' });
    expect(
      replies
        .slice(1)
        .map((m) => [m.id, m.op])
        .sort(),
    ).toEqual([
      [2, 'subscribed'],
      [3, 'ack'],
    ]);
  });

  it(`no auth within wsAuthTimeout: close 4524`, async () => {
    const c = await open();
    const t0 = Date.now();
    const { code } = await c.closed;
    expect(code).toBe(4524);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(WS_AUTH_TIMEOUT - 300);
  });

  it('a refused first auth: the error, then close with its code', async () => {
    const c = await open();
    const r = await c.request({ op: 'auth', token: 'not-a-jwt' });
    expect(errorOf(r)).toBe('unauthorized');
    expect((await c.closed).code).toBe(4524);
  });
});

describe('refresh', () => {
  it('same subject: new grants replace the old; subscriptions they no longer allow end with forbidden', async () => {
    const c = await open();
    const wide = await sign({ sub: 'alice', subscribe: ['orders.>', 'chat.*'] }, 60_000);
    await c.request({ op: 'auth', token: wide });
    await server.engine.append('orders.refresh', [{ data: '1' }]);
    await server.engine.append('chat.refresh', [{ data: '1' }]);
    const s1 = await c.request({ op: 'subscribe', topics: ['orders.refresh'], from: 'earliest' });
    const s2 = await c.request({ op: 'subscribe', topics: ['chat.*'], from: 'earliest' });
    await c.until(() => c.events(s1.sub).length === 1 && c.events(s2.sub).length >= 1);
    const before = c.events(s2.sub).length;
    const narrow = await sign({ sub: 'alice', subscribe: ['orders.>'] }, 120_000);
    const authed = await c.request({ op: 'auth', token: narrow });
    expect(authed.op).toBe('authed');
    const dropped = await c.until((m) => m.some((x) => x.op === 'error' && x.sub === s2.sub));
    const err = dropped.find((x) => x.sub === s2.sub && x.op === 'error')!.error!;
    expect(err.code).toBe('forbidden');
    expect(err.message).toContain('chat.*');
    // The other subscription goes on; a new one outside the new grants is refused.
    await server.engine.append('chat.refresh', [{ data: '2' }]);
    await server.engine.append('orders.refresh', [{ data: '2' }]);
    await c.until(() => c.events(s1.sub).length === 2);
    expect(errorOf(await c.request({ op: 'subscribe', topics: ['chat.a'] }))).toBe('forbidden');
    expect(c.events(s2.sub)).toHaveLength(before);
    expect(c.closeInfo).toBeNull();
  });

  it('another subject is refused, keeping the connection and its credentials', async () => {
    const c = await open();
    await c.request({ op: 'auth', token: await sign({ sub: 'alice', subscribe: ['orders.>'] }) });
    const bob = await sign({ sub: 'bob', subscribe: ['>'] });
    expect(errorOf(await c.request({ op: 'auth', token: bob }))).toBe('unauthorized');
    expect(errorOf(await c.request({ op: 'subscribe', topics: ['chat.a'] }))).toBe('forbidden');
    expect((await c.request({ op: 'subscribe', topics: ['orders.eu'] })).op).toBe('subscribed');
    expect(c.closeInfo).toBeNull();
  });
});

describe('expiry', () => {
  it('token_expiring before exp, then close 4006 at exp without a refresh', async () => {
    const TTL = 3000;
    const token = await sign({ sub: 'alice', subscribe: ['orders.>'] }, TTL);
    const c = await open();
    const authed = await c.request({ op: 'auth', token });
    const exp = authed.expiresAt as number;
    await c.request({ op: 'subscribe', topics: ['orders.eu'] });
    const msgs = await c.until((m) => m.some((x) => x.op === 'token_expiring'), TTL + 2000);
    const warning = msgs.find((x) => x.op === 'token_expiring')!;
    expect(warning.expiresAt).toBe(exp);
    expect(Date.now()).toBeGreaterThanOrEqual(exp - EXPIRY_WARNING);
    expect(Date.now()).toBeLessThan(exp);
    const { code } = await c.closed;
    expect(code).toBe(4006);
    expect(Date.now()).toBeGreaterThanOrEqual(exp);
  });

  it('a refresh moves the deadline: the socket outlives its first token', async () => {
    const TTL = 2500;
    const first = await sign({ sub: 'alice', subscribe: ['orders.>'] }, TTL);
    const firstExp = decodeJwt(first).exp! * 1000;
    const c = await open({ headers: bearer(first) });
    const s = await c.request({ op: 'subscribe', topics: ['orders.eu'], from: 'earliest' });
    await c.until((m) => m.some((x) => x.op === 'token_expiring'), TTL + 2000);
    const next = await sign({ sub: 'alice', subscribe: ['orders.>'] }, 60_000);
    expect((await c.request({ op: 'auth', token: next })).op).toBe('authed');
    // An event published well after the first token's expiry still arrives on the same socket.
    const late = setTimeout(
      () => void server.engine.append('orders.eu', [{ data: '"late"' }]),
      firstExp + 500 - Date.now(),
    );
    try {
      await c.until(() => c.events(s.sub).some((e) => e.data === 'late'), TTL + 5000);
    } finally {
      clearTimeout(late);
    }
    expect(Date.now()).toBeGreaterThan(firstExp);
    expect(c.closeInfo).toBeNull();
  });
});

describe('grants per request', () => {
  it('subscribe per topic and pattern; publish', async () => {
    const token = await sign({
      sub: 'alice',
      subscribe: ['chat.*', 'orders.>'],
      publish: ['chat.a'],
    });
    const c = await open({ headers: bearer(token) });
    expect((await c.request({ op: 'subscribe', topics: ['chat.*', 'orders.eu'] })).op).toBe(
      'subscribed',
    );
    const wide = await c.request({ op: 'subscribe', topics: ['chat.a', 'chat.>'] });
    expect(errorOf(wide)).toBe('forbidden');
    expect(wide.error?.message).toContain('chat.>');
    expect((await c.request({ op: 'publish', topic: 'chat.a', data: 1 })).op).toBe('ack');
    const pub = await c.request({ op: 'publish', topic: 'chat.b', data: 1 });
    expect(errorOf(pub)).toBe('forbidden');
    expect(pub.error?.message).toContain('chat.b');
    expect(c.closeInfo).toBeNull();
  });

  it('anonymous: without credentials, the anonymous grants apply at once', async () => {
    const c = await open({ base: anonUrl });
    expect((await c.request({ op: 'subscribe', topics: ['public.>'] })).op).toBe('subscribed');
    expect(errorOf(await c.request({ op: 'subscribe', topics: ['orders.eu'] }))).toBe('forbidden');
    expect(errorOf(await c.request({ op: 'publish', topic: 'public.x', data: 1 }))).toBe(
      'forbidden',
    );
  });
});
