/**
 * The admin endpoints (api/admin.ts) on a real server: `GET /v1/connections` lists every open SSE,
 * NDJSON, WebSocket and long-poll with who, from where, what and how far behind, paged;
 * `DELETE /v1/connections/{id}` ends one with `disconnected_by_admin` (an SSE error frame, a
 * WebSocket close 4010); both need the admin grant when authentication is on. And the topic
 * listing's pattern filter and retention, and `/` sending browsers to the dashboard.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openSse, publish, startServer } from '@rill/testkit';
import { authConfig, bearer, sign } from '@rill/testkit/auth';
import { WsClient, wsUrl } from '@rill/testkit/ws';

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

interface Row {
  id: string;
  transport: string;
  identity: { kind: string; sub: string | null; name: string | null; credentialId: string };
  address: string;
  patterns: string[];
  topics: number;
  bufferedBytes: number;
  state: string;
  openedAt: string;
  ageSeconds: number;
}
interface Page {
  total: number;
  connections: Row[];
  next: number | null;
}

async function connections(url: string, query = '', headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/v1/connections${query}`, { headers });
  return { status: res.status, body: (await res.json()) as Page & { error?: { code: string } } };
}

async function waitForCount(url: string, n: number, headers: Record<string, string> = {}) {
  const end = Date.now() + 10_000;
  for (;;) {
    const { body } = await connections(url, '', headers);
    if (body.total === n) return body;
    if (Date.now() > end) throw new Error(`expected ${n} connections, have ${body.total}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('GET /v1/connections and DELETE /v1/connections/{id}', () => {
  it('lists SSE, NDJSON, WebSocket and long-poll clients, and a disconnect ends each its own way', async () => {
    const s = await startServer();
    closers.push(s.close);
    await publish(s.url, 'prices.eu', { data: 1 });
    expect((await connections(s.url)).body).toEqual({ total: 0, connections: [], next: null });

    const sse = await openSse(`${s.url}/v1/topics/prices.eu/stream?from=earliest`);
    closers.push(() => sse.close());
    await sse.until(() => sse.events().length === 1);
    const ac = new AbortController();
    closers.push(() => ac.abort());
    const nd = await fetch(`${s.url}/v1/stream?topics=prices.>&format=ndjson`, {
      signal: ac.signal,
    });
    const ws = await WsClient.open(wsUrl(s.url));
    closers.push(() => ws.ws.terminate());
    ws.send({ op: 'subscribe', id: 1, topics: ['prices.eu', 'news.*'] });
    await ws.until((m) => m.some((x) => x.op === 'subscribed'));
    const poll = fetch(`${s.url}/v1/events?topics=idle&wait=30`);

    const page = await waitForCount(s.url, 4);
    const by = (t: string): Row => page.connections.find((c) => c.transport === t)!;
    expect(page.connections.map((c) => c.transport)).toEqual(['sse', 'ndjson', 'ws', 'poll']);
    expect(by('sse')).toMatchObject({
      identity: { kind: 'anonymous', sub: null, name: null, credentialId: 'anonymous' },
      address: '127.0.0.1',
      patterns: ['prices.eu'],
      topics: 1,
      state: 'live',
    });
    expect(by('ndjson').patterns).toEqual(['prices.>']);
    expect(by('ndjson').topics).toBe(1);
    expect(by('ws').patterns).toEqual(['prices.eu', 'news.*']);
    expect(by('ws').id).toMatch(/^req-[0-9a-z]+$/);
    expect(by('poll').patterns).toEqual(['idle']);
    for (const c of page.connections) {
      expect(typeof c.id).toBe('string');
      expect(c.bufferedBytes).toBeGreaterThanOrEqual(0);
      expect(Date.parse(c.openedAt)).toBeLessThanOrEqual(Date.now());
    }
    expect(new Set(page.connections.map((c) => c.id)).size).toBe(4);

    // Paged: two at a time, in the same order, the last page without `next`.
    const p1 = (await connections(s.url, '?limit=2')).body;
    expect(p1.connections.map((c) => c.transport)).toEqual(['sse', 'ndjson']);
    expect(p1.next).not.toBeNull();
    const p2 = (await connections(s.url, `?limit=2&after=${p1.next}`)).body;
    expect(p2.connections.map((c) => c.transport)).toEqual(['ws', 'poll']);
    expect(p2.next).toBeNull();
    expect((await connections(s.url, '?after=x')).status).toBe(400);

    // SSE: an error frame with the code, then the stream ends.
    const del = await fetch(`${s.url}/v1/connections/${by('sse').id}`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    expect(await del.json()).toEqual({ disconnected: 1 });
    await sse.ended;
    const err = sse.frames.find((f) => f.event === 'error');
    expect(JSON.parse(err!.data!)).toMatchObject({
      code: 'disconnected_by_admin',
      retryable: true,
      closeCode: 4010,
    });
    // WebSocket: closed with 4010.
    await fetch(`${s.url}/v1/connections/${by('ws').id}`, { method: 'DELETE' });
    expect(await ws.closed).toEqual({ code: 4010, reason: 'disconnected_by_admin' });
    // Long-poll: answered at once with the error.
    await fetch(`${s.url}/v1/connections/${by('poll').id}`, { method: 'DELETE' });
    const polled = await poll;
    expect(polled.status).toBe(503);
    expect(((await polled.json()) as { error: { code: string } }).error.code).toBe(
      'disconnected_by_admin',
    );
    // NDJSON: an error line, then the end of the body.
    await fetch(`${s.url}/v1/connections/${by('ndjson').id}`, { method: 'DELETE' });
    const text = await nd.text();
    expect(text).toContain('"code":"disconnected_by_admin"');

    expect((await waitForCount(s.url, 0)).connections).toEqual([]);
    const gone = await fetch(`${s.url}/v1/connections/${by('sse').id}`, { method: 'DELETE' });
    expect(gone.status).toBe(404);
  });

  it('a subscriber that does not read is listed in catch-up with the bytes waiting for it', async () => {
    const s = await startServer({ limits: { maxSubscriberBufferBytes: 64 * 1024 } });
    closers.push(s.close);
    const sse = await openSse(`${s.url}/v1/topics/flood/stream`);
    closers.push(() => sse.close());
    await waitForCount(s.url, 1);
    sse.res.pause();
    const big = 'x'.repeat(16 * 1024);
    const end = Date.now() + 20_000;
    let row: Row | undefined;
    while (Date.now() < end) {
      await publish(
        s.url,
        'flood',
        Array.from({ length: 20 }, () => ({ data: big })),
      );
      row = (await connections(s.url)).body.connections[0];
      if (row?.state === 'catch-up' && row.bufferedBytes > 0) break;
    }
    expect(row).toMatchObject({ transport: 'sse', state: 'catch-up' });
    expect(row!.bufferedBytes).toBeGreaterThan(0);
  });

  it('needs the admin grant when authentication is on, and names the identity, never its token', async () => {
    const s = await startServer({ auth: authConfig() });
    closers.push(s.close);
    const admin = bearer(await sign({ sub: 'root', admin: true }));
    const alice = await sign({ sub: 'alice', subscribe: ['chat.>'] });
    expect((await connections(s.url)).status).toBe(401);
    const refused = await connections(s.url, '', bearer(alice));
    expect(refused.status).toBe(403);
    expect(refused.body.error?.code).toBe('forbidden');
    const del = await fetch(`${s.url}/v1/connections/x`, {
      method: 'DELETE',
      headers: bearer(alice),
    });
    expect(del.status).toBe(403);

    const sse = await openSse(`${s.url}/v1/topics/chat.a/stream`, bearer(alice));
    closers.push(() => sse.close());
    const page = await waitForCount(s.url, 1, admin);
    expect(page.connections[0]!.identity).toEqual({
      kind: 'jwt',
      sub: 'alice',
      name: null,
      credentialId: 'jwt:default:alice',
    });
    expect(JSON.stringify(page)).not.toContain(alice);
    // The admin's own request is not a stream: only alice's is listed. Disconnecting it ends it.
    const r = await fetch(`${s.url}/v1/connections/${page.connections[0]!.id}`, {
      method: 'DELETE',
      headers: admin,
    });
    expect(r.status).toBe(200);
    await sse.ended;
    await waitForCount(s.url, 0, admin);
  });
});

describe('GET /v1/topics for the dashboard', () => {
  it('filters by pattern and shows each topic its retention', async () => {
    const s = await startServer({
      retention: { maxEvents: 500, rules: [{ pattern: 'prices.>', maxEvents: 10, maxAge: '1h' }] },
    });
    closers.push(s.close);
    for (const t of ['prices.eu', 'prices.us.west', 'pricesx', 'orders', 'a.prices.b'])
      expect((await publish(s.url, t, { data: 1 })).status).toBe(201);
    const list = async (q: string) =>
      (
        (await (await fetch(`${s.url}/v1/topics${q}`)).json()) as {
          topics: Array<{ topic: string; retention: unknown }>;
        }
      ).topics;
    expect((await list('?pattern=prices.>')).map((t) => t.topic)).toEqual([
      'prices.eu',
      'prices.us.west',
    ]);
    expect((await list('?pattern=prices.*')).map((t) => t.topic)).toEqual(['prices.eu']);
    expect((await list('?pattern=*.prices.*')).map((t) => t.topic)).toEqual(['a.prices.b']);
    expect((await list('?pattern=orders')).map((t) => t.topic)).toEqual(['orders']);
    const all = await list('');
    expect(all.find((t) => t.topic === 'prices.eu')!.retention).toEqual({
      maxEvents: 10,
      maxAgeMs: 3_600_000,
      maxBytes: 0,
    });
    expect(all.find((t) => t.topic === 'orders')!.retention).toMatchObject({ maxEvents: 500 });
    const bad = await fetch(`${s.url}/v1/topics?pattern=a.>.b`);
    expect(bad.status).toBe(400);
  });
});

describe('GET /', () => {
  it('sends a browser to the dashboard and keeps the JSON index for scripts', async () => {
    const s = await startServer();
    closers.push(s.close);
    const browser = await fetch(`${s.url}/`, {
      headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' },
      redirect: 'manual',
    });
    expect(browser.status).toBe(302);
    expect(browser.headers.get('location')).toBe('/ui/');
    const script = await fetch(`${s.url}/`);
    expect(script.headers.get('content-type')).toMatch(/^application\/json/);
  });
});
