import http from 'node:http';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type RillServer } from '../src/server.js';
import { tempDir } from '@rill/testkit';

/**
 * Odd input never gets a 5xx: every route, every query parameter it reads, repeated or odd, on
 * the memory and lmdb engines, and nothing the server logs as an error.
 */

interface Route {
  method: 'GET' | 'HEAD' | 'POST';
  url: string;
}

/** The routes of a Fastify app, from its route tree (`printRoutes`). */
function routesOf(server: RillServer): Route[] {
  const out: Route[] = [];
  const stack: string[] = [];
  for (const line of server.app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]+)\))?/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const path = (depth === 0 ? '' : stack[depth - 1]!) + m[2]!;
    stack[depth] = path;
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim())) {
      if (method === 'GET' || method === 'HEAD' || method === 'POST')
        out.push({ method, url: path });
    }
  }
  return out;
}

/** Every byte of the UTF-8 of `s` (or the bytes themselves) percent-encoded. */
function pct(s: string | Uint8Array): string {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s);
  let out = '';
  for (const x of b) {
    out += /[A-Za-z0-9]/.test(String.fromCharCode(x))
      ? String.fromCharCode(x)
      : `%${x.toString(16).padStart(2, '0')}`;
  }
  return out;
}

interface Answer {
  status: number;
  body: string;
}

