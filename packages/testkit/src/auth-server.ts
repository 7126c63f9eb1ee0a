/**
 * A small Rill-speaking server (node:http and `ws` on 127.0.0.1) that checks tokens as Rill's
 * authentication does, so clients can be tested against the wire protocol on their own:
 *
 * - A token is an HS256 JWT signed with this server's secret (`sign`), `exp` required; its
 *   `rill.subscribe` claim lists the topics it may read. Requests carry it as
 *   `Authorization: Bearer`, else as the `access_token` query parameter; a WebSocket as its first
 *   message `{"op":"auth","id","token"}` (answered `authed` or `error`), again later to refresh.
 * - Refusals: 401 `unauthorized` (missing or bad token), 401 `token_expired`, 403 `forbidden`
 *   (with `WWW-Authenticate` on 401s). A WebSocket message other than `auth` before
 *   authentication is answered `unauthorized` and the socket closed with 4524.
 * - At a token's expiry (or when the test calls `expireAll`): an SSE stream gets an `error` frame
 *   `token_expired` and ends; a long-poll wait is answered 401 `token_expired`; a WebSocket that
 *   did not refresh closes with 4006, after a `token_expiring` message `expiryWarning` ms before.
 *
 * One log (epoch `e1`) per topic in memory, single-topic streams, no patterns: enough for a
 * client's point of view. Every request and auth is recorded in `seen` (how the token came).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface TestEvent {
  topic: string;
  seq: number;
  id: string;
  time: number;
  key?: string;
  data: unknown;
}

/** One token check the server made. */
export interface Seen {
  route: 'stream' | 'poll' | 'publish' | 'history' | 'ws-auth' | 'ws-upgrade' | 'ws-subscribe';
  /** How the token came; `none` when it did not. */
  via: 'header' | 'query' | 'op' | 'none';
  token: string | undefined;
  /** The answer: `ok` or an error code. */
  result: string;
  /** The resume cursor the request carried (stream, poll, WebSocket subscribe). */
  cursor?: string | undefined;
  /** Which WebSocket connection (1, 2, …) for `ws-*`. */
  conn?: number;
}

interface Identity {
  sub: string;
  exp: number;
  topics: string[] | undefined;
}

type Check = { ok: true; id: Identity } | { ok: false; code: 'unauthorized' | 'token_expired' };

const ERRORS = {
  unauthorized: { status: 401, retryable: false, closeCode: 4524 },
  token_expired: { status: 401, retryable: true, closeCode: 4006 },
  forbidden: { status: 403, retryable: false, closeCode: 4525 },
} as const;
type Code = keyof typeof ERRORS;

