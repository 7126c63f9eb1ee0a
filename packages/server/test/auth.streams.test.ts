/**
 * Open streams and credentials that stop being valid, on a real server: at a JWT's expiry an SSE
 * or NDJSON stream ends with a `token_expired` error frame, a long-poll wait (and a history wait)
 * is answered 401 `token_expired` instead of running past it, and a WebSocket closes 4006; an API
 * key removed from the keys file ends, at the reload, every stream it opened with `unauthorized`
 * (WebSocket: 4524) while other credentials' streams go on; a JWT key removed from the
 * configuration (read again at the reload) ends the streams of every token it signed.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openSse, startServer, tempDir, waitFor, type SseStream } from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import { pino } from 'pino';
import type { RillConfigInput } from '../src/config.js';
import { createServer, type RillServer } from '../src/server.js';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';

const scratch = tempDir('rill-auth-streams-');
afterAll(() => scratch.remove());

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(auth: Record<string, unknown>): Promise<{ server: RillServer; url: string }> {
  const s = await startServer({ auth: authConfig(auth) });
  cleanups.push(s.close);
  return s;
}

async function sse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const s = await openSse(url, headers);
  cleanups.push(() => s.close());
  expect(s.status).toBe(200);
  return s;
}

/** An NDJSON stream read line by line: `lines` so far, `ended` when the server ended it. */
async function ndjson(
  url: string,
  headers: Record<string, string>,
): Promise<{ lines: Array<Record<string, unknown>>; ended: Promise<void> }> {
  const ac = new AbortController();
  cleanups.push(() => ac.abort());
  const res = await fetch(url, {
    headers: { accept: 'application/x-ndjson', ...headers },
    signal: ac.signal,
  });
  expect(res.status).toBe(200);
  const lines: Array<Record<string, unknown>> = [];
  const ended = (async () => {
    let buf = '';
    const decoder = new TextDecoder();
    const reader = res.body!.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      }
    }
  })();
  return { lines, ended };
}

async function ws(url: string, headers: Record<string, string>): Promise<WsClient> {
  const c = await WsClient.open(wsUrl(url), { headers });
  cleanups.push(() => c.terminate());
  return c;
}

const expOf = (token: string): number => decodeJwt(token).exp! * 1000;