/** One request over a fresh connection; a stream's answer is its status (the stream is cut). */
function send(
  base: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: Buffer } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, {
      method,
      headers: options.headers ?? {},
      agent: false,
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer to ${method} ${path.slice(0, 200)}`));
    }, 10_000);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      const type = String(res.headers['content-type'] ?? '');
      if (type.startsWith('text/event-stream') || type.startsWith('application/x-ndjson')) {
        clearTimeout(timer);
        resolve({ status: res.statusCode!, body: '' });
        req.destroy();
        return;
      }
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode!, body });
      });
    });
    req.end(options.body);
  });
}

/**
 * HEAD of a stream is another matter (what a HEAD of an endless response should answer): the
 * streams are exercised here with GET.
 */
const isStream = (r: Route): boolean => r.url.endsWith('/stream') && r.method === 'HEAD';

/** A URL with `:topic` filled in (as given: already percent-encoded when it needs to be). */
const fill = (url: string, topic: string): string => url.replace(':topic', topic);

/** The query a route needs to get past its first check: the multi-topic routes need `topics`. */
const baseQuery = (url: string): string[] =>
  url === '/v1/stream' || url === '/v1/events' ? ['topics=exists'] : [];

describe.each(['memory', 'lmdb'] as const)('odd input on the %s engine', (engine) => {
  let server: RillServer;
  let base: string;
  let routes: Route[];
  const dir = tempDir();
  /** What the server logged at error level or above (a 500 logs its stack here). */
  const errors: string[] = [];
  /** The query parameters each route's handler reads, found by watching it read them. */
  const paramsRead = new Map<string, Set<string>>();

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line !== '' && (JSON.parse(line) as { level: number }).level >= 50) errors.push(line);
        }
        done();
      },
    });
    server = await createServer(
      { engine, dataDir: dir.path, port: 0, logLevel: 'warn' },
      { logger: pino({ level: 'warn' }, sink) },
    );
    server.app.addHook('preHandler', async (req) => {
      const seen = paramsRead.get(req.routeOptions.url!) ?? new Set<string>();
      paramsRead.set(req.routeOptions.url!, seen);
      req.query = new Proxy(req.query as object, {
        get(target, key, receiver) {
          if (typeof key === 'string') seen.add(key);
          return Reflect.get(target, key, receiver) as unknown;
        },
      });
    });
    base = await server.listen();
    routes = routesOf(server);
    const pub = await send(base, 'POST', '/v1/topics/exists/events', {
      headers: { 'content-type': 'application/json' },
      body: Buffer.from('{"data":1}'),
    });
    expect(pub.status).toBe(201);
    // Learn which parameters each GET route reads: one plain request each.
    for (const r of routes.filter((x) => x.method === 'GET')) {
      const q = baseQuery(r.url);
      const a = await send(
        base,
        'GET',
        fill(r.url, 'exists') + (q.length ? `?${q.join('&')}` : ''),
      );
      expect(a.status, `${r.url}: ${a.body}`).toBeLessThan(500);
    }
  });

  afterAll(async () => {
    await server.close();
    dir.remove();
  });

  it('finds the routes and the parameters they read', () => {
    const urls = new Set(routes.map((r) => `${r.method} ${r.url}`));
    for (const r of [
      'GET /v1/topics',
      'GET /v1/topics/:topic',
      'GET /v1/topics/:topic/events',
      'POST /v1/topics/:topic/events',
      'GET /v1/topics/:topic/stream',
      'GET /v1/stream',
      'GET /v1/events',
      'GET /v1/ws',
    ]) {
      expect(urls).toContain(r);
    }
    expect(paramsRead.get('/v1/topics')).toEqual(new Set(['limit', 'prefix', 'after', 'pattern']));
    for (const p of ['after', 'limit', 'wait']) {
      expect(paramsRead.get('/v1/topics/:topic/events')).toContain(p);
    }
    for (const p of ['from', 'since', 'lastEventId', 'cursor', 'format']) {
      expect(paramsRead.get('/v1/topics/:topic/stream')).toContain(p);
      expect(paramsRead.get('/v1/stream')).toContain(p);
    }
    for (const p of ['topics', 'cursor', 'wait', 'limit', 'since', 'from']) {
      expect(paramsRead.get('/v1/events')).toContain(p);
    }
  });

  it('refuses every repeated scalar query parameter on every route with invalid_parameter', async () => {
    let checked = 0;
    for (const r of routes.filter((x) => !isStream(x))) {
      const names = new Set([...(paramsRead.get(r.url) ?? []), 'unknownParam']);
      for (const name of names) {
        const q = [...baseQuery(r.url), `${name}=0`, `${name}=1`];
        const options =
          r.method === 'POST'
            ? { headers: { 'content-type': 'application/json' }, body: Buffer.from('{"data":1}') }
            : {};
        const a = await send(base, r.method, `${fill(r.url, 'exists')}?${q.join('&')}`, options);
        const what = `${r.method} ${r.url} ?${name} twice: ${a.status} ${a.body}`;
        if (name === 'topics') {
          // The one list parameter: repeating it adds topics.
          expect(a.status, what).toBeLessThan(400);
          continue;
        }
        expect(a.status, what).toBe(400);
        if (r.method !== 'HEAD') {
          expect(JSON.parse(a.body), what).toMatchObject({ error: { code: 'invalid_parameter' } });
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(30);
    expect(errors).toEqual([]);
  });

  it('refuses a prefix or after longer than a topic name, or outside its alphabet', async () => {
    for (const q of [
      `prefix=${'a'.repeat(3000)}`,
      `after=${'a'.repeat(3000)}`,
      `prefix=${'a'.repeat(201)}`,
      `prefix=${pct('é')}`,
      `after=${pct('\u0000')}`,
    ]) {
      const a = await send(base, 'GET', `/v1/topics?${q}`);
      expect(a.status, q.slice(0, 40)).toBe(400);
      expect(JSON.parse(a.body)).toMatchObject({ error: { code: 'invalid_parameter' } });
    }
    const ok = await send(base, 'GET', `/v1/topics?prefix=${'e'.repeat(200)}&after=exi`);
    expect(ok.status).toBe(200);
    const one = await send(base, 'GET', `/v1/topics?prefix=ex`);
    expect(JSON.parse(one.body)).toMatchObject({ topics: [{ topic: 'exists' }] });
    expect(errors).toEqual([]);
  });

  it('never answers odd input with a 5xx (fast-check)', async () => {
    const printable = fc.string({
      unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
      maxLength: 80,
    });
    const oddText = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      printable,
      fc.constantFrom(
        '',
        '0',
        '-1',
        '1.5',
        '1e3',
        'now',
        'earliest',
        'sse',
        'ndjson',
        '99999999999999999999',
        'NaN',
        'Infinity',
        '2026-13-45T99:99:99Z',
        'exists',
        'exists.>',
        '*',
        '>',
        '..',
        '__proto__',
        'constructor',
        'a'.repeat(3000),
        'é'.repeat(300),
        '\ud800',
        '\u0085\u2028',
      ),
      fc.integer({ min: 190, max: 3000 }).map((n) => 'x'.repeat(n)),
    );
    // A value: text as UTF-8, or raw bytes (invalid UTF-8 included), percent-encoded.
    const value = fc.oneof(oddText.map(pct), fc.uint8Array({ maxLength: 20 }).map(pct));
    const allParams = [...new Set([...paramsRead.values()].flatMap((s) => [...s]))];
    const query = fc.array(
      fc.tuple(fc.oneof(fc.constantFrom(...allParams), oddText), value, fc.boolean()),
      { maxLength: 6 },
    );
    const topic = fc.oneof(
      fc.constant('exists'),
      oddText.filter((s) => s !== '').map(pct),
      fc.uint8Array({ minLength: 1, maxLength: 20 }).map(pct),
    );
    const depth = (n: number): string => '['.repeat(n) + ']'.repeat(n);
    const body = fc.oneof(
      fc.json().map((j) => Buffer.from(j)),
      fc.json().map((j) => Buffer.from(`{"data":${j}}`)),
      oddText.map((t) => Buffer.from(t)),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      fc.integer({ min: 1, max: 30_000 }).map((n) => Buffer.from(`{"data":${depth(n)}}`)),
      fc
        .array(fc.tuple(oddText, oddText), { maxLength: 3 })
        .map((kv) => Buffer.from(JSON.stringify({ data: Object.fromEntries(kv) }))),
    );
    const contentType = fc.constantFrom(
      'application/json',
      'application/x-ndjson',
      'application/json; charset=latin1',
      'text/plain',
      'application/octet-stream',
    );
    const lastEventId = fc.option(printable, { nil: undefined });

    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes.filter((x) => !isStream(x))),
        topic,
        query,
        body,
        contentType,
        lastEventId,
        async (r, t, q, b, ct, lei) => {
          const parts: string[] = [];
          for (const [k, v, twice] of q) {
            let val = v;
            // A long-poll that waits would only slow the run: keep every valid wait at 0.
            if (
              k === 'wait' &&
              /^\d+(\.\d+)?$/.test(decodeURIComponent(v.replace(/%(?![0-7])../g, '_')))
            )
              val = '0';
            parts.push(`${pct(k)}=${val}`);
            if (twice) parts.push(`${pct(k)}=${val}`);
          }
          const path = `${fill(r.url, t)}${parts.length ? `?${parts.join('&')}` : ''}`;
          // A request head past http.maxHeaderSize is Node's 431, before any route sees it.
          fc.pre(path.length < 12_000);
          const headers: Record<string, string> = {};
          if (lei !== undefined) headers['last-event-id'] = lei;
          if (r.method === 'POST') headers['content-type'] = ct;
          const a = await send(
            base,
            r.method,
            path,
            r.method === 'POST' ? { headers, body: b } : { headers },
          );
          expect(
            a.status,
            `${r.method} ${path.slice(0, 300)}: ${a.body.slice(0, 300)}`,
          ).toBeLessThan(500);
        },
      ),
      { numRuns: 400 },
    );
    expect(errors).toEqual([]);
  }, 120_000);
});