function errorBody(
  code: Code,
  message: string,
): { code: string; message: string; retryable: boolean; closeCode: number } {
  return { code, message, retryable: ERRORS[code].retryable, closeCode: ERRORS[code].closeCode };
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** A stream open on the server: told new events and the end of its token. */
interface Live {
  topic: string;
  /** Hands events over (after the ones it has). */
  push(): void;
  /** Its token was expired by the test. */
  expire(): void;
}

export class AuthTestServer {
  url = '';
  readonly seen: Seen[] = [];
  /** WebSocket messages other than `auth` that came before authentication. */
  unauthenticatedOps = 0;
  /** Close codes the server closed WebSockets with. */
  readonly wsCloses: number[] = [];
  private readonly secret = randomBytes(32);
  private readonly logs = new Map<string, TestEvent[]>();
  private readonly keys = new Map<string, TestEvent>();
  private readonly live = new Set<Live>();
  private readonly spent = new Set<string>();
  private readonly sockets = new Set<net.Socket>();
  private readonly server = http.createServer((req, res) => {
    this.route(req, res).catch((err: unknown) => {
      res.destroy(err as Error);
    });
  });
  private readonly wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (p) => (p.has('rill.v1') ? 'rill.v1' : false),
  });
  private conns = 0;
  private issued = 0;
  private readonly files = new Map<string, { type: string; body: string }>();

  /** `expiryWarning`: ms before expiry a WebSocket is sent `token_expiring`. */
  constructor(private readonly expiryWarning = 1000) {}

  async listen(): Promise<string> {
    this.server.on('connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    this.server.on('upgrade', (req, socket, head) => {
      if (new URL(req.url ?? '/', 'http://x').pathname !== '/v1/ws') return socket.destroy();
      this.wss.handleUpgrade(req, socket, head, (ws) => this.socket(ws, req));
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    const { port } = this.server.address() as net.AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    return this.url;
  }

  async close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Serves `body` at `path` without authentication (a test page and its script). */
  serve(path: string, type: string, body: string): void {
    this.files.set(path, { type, body });
  }

  /** A token for `sub` that expires in `ttlMs`, readable topics `topics` (all when absent). */
  sign(sub: string, ttlMs: number, topics?: string[], secret: Buffer = this.secret): string {
    const payload: Record<string, unknown> = {
      sub,
      exp: (Date.now() + ttlMs) / 1000,
      iat: Math.floor(Date.now() / 1000),
      jti: String(++this.issued),
    };
    if (topics) payload.rill = { subscribe: topics };
    const head = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}`;
    return `${head}.${b64url(createHmac('sha256', secret).update(head).digest())}`;
  }

  /** Appends `count` events `{n}` to `topic`; returns their seqs. */
  append(topic: string, count = 1): number[] {
    const log = this.log(topic);
    const out: number[] = [];
    for (let i = 0; i < count; i++)
      out.push(this.store(topic, { data: { n: log.length + 1 } }).seq);
    this.wake(topic);
    return out;
  }

  /**
   * Every token accepted so far counts as expired from now on, and every stream ends as at its
   * token's expiry.
   */
  expireAll(): void {
    for (const s of this.seen)
      if (s.token !== undefined && s.result === 'ok') this.spent.add(s.token);
    for (const l of [...this.live]) l.expire();
  }

  /** Sends `token_expiring` on every authenticated WebSocket now. */
  warnAll(): void {
    for (const ws of this.wss.clients) {
      ws.send(JSON.stringify({ op: 'token_expiring', expiresAt: Date.now() + this.expiryWarning }));
    }
  }

  private log(topic: string): TestEvent[] {
    let l = this.logs.get(topic);
    if (!l) this.logs.set(topic, (l = []));
    return l;
  }

  private store(
    topic: string,
    input: { data: unknown; key?: string },
  ): TestEvent & { duplicate?: boolean } {
    const k = input.key === undefined ? undefined : `${topic}\n${input.key}`;
    const dup = k === undefined ? undefined : this.keys.get(k);
    if (dup) return { ...dup, duplicate: true };
    const log = this.log(topic);
    const seq = log.length + 1;
    const ev: TestEvent = {
      topic,
      seq,
      id: `${topic}:e1:${seq}`,
      time: Date.now(),
      data: input.data,
    };
    if (input.key !== undefined) ev.key = input.key;
    log.push(ev);
    if (k !== undefined) this.keys.set(k, ev);
    return ev;
  }

  private wake(topic: string): void {
    for (const l of [...this.live]) if (l.topic === topic) l.push();
  }

  /** Verifies a token: signature, `exp`, not expired by the test. */
  private check(token: string | undefined): Check {
    if (!token) return { ok: false, code: 'unauthorized' };
    const parts = token.split('.');
    if (parts.length !== 3) return { ok: false, code: 'unauthorized' };
    const want = createHmac('sha256', this.secret).update(`${parts[0]}.${parts[1]}`).digest();
    const got = Buffer.from(parts[2]!, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) {
      return { ok: false, code: 'unauthorized' };
    }
    const p = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as {
      sub?: string;
      exp?: number;
      rill?: { subscribe?: string[] };
    };
    if (typeof p.exp !== 'number' || typeof p.sub !== 'string')
      return { ok: false, code: 'unauthorized' };
    if (this.spent.has(token) || p.exp * 1000 <= Date.now())
      return { ok: false, code: 'token_expired' };
    return { ok: true, id: { sub: p.sub, exp: p.exp * 1000, topics: p.rill?.subscribe } };
  }

  /** The token of a request: the Authorization header, else the `access_token` parameter. */
  private credential(
    req: http.IncomingMessage,
    q: URLSearchParams,
  ): { token?: string; via: Seen['via'] } {
    const h = req.headers.authorization;
    if (h !== undefined) {
      const m = /^Bearer (.+)$/.exec(h);
      return m ? { token: m[1]!, via: 'header' } : { via: 'header' };
    }
    const t = q.get('access_token');
    return t !== null ? { token: t, via: 'query' } : { via: 'none' };
  }

  private fail(res: http.ServerResponse, code: Code, message: string): void {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (ERRORS[code].status === 401) {
      headers['www-authenticate'] =
        code === 'unauthorized'
          ? 'Bearer realm="rill"'
          : 'Bearer realm="rill", error="invalid_token"';
    }
    res.writeHead(ERRORS[code].status, headers);
    res.end(JSON.stringify({ error: errorBody(code, message) }));
  }

  /** Authenticates a request (and records it); answers the refusal and returns undefined. */
  private auth(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    q: URLSearchParams,
    route: Seen['route'],
    cursor?: string,
  ): Identity | undefined {
    const { token, via } = this.credential(req, q);
    const c = this.check(token);
    this.seen.push({ route, via, token, result: c.ok ? 'ok' : c.code, cursor });
    if (c.ok) return c.id;
    this.fail(res, c.code, c.code === 'token_expired' ? 'The token has expired' : 'Invalid token');
    return undefined;
  }

  private allowed(id: Identity, topic: string): boolean {
    return id.topics === undefined || id.topics.includes(topic);
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const q = u.searchParams;
    const topicRoute = /^\/v1\/topics\/([^/]+)\/events$/.exec(u.pathname);
    const file = this.files.get(u.pathname);
    if (file) {
      res.writeHead(200, { 'content-type': file.type });
      res.end(file.body);
    } else if (u.pathname === '/v1/stream' && req.method === 'GET') {
      const cursor = q.get('lastEventId') ?? (req.headers['last-event-id'] as string | undefined);
      const id = this.auth(req, res, q, 'stream', cursor);
      if (id) this.stream(req, res, id, q.get('topics')!, this.start(q, cursor));
    } else if (u.pathname === '/v1/events' && req.method === 'GET') {
      const cursor = q.get('cursor') ?? undefined;
      const id = this.auth(req, res, q, 'poll', cursor);
      if (id)
        await this.poll(
          res,
          id,
          q.get('topics')!,
          this.start(q, cursor),
          Number(q.get('wait') ?? 0),
        );
    } else if (topicRoute && req.method === 'POST') {
      const body = await new Promise<string>((r) => {
        let s = '';
        req.setEncoding('utf8');
        req.on('data', (d: string) => (s += d));
        req.on('end', () => r(s));
      });
      if (!this.auth(req, res, q, 'publish')) return;
      const topic = decodeURIComponent(topicRoute[1]!);
      const input = JSON.parse(body) as
        { data: unknown; key?: string } | Array<{ data: unknown; key?: string }>;
      const stored = (Array.isArray(input) ? input : [input]).map((e) => this.store(topic, e));
      this.wake(topic);
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          topic,
          epoch: 'e1',
          events: stored.map((e) => ({
            seq: e.seq,
            id: e.id,
            time: e.time,
            duplicate: e.duplicate === true,
          })),
        }),
      );
    } else if (topicRoute && req.method === 'GET') {
      const id = this.auth(req, res, q, 'history');
      if (!id) return;
      const topic = decodeURIComponent(topicRoute[1]!);
      if (!this.allowed(id, topic))
        return this.fail(res, 'forbidden', `Not allowed to read ${topic}`);
      const log = this.log(topic);
      const after = Number(q.get('after') ?? 0);
      const events = log.slice(after, after + Number(q.get('limit') ?? 1000));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          topic,
          epoch: 'e1',
          firstSeq: 1,
          lastSeq: log.length,
          events,
          next: `${topic}:e1:${events.at(-1)?.seq ?? after}`,
          more: after + events.length < log.length,
        }),
      );
    } else {
      res.writeHead(404).end();
    }
  }

  /** The seq a stream starts after: the cursor's, else 0 for `from=earliest`, else the head. */
  private start(q: URLSearchParams, cursor: string | undefined): (topic: string) => number {
    return (topic) => {
      if (cursor) return Number(cursor.slice(cursor.lastIndexOf(':') + 1));
      return q.get('from') === 'earliest' ? 0 : this.log(topic).length;
    };
  }

  private stream(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    id: Identity,
    topic: string,
    start: (topic: string) => number,
  ): void {
    if (!this.allowed(id, topic))
      return this.fail(res, 'forbidden', `Not allowed to read ${topic}`);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    res.write(': ok\n\n');
    let at = start(topic);
    const end = (): void => {
      clearTimeout(timer);
      this.live.delete(l);
      res.end();
    };
    const expire = (): void => {
      res.write(
        `event: error\ndata: ${JSON.stringify(errorBody('token_expired', 'The token has expired'))}\n\n`,
      );
      end();
    };
    const l: Live = {
      topic,
      push: () => {
        const log = this.log(topic);
        let out = '';
        for (; at < log.length; at++)
          out += `id: ${log[at]!.id}\ndata: ${JSON.stringify(log[at])}\n\n`;
        if (out) res.write(out);
      },
      expire,
    };
    const timer = setTimeout(expire, id.exp - Date.now());
    this.live.add(l);
    req.once('close', end);
    l.push();
  }

  private async poll(
    res: http.ServerResponse,
    id: Identity,
    topic: string,
    start: (topic: string) => number,
    wait: number,
  ): Promise<void> {
    if (!this.allowed(id, topic))
      return this.fail(res, 'forbidden', `Not allowed to read ${topic}`);
    const after = start(topic);
    if (this.log(topic).length <= after && wait > 0) {
      // A wait never runs past the token's expiry: it ends refused as expired.
      const expired = await new Promise<boolean>((resolve) => {
        const done = (exp: boolean): void => {
          clearTimeout(timer);
          this.live.delete(l);
          resolve(exp);
        };
        const l: Live = { topic, push: () => done(false), expire: () => done(true) };
        const timer = setTimeout(
          () => done(Date.now() >= id.exp),
          Math.min(wait * 1000, id.exp - Date.now()),
        );
        this.live.add(l);
      });
      if (expired) return this.fail(res, 'token_expired', 'The token has expired');
    }
    const events = this.log(topic).slice(after, after + 1000);
    res.writeHead(200, { 'content-type': 'application/json', date: new Date().toUTCString() });
    res.end(JSON.stringify({ events, cursor: `${topic}:e1:${events.at(-1)?.seq ?? after}` }));
  }

  private socket(ws: WebSocket, req: http.IncomingMessage): void {
    const conn = ++this.conns;
    let id: Identity | undefined;
    let warnTimer: ReturnType<typeof setTimeout> | undefined;
    let expTimer: ReturnType<typeof setTimeout> | undefined;
    const subs = new Map<string, Live>();
    const send = (m: Record<string, unknown>): void => ws.send(JSON.stringify(m));
    const close = (code: number, reason: string): void => {
      this.wsCloses.push(code);
      ws.close(code, reason);
    };
    const expire = (): void => close(4006, 'token expired');
    const arm = (exp: number): void => {
      clearTimeout(warnTimer);
      clearTimeout(expTimer);
      warnTimer = setTimeout(
        () => send({ op: 'token_expiring', expiresAt: exp }),
        exp - this.expiryWarning - Date.now(),
      );
      expTimer = setTimeout(expire, exp - Date.now());
    };
    const forExpiry: Live = { topic: '', push: () => {}, expire };
    // The upgrade may carry the token itself.
    const pre = this.credential(req, new URL(req.url ?? '/', 'http://x').searchParams);
    if (pre.token !== undefined) {
      const c = this.check(pre.token);
      this.seen.push({
        route: 'ws-upgrade',
        via: pre.via,
        token: pre.token,
        result: c.ok ? 'ok' : c.code,
        conn,
      });
      if (!c.ok) return close(ERRORS[c.code].closeCode, c.code);
      id = c.id;
      arm(id.exp);
      this.live.add(forExpiry);
    }
    ws.on('close', () => {
      clearTimeout(warnTimer);
      clearTimeout(expTimer);
      this.live.delete(forExpiry);
      for (const l of subs.values()) this.live.delete(l);
    });
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      const reply = (code: Code, message: string, extra: Record<string, unknown> = {}): void =>
        send({ op: 'error', id: m.id, ...extra, error: errorBody(code, message) });
      if (m.op === 'auth') {
        const token = typeof m.token === 'string' ? m.token : undefined;
        const c = this.check(token);
        const sameSub = !c.ok || id === undefined || c.id.sub === id.sub;
        this.seen.push({
          route: 'ws-auth',
          via: 'op',
          token,
          result: !c.ok ? c.code : sameSub ? 'ok' : 'unauthorized',
          conn,
        });
        if (!c.ok || !sameSub) {
          const code = c.ok ? 'unauthorized' : c.code;
          reply(code, code === 'token_expired' ? 'The token has expired' : 'Invalid token');
          if (id === undefined) close(ERRORS[code].closeCode, code);
          return;
        }
        id = c.id;
        arm(id.exp);
        this.live.add(forExpiry);
        return send({ op: 'authed', id: m.id, sub: id.sub, expiresAt: id.exp });
      }
      if (id === undefined) {
        this.unauthenticatedOps++;
        reply('unauthorized', 'Authenticate first');
        return close(4524, 'unauthorized');
      }
      if (m.op === 'ping') return send({ op: 'pong', id: m.id });
      if (m.op === 'unsubscribe') {
        const l = subs.get(m.sub as string);
        if (l) this.live.delete(l);
        subs.delete(m.sub as string);
        return send({ op: 'unsubscribed', id: m.id, sub: m.sub });
      }
      if (m.op !== 'subscribe') return reply('unauthorized', 'unknown op in this test server');
      const topic = (m.topics as string[])[0]!;
      if (!this.allowed(id, topic)) return reply('forbidden', `Not allowed to read ${topic}`);
      const q = new URLSearchParams();
      if (typeof m.from === 'string') q.set('from', m.from);
      const cursor = typeof m.cursor === 'string' ? m.cursor : undefined;
      let at = this.start(q, cursor)(topic);
      const sub = `s${subs.size + 1}`;
      send({
        op: 'subscribed',
        id: m.id,
        sub,
        cursor: `${topic}:e1:${at}`,
        exact: true,
        heads: {},
      });
      this.seen.push({
        route: 'ws-subscribe',
        via: 'none',
        token: undefined,
        result: 'ok',
        cursor,
        conn,
      });
      const l: Live = {
        topic,
        push: () => {
          const log = this.log(topic);
          for (; at < log.length; at++) send({ op: 'event', sub, event: log[at] });
        },
        expire: () => {},
      };
      subs.set(sub, l);
      this.live.add(l);
      l.push();
    });
  }
}