describe('at the token expiry', () => {
  const TTL = 2000;

  it('SSE: an error frame token_expired (retryable), then the stream ends; not before exp', async () => {
    const { server, url } = await start({});
    await server.engine.append('orders', [{ data: '1' }]);
    const token = await sign({ sub: 'alice', subscribe: ['orders'] }, TTL);
    const s = await sse(`${url}/v1/topics/orders/stream?from=earliest`, bearer(token));
    await s.until(() => s.events().length === 1);
    await s.ended;
    expect(Date.now()).toBeGreaterThanOrEqual(expOf(token));
    const last = s.frames.at(-1)!;
    expect(last.event).toBe('error');
    expect(JSON.parse(last.data!)).toMatchObject({
      code: 'token_expired',
      retryable: true,
      closeCode: 4006,
    });
  });

  it('NDJSON: an error line token_expired, then the stream ends', async () => {
    const { server, url } = await start({});
    await server.engine.append('orders', [{ data: '1' }]);
    const token = await sign({ sub: 'alice', subscribe: ['orders'] }, TTL);
    const s = await ndjson(`${url}/v1/stream?topics=orders&from=earliest`, bearer(token));
    await s.ended;
    expect(Date.now()).toBeGreaterThanOrEqual(expOf(token));
    expect(s.lines[0]).toMatchObject({ topic: 'orders', seq: 1 });
    expect(s.lines.at(-1)).toMatchObject({ error: { code: 'token_expired', retryable: true } });
  });

  it('long-poll: a wait longer than the token lives is answered 401 token_expired at exp', async () => {
    const { url } = await start({});
    const token = await sign({ sub: 'alice', subscribe: ['orders'] }, TTL);
    const t0 = Date.now();
    const res = await fetch(`${url}/v1/events?topics=orders&wait=30`, { headers: bearer(token) });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="rill", error="invalid_token"');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('token_expired');
    expect(Date.now()).toBeGreaterThanOrEqual(expOf(token));
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('long-poll: events that come before exp are answered as usual', async () => {
    const { server, url } = await start({});
    const token = await sign({ sub: 'alice', subscribe: ['orders'] }, 10_000);
    const pending = fetch(`${url}/v1/events?topics=orders&wait=30`, { headers: bearer(token) });
    // The poll is waiting (its subscription is on the hub) before the event is published.
    await waitFor(() => server.hub.size === 1);
    await server.engine.append('orders', [{ data: '7' }]);
    const res = await pending;
    expect(res.status).toBe(200);
    const body = (await res.json()) as { events: Array<{ data: unknown }> };
    expect(body.events.map((e) => e.data)).toEqual([7]);
  });

  it('history wait: answered 401 token_expired at exp', async () => {
    const { server, url } = await start({});
    await server.engine.append('orders', [{ data: '1' }]);
    const token = await sign({ sub: 'alice', subscribe: ['orders'] }, TTL);
    const res = await fetch(`${url}/v1/topics/orders/events?after=1&wait=30`, {
      headers: bearer(token),
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('token_expired');
    expect(Date.now()).toBeGreaterThanOrEqual(expOf(token));
  });

  it('WebSocket: close 4006 at exp', async () => {
    const { url } = await start({});
    const token = await sign({ sub: 'alice', subscribe: ['orders'] }, TTL);
    const c = await ws(url, bearer(token));
    expect((await c.request({ op: 'subscribe', topics: ['orders'] })).op).toBe('subscribed');
    expect((await c.closed).code).toBe(4006);
    expect(Date.now()).toBeGreaterThanOrEqual(expOf(token));
  });
});

describe('revocation', () => {
  it('an API key removed from the keys file: its streams end with unauthorized at the reload, on every transport; others go on', async () => {
    const revoked = apiKey('mobile', { subscribe: ['orders'] });
    const kept = apiKey('backend', { subscribe: ['orders'] });
    const file = join(scratch.path, 'keys.yaml');
    writeFileSync(file, JSON.stringify([revoked.entry, kept.entry]));
    const { server, url } = await start({ apiKeysFile: file });
    await server.engine.append('orders', [{ data: '1' }]);

    const s = await sse(`${url}/v1/topics/orders/stream?from=earliest`, bearer(revoked.key));
    const n = await ndjson(`${url}/v1/stream?topics=orders&from=earliest`, bearer(revoked.key));
    const poll = fetch(`${url}/v1/events?topics=orders&from=now&wait=30`, {
      headers: bearer(revoked.key),
    });
    const c = await ws(url, bearer(revoked.key));
    expect((await c.request({ op: 'subscribe', topics: ['orders'] })).op).toBe('subscribed');
    const other = await sse(`${url}/v1/topics/orders/stream?from=earliest`, bearer(kept.key));
    await s.until(() => s.events().length === 1);
    await other.until(() => other.events().length === 1);
    await waitFor(() => n.lines.length === 1 && server.hub.size === 5);

    writeFileSync(file, JSON.stringify([kept.entry]));
    const report = await server.reload();
    expect(report.revoked).toEqual(['key:mobile']);

    await s.ended;
    expect(JSON.parse(s.frames.at(-1)!.data!)).toMatchObject({
      code: 'unauthorized',
      closeCode: 4524,
    });
    await n.ended;
    expect(n.lines.at(-1)).toMatchObject({ error: { code: 'unauthorized' } });
    const p = await poll;
    expect(p.status).toBe(401);
    expect(((await p.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    expect((await c.closed).code).toBe(4524);

    // The other key's stream goes on, and the revoked key opens nothing new.
    await server.engine.append('orders', [{ data: '2' }]);
    await other.until(() => other.events().length === 2);
    const again = await fetch(`${url}/v1/topics/orders/events`, { headers: bearer(revoked.key) });
    expect(again.status).toBe(401);
  });

  it('a JWT key removed from the configuration: the streams of the tokens it signed end', async () => {
    const OLD = 'old-key-secret-0123456789-abcdefghijklmnopq';
    const NEW = 'new-key-secret-0123456789-abcdefghijklmnopq';
    const jwt = (keys: Array<{ kid: string; secret: string }>): Record<string, unknown> => ({
      jwt: { keys, clockSkew: 0 },
    });
    let current = jwt([
      { kid: 'old', secret: OLD },
      { kid: 'new', secret: NEW },
    ]);
    const server = await createServer(
      { engine: 'memory', port: 0, auth: current as RillConfigInput['auth'] },
      {
        logger: pino({ level: 'silent' }),
        loadConfig: () => ({ auth: current as RillConfigInput['auth'] }),
      },
    );
    const url = await server.listen();
    cleanups.push(() => server.close());
    const grants = { sub: 'alice', subscribe: ['orders'] };
    const oldToken = await sign(grants, 60_000, { secret: OLD, kid: 'old' });
    const newToken = await sign(grants, 60_000, { secret: NEW, kid: 'new' });
    const a = await sse(`${url}/v1/topics/orders/stream`, bearer(oldToken));
    const b = await sse(`${url}/v1/topics/orders/stream`, bearer(newToken));
    const c = await ws(url, bearer(oldToken));
    expect((await c.request({ op: 'subscribe', topics: ['orders'] })).op).toBe('subscribed');

    current = jwt([{ kid: 'new', secret: NEW }]);
    expect((await server.reload()).revoked).toEqual(['jwt:old:*']);
    await a.ended;
    expect(JSON.parse(a.frames.at(-1)!.data!)).toMatchObject({ code: 'unauthorized' });
    expect((await c.closed).code).toBe(4524);
    await server.engine.append('orders', [{ data: '1' }]);
    await b.until(() => b.events().length === 1);
  });
});
