/**
 * Authentication on the HTTP routes of a real server: one hook refuses every `/v1` request without
 * valid credentials (401 with `WWW-Authenticate`, RFC 6750) while health checks and the index stay
 * open; each route checks the identity's grants (403 `forbidden` naming the topic): publish, topic
 * info and history, every stream transport (SSE, NDJSON, long-poll) per topic and pattern; the
 * topic listing shows only readable topics; requests without credentials get the anonymous grants.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSse, startServer } from '@rill/testkit';
import type { RillServer } from '../src/server.js';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';

const backend = apiKey('backend', { publish: ['orders.>', 'public.>'], subscribe: ['orders.>'] });
/** A server without anonymous access, and one with it. */
let server: RillServer;
let url: string;
let open: RillServer;
let openUrl: string;
const closing: Array<() => Promise<void>> = [];

beforeAll(async () => {
  const a = await startServer({
    auth: authConfig({ apiKeys: [backend.entry], cookie: 'rill_token' }),
  });
  const b = await startServer({
    auth: authConfig({
      apiKeys: [backend.entry],
      anonymous: { subscribe: ['public.>'], publish: [] },
    }),
  });
  ({ server, url } = a);
  ({ server: open, url: openUrl } = b);
  closing.push(a.close, b.close);
  for (const s of [server, open]) {
    for (const topic of ['orders.eu', 'orders.us', 'chat.a', 'chat.b', 'chat.b.x', 'public.news']) {
      await s.engine.append(topic, [{ data: JSON.stringify({ topic }) }]);
    }
  }
});
afterAll(async () => {
  for (const c of closing) await c();
});

interface Answer {
  status: number;
  headers: Headers;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
}

/** A request's answer; a stream that opened is closed at once (its body is not read). */
async function call(
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
  base = url,
): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    ...init,
    headers: { 'content-type': 'application/json', ...init.headers },
  });
  if (!(res.headers.get('content-type') ?? '').startsWith('application/json')) {
    await res.body?.cancel();
    return { status: res.status, headers: res.headers, body: {} };
  }
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : {} };
}

/** A request for each route a subscriber or publisher uses, on `topic`. */
const routes = (topic: string): Array<[string, string, { method?: string; body?: string }]> => [
  ['publish', `/v1/topics/${topic}/events`, { method: 'POST', body: '{"data":1}' }],
  ['history', `/v1/topics/${topic}/events`, {}],
  ['topic info', `/v1/topics/${topic}`, {}],
  ['sse', `/v1/topics/${topic}/stream`, {}],
  ['sse many', `/v1/stream?topics=${topic}`, {}],
  ['ndjson', `/v1/stream?topics=${topic}&format=ndjson`, {}],
  ['long-poll', `/v1/events?topics=${topic}`, {}],
];

describe('401 without valid credentials', () => {
  for (const [what, path, init] of routes('orders.eu')) {
    it(`${what}: no credentials → 401 unauthorized, WWW-Authenticate: Bearer realm="rill"`, async () => {
      const r = await call(path, init);
      expect(r.status).toBe(401);
      expect(r.body.error?.code).toBe('unauthorized');
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="rill"');
    });
  }

  it('a bad signature, a malformed header, an unknown key: 401 with error="invalid_token"', async () => {
    const forged = await sign({ sub: 'eve', subscribe: ['>'] }, 60_000, {
      secret: 'another-secret-0123456789-abcdefghijklmnop',
    });
    for (const headers of [
      bearer(forged),
      { authorization: 'Basic YWxpY2U6cHc=' },
      bearer(`rill_${'A'.repeat(43)}`),
    ]) {
      const r = await call('/v1/topics/public.news/events', { headers });
      expect(r.status).toBe(401);
      expect(r.body.error?.code).toBe('unauthorized');
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="rill", error="invalid_token"');
    }
  });

  it('an expired token: 401 token_expired, invalid_token; invalid credentials never fall back to anonymous', async () => {
    const expired = await sign({ sub: 'alice', subscribe: ['>'] }, -1000);
    const r = await call('/v1/topics/public.news/events', { headers: bearer(expired) });
    expect(r.status).toBe(401);
    expect(r.body.error?.code).toBe('token_expired');
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="rill", error="invalid_token"');
  });

  it('health checks and the index stay open', async () => {
    expect((await call('/healthz')).status).toBe(200);
    expect((await call('/readyz')).status).toBe(200);
    expect((await call('/')).status).toBe(200);
  });
});

describe('where the token comes from', () => {
  it('Authorization: Bearer, the access_token query parameter, or the configured cookie', async () => {
    const token = await sign({ sub: 'alice', subscribe: ['orders.>'] });
    const path = '/v1/topics/orders.eu/events';
    expect((await call(path, { headers: bearer(token) })).status).toBe(200);
    expect((await call(`${path}?access_token=${token}`)).status).toBe(200);
    expect((await call(path, { headers: { cookie: `a=b; rill_token=${token}` } })).status).toBe(
      200,
    );
    // An API key the same ways.
    expect((await call(`${path}?access_token=${backend.key}`)).status).toBe(200);
  });
});

describe('403 forbidden, naming the topic', () => {
  for (const [what, path, init] of routes('chat.a')) {
    it(`${what}: a topic outside the grants → 403 forbidden`, async () => {
      const token = await sign({ sub: 'alice', subscribe: ['orders.>'], publish: ['orders.>'] });
      const r = await call(path, { ...init, headers: bearer(token) });
      expect(r.status).toBe(403);
      expect(r.body.error?.code).toBe('forbidden');
      expect(r.body.error?.message).toContain('chat.a');
      expect(r.headers.get('www-authenticate')).toBeNull();
    });
  }

  it('a publish refused stores nothing', async () => {
    const token = await sign({ sub: 'alice', publish: ['orders.eu'] });
    const r = await call('/v1/topics/orders.us/events', {
      method: 'POST',
      headers: bearer(token),
      body: JSON.stringify([{ data: 1 }, { data: 2 }]),
    });
    expect(r.status).toBe(403);
    expect((await server.engine.head('orders.us'))?.lastSeq).toBe(1);
    const ok = await call('/v1/topics/orders.eu/events', {
      method: 'POST',
      headers: bearer(token),
      body: JSON.stringify([{ data: 1 }, { data: 2 }]),
    });
    expect(ok.status).toBe(201);
  });

  it('patterns: a pattern is allowed only when a grant covers every topic it can match', async () => {
    const token = await sign({ sub: 'alice', subscribe: ['chat.*', 'orders.>'] });
    const poll = (topics: string): Promise<Answer> =>
      call(`/v1/events?topics=${encodeURIComponent(topics)}`, { headers: bearer(token) });
    expect((await poll('chat.*')).status).toBe(200);
    expect((await poll('orders.>')).status).toBe(200);
    expect((await poll('orders.*,chat.a')).status).toBe(200);
    const wide = await poll('chat.a,chat.>');
    expect(wide.status).toBe(403);
    expect(wide.body.error?.message).toContain('chat.>');
    expect((await poll('>')).status).toBe(403);
    const sse = await call(`/v1/stream?topics=${encodeURIComponent('chat.>')}`, {
      headers: bearer(token),
    });
    expect(sse.status).toBe(403);
  });

  it('an allowed stream streams (SSE, with the token in the query as EventSource sends it)', async () => {
    const token = await sign({ sub: 'alice', subscribe: ['orders.>'] });
    const s = await openSse(`${url}/v1/stream?topics=orders.*&from=earliest&access_token=${token}`);
    try {
      expect(s.status).toBe(200);
      await s.until(() => s.events().some((e) => e.topic === 'orders.us'));
      expect(new Set(s.events().map((e) => e.topic))).toEqual(new Set(['orders.eu', 'orders.us']));
    } finally {
      s.close();
    }
  });
});

describe('topic listing shows only readable topics', () => {
  const names = async (headers: Record<string, string>, query = ''): Promise<string[]> => {
    const r = await call(`/v1/topics${query}`, { headers });
    expect(r.status).toBe(200);
    return (r.body.topics as Array<{ topic: string }>).map((t) => t.topic);
  };

  it('per identity: a JWT, an API key, anonymous, admin', async () => {
    const alice = await sign({ sub: 'alice', subscribe: ['chat.*'] });
    expect(await names(bearer(alice))).toEqual(['chat.a', 'chat.b']);
    expect(await names(bearer(backend.key))).toEqual(['orders.eu', 'orders.us']);
    expect((await call('/v1/topics', {}, openUrl)).body.topics).toEqual([
      expect.objectContaining({ topic: 'public.news' }),
    ]);
    const admin = await sign({ sub: 'root', admin: true });
    expect(await names(bearer(admin))).toEqual([
      'chat.a',
      'chat.b',
      'chat.b.x',
      'orders.eu',
      'orders.us',
      'public.news',
    ]);
  });

  it('pages hold readable topics only, and `next` goes on past unreadable ones', async () => {
    const alice = await sign({ sub: 'alice', subscribe: ['chat.>', 'public.>'] });
    const first = await call('/v1/topics?limit=2', { headers: bearer(alice) });
    expect((first.body.topics as Array<{ topic: string }>).map((t) => t.topic)).toEqual([
      'chat.a',
      'chat.b',
    ]);
    expect(first.body.next).toBe('chat.b');
    const second = await call(`/v1/topics?limit=2&after=chat.b`, { headers: bearer(alice) });
    expect((second.body.topics as Array<{ topic: string }>).map((t) => t.topic)).toEqual([
      'chat.b.x',
      'public.news',
    ]);
    const third = await call(`/v1/topics?limit=2&after=public.news`, { headers: bearer(alice) });
    expect(third.body).toEqual({ topics: [], next: null });
  });
});

describe('anonymous', () => {
  it('reads and streams what the anonymous grants allow, and nothing else', async () => {
    expect((await call('/v1/topics/public.news/events', {}, openUrl)).status).toBe(200);
    const other = await call('/v1/topics/orders.eu/events', {}, openUrl);
    expect(other.status).toBe(403);
    expect(other.body.error?.code).toBe('forbidden');
    const s = await openSse(`${openUrl}/v1/topics/public.news/stream?from=earliest`);
    try {
      expect(s.status).toBe(200);
      await s.until(() => s.events().length === 1);
    } finally {
      s.close();
    }
    const pub = await call(
      '/v1/topics/public.news/events',
      { method: 'POST', body: '{"data":1}' },
      openUrl,
    );
    expect(pub.status).toBe(403);
    expect(pub.body.error?.code).toBe('forbidden');
    // Where anonymous access is not configured, the same requests need credentials.
    expect((await call('/v1/topics/public.news/events')).status).toBe(401);
  });

  it('credentials still count where anonymous access is configured: a key may publish', async () => {
    const r = await call(
      '/v1/topics/public.news/events',
      { method: 'POST', headers: bearer(backend.key), body: '{"data":2}' },
      openUrl,
    );
    expect(r.status).toBe(201);
    const bad = await call('/v1/topics/public.news/events', { headers: bearer('nope') }, openUrl);
    expect(bad.status).toBe(401);
  });
});
