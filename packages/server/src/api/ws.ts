import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { RawData, ServerOptions } from 'ws';
import { WebSocket, WebSocketServer } from 'ws';
import type { Cursor, Position } from '../model/cursor.js';
import { encodeCursor } from '../model/cursor.js';
import type { TopicHead } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import type { EventInput } from '../model/event.js';
import { eventId, parseEventInput } from '../model/event.js';
import type { StartSpec, Subscription } from '../fanout/subscription.js';
import { assertTopic, isPattern } from '../model/topic.js';
import type { RequestId } from '../wire/ws.js';
import { wsErrorFrame } from '../wire/ws.js';
import { WsSink, WsWriter } from '../net/ws-sink.js';
import type { AppContext } from './app.js';
import { answerAndClose, serveAsHttp, tooManyHeaders } from '../net/connection.js';
import type { HostPolicy } from './host.js';
import { parseResumeCursor, parseStart, parseTopicsParam } from './stream.js';

/** Where the WebSocket endpoint lives. */
export const WS_PATH = '/v1/ws';
/** The subprotocol of this version of the JSON protocol. */
export const WS_SUBPROTOCOL = 'rill.v1';
/**
 * Most frames one message may arrive in. `maxPayload` bounds the reassembled size; this bounds the
 * work and the per-fragment bookkeeping of a message cut into tiny (or empty) pieces. Past it `ws`
 * closes with 1008.
 */
export const WS_MAX_FRAGMENTS = 1024;
/**
 * Most requests (`subscribe`, `publish`) one socket may have in progress. Past it the server
 * stops reading the socket until one completes: TCP pushes back on the client instead of the
 * server holding an unbounded number of pending appends.
 */
export const WS_MAX_INFLIGHT = 64;
/** How long a closing handshake may take before the socket is destroyed. */
export const WS_CLOSE_TIMEOUT_MS = 5000;

/** Margin behind "now" for a start cursor's watermark, as in the hub's cursors. */
const WATERMARK_MARGIN_MS = 1000;
const MAX_ID_LENGTH = 256;
const KEY_RE = /^[+/0-9A-Za-z]{22}==$/;

const FIELDS: Record<string, ReadonlySet<string>> = {
  subscribe: new Set(['op', 'id', 'topics', 'from', 'since', 'cursor']),
  unsubscribe: new Set(['op', 'id', 'sub']),
  publish: new Set(['op', 'id', 'topic', 'type', 'key', 'data']),
  ping: new Set(['op', 'id']),
};

/**
 * Whether a browser page from `origin` may open a WebSocket here: no `Origin` (not a browser), the
 * same host and port as the request's `Host`, an origin listed in `allowed`, or `*` there. This is
 * what stops cross-site WebSocket hijacking: browsers send cookies with a WebSocket handshake from
 * any page, and the same-origin policy does not apply to WebSockets. "Same as `Host`" is only
 * meaningful for a `Host` this server answers for: a page on a rebound name has an `Origin` equal
 * to its `Host`, so callers check the `Host` first ({@link HostPolicy}).
 */
export function isOriginAllowed(
  origin: string | undefined,
  host: string | undefined,
  allowed: readonly string[],
): boolean {
  if (origin === undefined) return true;
  if (allowed.includes('*')) return true;
  const o = origin.trim().toLowerCase().replace(/\/+$/, '');
  if (allowed.some((a) => a.trim().toLowerCase().replace(/\/+$/, '') === o)) return true;
  if (host === undefined || o === 'null') return false;
  try {
    const u = new URL(o);
    const h = new URL(`http://${host.trim().toLowerCase()}`);
    const defaultPort = u.protocol === 'https:' || u.protocol === 'wss:' ? '443' : '80';
    return u.hostname === h.hostname && (u.port || defaultPort) === (h.port || defaultPort);
  } catch {
    return false;
  }
}

/** The subprotocols a client offered, in its order. */
function offeredProtocols(header: string | undefined): string[] {
  if (header === undefined) return [];
  return header
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
}

/** Refuses a handshake: an HTTP answer with the catalogue's body, then the connection closes. */
const rejectUpgrade = answerAndClose;

/**
 * The WebSocket endpoint (`GET /v1/ws`, subprotocol `rill.v1`, docs/protocol.md § WebSocket) on the
 * HTTP server's `upgrade` event: `ws` in `noServer` mode, every handshake checked here first (path,
 * method, header count, version, origin, subprotocol) so that refusals carry the catalogue's JSON
 * body. Registers its own shutdown (close every socket with 4001) and one shared ping sweep.
 */
export function wsRoutes(app: FastifyInstance, ctx: AppContext, hosts: HostPolicy): void {
  const cfg = ctx.config.ws;
  const log = app.log;
  const sessions = new Set<WsSession>();
  const options: ServerOptions & { closeTimeout: number } = {
    noServer: true,
    clientTracking: false,
    maxPayload: cfg.maxPayload,
    maxFragments: WS_MAX_FRAGMENTS,
    // Chunks wait in ws's receiver only while a frame is incomplete. A legitimate peer delivers a
    // maxPayload frame in reads of a few hundred bytes at the very least; a peer trickling one
    // byte per TCP segment would otherwise pin ws's default of 262,144 small buffers.
    maxBufferedChunks: Math.max(1024, Math.ceil(cfg.maxPayload / 512)),
    closeTimeout: WS_CLOSE_TIMEOUT_MS,
    // ws inflates only up to maxPayload and closes with 1009 past it: no decompression bomb.
    // zlib's defaults would hold ~300 KB per socket; a 16 KiB window and memLevel 7 hold ~80 KB.
    perMessageDeflate: cfg.perMessageDeflate
      ? {
          threshold: 1024,
          concurrencyLimit: 10,
          serverMaxWindowBits: 12,
          zlibDeflateOptions: { memLevel: 7 },
        }
      : false,
    handleProtocols: (protocols) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  };
  const wss = new WebSocketServer(options);
  // Handshake problems ws finds itself (bad Sec-WebSocket-Protocol or -Extensions syntax).
  wss.on('wsClientError', (err, socket) => {
    rejectUpgrade(socket, new RillError('invalid_parameter', err.message));
  });

  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (!isWebSocketUpgrade(req)) {
      serveAsHttp(app.server, req, socket, head);
      return;
    }
    socket.on('error', () => socket.destroy());
    const err = checkHandshake(req, ctx, hosts);
    if (err) {
      rejectUpgrade(socket, err.error, err);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session = new WsSession(ws, ctx, log, () => sessions.delete(session));
      sessions.add(session);
      if (ctx.state.closing) session.close(new RillError('shutting_down'));
    });
  });

  // A plain GET (no Upgrade) is a client that does not speak WebSocket: tell it so.
  app.get(WS_PATH, async (_req, reply) => {
    const e = new RillError('upgrade_required', 'GET /v1/ws is a WebSocket endpoint');
    return reply
      .code(426)
      .header('upgrade', 'websocket')
      .header('connection', 'Upgrade')
      .header('sec-websocket-version', '13')
      .send(e.toJSON());
  });

  // One sweep for every socket: ping the ones due (first ping jittered per socket, so a fleet of
  // clients reconnecting together does not ping in lockstep), terminate those whose pong is late.
  const tick = Math.max(20, Math.floor(Math.min(cfg.pingInterval, cfg.pingTimeout) / 4));
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const s of sessions) s.heartbeat(now, cfg.pingInterval, cfg.pingTimeout);
  }, tick);
  sweep.unref();

  app.addHook('preClose', (done) => {
    const err = new RillError('shutting_down');
    for (const s of sessions) s.close(err);
    done();
  });
  app.addHook('onClose', (_instance, done) => {
    clearInterval(sweep);
    done();
  });
}

function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade?.toLowerCase();
  return upgrade !== undefined && upgrade.split(',').some((u) => u.trim() === 'websocket');
}

/**
 * Why a `Upgrade: websocket` handshake is refused, or null when it may proceed to ws. The `Host`
 * comes first: the same-origin rule of the `Origin` check compares with it, so it must be a name
 * this server answers for, not a rebound attacker's name.
 */
function checkHandshake(
  req: IncomingMessage,
  ctx: AppContext,
  hosts: HostPolicy,
): { error: RillError; status?: number; headers?: Record<string, string> } | null {
  const hostError = hosts.check(req.headers.host, req.httpVersion);
  if (hostError) return { error: hostError };
  const path = (req.url ?? '').split('?')[0] ?? '';
  if (path !== WS_PATH && path !== `${WS_PATH}/`) {
    return { error: new RillError('not_found', `No WebSocket endpoint at ${path.slice(0, 200)}`) };
  }
  if (req.method !== 'GET') {
    return { error: new RillError('method_not_allowed', 'A WebSocket handshake is a GET') };
  }
  // Node keeps one header past the limit (see http.maxHeadersCount in app.ts) so that too many
  // is seen, instead of the rest being dropped silently.
  const limit = ctx.config.http.maxHeadersCount;
  if (req.rawHeaders.length / 2 > limit) {
    return { status: 431, error: tooManyHeaders(limit) };
  }
  if (req.headers['sec-websocket-version']?.trim() !== '13') {
    return {
      error: new RillError('upgrade_required', 'Only WebSocket version 13 (RFC 6455) is supported'),
      headers: { 'Sec-WebSocket-Version': '13' },
    };
  }
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !KEY_RE.test(key.trim())) {
    return { error: new RillError('invalid_parameter', 'Missing or invalid Sec-WebSocket-Key') };
  }
  if (!isOriginAllowed(req.headers.origin, req.headers.host, ctx.config.http.allowedOrigins)) {
    const origin = String(req.headers.origin).slice(0, 200);
    return { error: new RillError('forbidden_origin', `Origin ${origin} not allowed`) };
  }
  const offered = offeredProtocols(req.headers['sec-websocket-protocol']);
  if (offered.length > 0 && !offered.includes(WS_SUBPROTOCOL)) {
    return {
      error: new RillError(
        'invalid_parameter',
        `Unsupported subprotocol: offer ${WS_SUBPROTOCOL}, or none for the same`,
      ),
    };
  }
  if (ctx.state.closing) {
    return { error: new RillError('shutting_down'), headers: { 'Retry-After': '1' } };
  }
  const full = ctx.budget?.refuseStream();
  if (full) return { error: full, headers: { 'Retry-After': '1' } };
  return null;
}

interface SubEntry {
  sink: WsSink;
  /** Null until the hub has attached it. */
  sub: Subscription | null;
  /** An `unsubscribe` that arrived while the subscription was being set up. */
  cancelId?: RequestId;
}

/** Bits of why reading from the socket is paused. */
const PAUSE_INFLIGHT = 1;
const PAUSE_BACKLOG = 2;

/**
 * One WebSocket connection: parses requests, owns its subscriptions (each a hub subscription
 * feeding a {@link WsSink} over the shared {@link WsWriter}), answers, and keeps the peer honest
 * (pings, backpressure on what it sends us).
 */
class WsSession {
  private readonly writer: WsWriter;
  private readonly subs = new Map<string, SubEntry>();
  private nextSub = 1;
  private inflight = 0;
  private paused = 0;
  private closed = false;
  private pingSentAt = 0;
  private nextPingAt: number;

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: AppContext,
    private readonly log: FastifyBaseLogger,
    private readonly onGone: () => void,
  ) {
    this.writer = new WsWriter(ws);
    const interval = ctx.config.ws.pingInterval;
    this.nextPingAt = Date.now() + interval / 2 + Math.random() * (interval / 2);
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => {
      this.pingSentAt = 0;
    });
    // Protocol violations (1002, 1007, 1008, 1009): ws has already sent the close frame.
    ws.on('error', (err) => this.log.debug({ err }, 'websocket error'));
    ws.on('close', () => this.onClose());
  }

  /** Called by the shared sweep. */
  heartbeat(now: number, interval: number, timeout: number): void {
    if (this.closed) return;
    if (this.pingSentAt !== 0) {
      if (now - this.pingSentAt >= timeout) {
        // Best effort: a dead peer never sees the close frame, but a merely slow one may.
        this.close(new RillError('ping_timeout'));
        this.ws.terminate();
      }
    } else if (now >= this.nextPingAt) {
      this.pingSentAt = now;
      this.nextPingAt = now + interval;
      if (this.ws.readyState === WebSocket.OPEN) this.ws.ping();
    }
  }

  /** Closes the socket with the error's close code (shutdown: 4001). */
  close(err: RillError): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(err.closeCode, err.code);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.subs.values()) {
      entry.sink.detach();
      if (entry.sub) this.ctx.hub.unsubscribe(entry.sub);
    }
    this.subs.clear();
    this.onGone();
  }

  private send(text: string): void {
    this.writer.send(text);
    // Replies are small, but a client that pipelines requests and never reads could pile them up:
    // stop reading its requests until it has taken what we sent.
    if (
      (this.paused & PAUSE_BACKLOG) === 0 &&
      this.writer.bufferedBytes() > this.ctx.config.limits.maxSubscriberBufferBytes
    ) {
      this.pause(PAUSE_BACKLOG);
      void this.writer.waitFlushed().then(() => this.resume(PAUSE_BACKLOG));
    }
  }

  private sendError(err: RillError, ref: { id?: RequestId; sub?: string } = {}): void {
    this.send(wsErrorFrame(err, ref));
  }

  private pause(bit: number): void {
    if (this.paused === 0 && !this.closed) this.ws.pause();
    this.paused |= bit;
  }

  private resume(bit: number): void {
    if (this.paused === 0) return;
    this.paused &= ~bit;
    if (this.paused === 0 && !this.closed) this.ws.resume();
  }

  private begin(): void {
    if (++this.inflight >= WS_MAX_INFLIGHT) this.pause(PAUSE_INFLIGHT);
  }

  private finish(): void {
    if (--this.inflight < WS_MAX_INFLIGHT) this.resume(PAUSE_INFLIGHT);
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    if (this.closed) return;
    if (isBinary) {
      this.sendError(
        new RillError('invalid_message', 'Binary messages are not supported: send JSON text'),
      );
      return;
    }
    const text = Buffer.isBuffer(data)
      ? data.toString('utf8')
      : Array.isArray(data)
        ? Buffer.concat(data).toString('utf8')
        : Buffer.from(data).toString('utf8');
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      this.sendError(new RillError('invalid_message', 'Message is not valid JSON'));
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      this.sendError(
        new RillError('invalid_message', 'A message must be a JSON object with "op" and "id"'),
      );
      return;
    }
    const m = msg as Record<string, unknown>;
    const rawId = m.id;
    let id: RequestId | undefined;
    if (
      (typeof rawId === 'string' && rawId.length > 0 && rawId.length <= MAX_ID_LENGTH) ||
      (typeof rawId === 'number' && Number.isFinite(rawId))
    ) {
      id = rawId;
    }
    try {
      if (typeof m.op !== 'string') {
        throw new RillError('invalid_message', 'A message must have an "op" string');
      }
      const allowed = FIELDS[m.op];
      if (!allowed) {
        throw new RillError(
          'unknown_op',
          `Unknown op ${JSON.stringify(m.op.slice(0, 64))}: use subscribe, unsubscribe, publish or ping`,
        );
      }
      if (id === undefined) {
        throw new RillError(
          'invalid_message',
          `"id" is required: a string of 1-${MAX_ID_LENGTH} characters or a number, echoed in the reply`,
        );
      }
      for (const k of Object.keys(m)) {
        if (!allowed.has(k)) {
          throw new RillError(
            'invalid_message',
            `Unknown field ${JSON.stringify(k.slice(0, 64))} in ${m.op}: allowed are ${[...allowed].join(', ')}`,
          );
        }
      }
      switch (m.op) {
        case 'subscribe':
          this.subscribe(id, m);
          break;
        case 'unsubscribe':
          this.unsubscribe(id, m);
          break;
        case 'publish':
          this.publish(id, m);
          break;
        case 'ping':
          this.send(`{"op":"pong","id":${JSON.stringify(id)}}`);
          break;
      }
    } catch (err) {
      this.sendError(this.toError(err), id === undefined ? {} : { id });
    }
  }

  private toError(err: unknown): RillError {
    if (err instanceof RillError) return err;
    this.log.error({ err }, 'websocket request failed');
    return new RillError('internal', 'Internal error', { cause: err });
  }

  // ---- subscribe ----

  /** Validates synchronously (errors answer the request), then sets up in the background. */
  private subscribe(id: RequestId, m: Record<string, unknown>): void {
    const { limits } = this.ctx.config;
    if (
      !Array.isArray(m.topics) ||
      !(m.topics as unknown[]).every((t): t is string => typeof t === 'string')
    ) {
      throw new RillError(
        'invalid_message',
        '"topics" must be an array of topic names or patterns',
      );
    }
    const patterns = parseTopicsParam(m.topics as string[], limits.maxPatternsPerSubscription);
    const start = parseStart({
      from: startParam(m.from, 'from'),
      since: startParam(m.since, 'since'),
    });
    if (m.cursor !== undefined && typeof m.cursor !== 'string') {
      throw new RillError('invalid_message', '"cursor" must be a string');
    }
    const cursor = parseResumeCursor(undefined, m.cursor, limits.maxCursorLength);
    const max = this.ctx.config.ws.maxSubscriptions;
    if (this.subs.size >= max) {
      throw new RillError('too_many_subscriptions', `At most ${max} subscriptions per connection`, {
        details: { limit: max },
      });
    }
    if (this.ctx.state.closing) throw new RillError('shutting_down');

    const subId = `s${this.nextSub++}`;
    const entry: SubEntry = {
      sink: new WsSink(this.writer, subId, (sink) => {
        if (this.subs.get(subId)?.sink === sink) this.subs.delete(subId);
      }),
      sub: null,
    };
    this.subs.set(subId, entry);
    this.begin();
    this.setUp(id, subId, entry, patterns, start, cursor)
      .catch((err: unknown) => {
        entry.sink.detach();
        if (entry.sub) this.ctx.hub.unsubscribe(entry.sub);
        if (this.subs.get(subId) === entry) this.subs.delete(subId);
        const e =
          err instanceof RillError
            ? err
            : new RillError('engine_unavailable', 'Cannot start the subscription', { cause: err });
        if (this.closed) return;
        this.sendError(e, { id });
        if (entry.cancelId !== undefined) {
          this.send(JSON.stringify({ op: 'unsubscribed', id: entry.cancelId, sub: subId }));
        }
      })
      .finally(() => this.finish());
  }

  private async setUp(
    id: RequestId,
    subId: string,
    entry: SubEntry,
    patterns: string[],
    start: StartSpec,
    cursor: Cursor | undefined,
  ): Promise<void> {
    const { hub, engine } = this.ctx;
    const t0 = Date.now();
    // Heads of the plain topics are read before the hub attaches them: a start position taken from
    // them can only be at or before where the subscription really starts, never past an event it
    // will deliver.
    const plain = patterns.filter((p) => !isPattern(p));
    const before = new Map<string, TopicHead | null>();
    await Promise.all(plain.map(async (t) => before.set(t, await engine.head(t))));
    if (this.closed) {
      this.subs.delete(subId);
      return;
    }

    const sub = await hub.subscribe(entry.sink, {
      patterns,
      start,
      ...(cursor ? { cursor } : {}),
    });
    entry.sub = sub;
    if (this.closed || entry.sink.isEnded) {
      hub.unsubscribe(sub);
      const failure = entry.sink.failure;
      if (failure) throw failure;
      return;
    }

    const topics = [...sub.states.keys()];
    const heads = new Map(before);
    await Promise.all(
      topics.filter((t) => !heads.has(t)).map(async (t) => heads.set(t, await engine.head(t))),
    );
    if (this.closed || entry.sink.isEnded) {
      hub.unsubscribe(sub);
      const failure = entry.sink.failure;
      if (failure) throw failure;
      return;
    }

    const headsJson: Record<string, { epoch: string; firstSeq: number; lastSeq: number }> =
      Object.create(null) as Record<string, { epoch: string; firstSeq: number; lastSeq: number }>;
    for (const t of topics) {
      const h = heads.get(t);
      if (h) headsJson[t] = { epoch: h.epoch, firstSeq: h.firstSeq, lastSeq: h.lastSeq };
    }
    const startAt = startCursor({
      topics,
      before,
      start,
      cursor,
      pattern: plain.length !== patterns.length,
      t0,
      maxTopics: this.ctx.config.limits.maxCursorTopics,
    });
    this.send(
      JSON.stringify({
        op: 'subscribed',
        id,
        sub: subId,
        cursor: startAt,
        exact: resumeIsExact(topics, heads, start, cursor),
        heads: headsJson,
      }),
    );
    entry.sink.open();
    if (entry.cancelId !== undefined) this.drop(entry.cancelId, subId, entry);
  }

  // ---- unsubscribe ----

  private unsubscribe(id: RequestId, m: Record<string, unknown>): void {
    if (typeof m.sub !== 'string') {
      throw new RillError('invalid_message', '"sub" must be the id a subscribed reply gave');
    }
    const subId = m.sub;
    const entry = this.subs.get(subId);
    if (!entry || entry.cancelId !== undefined) {
      throw new RillError(
        'subscription_not_found',
        `No subscription ${JSON.stringify(subId.slice(0, 64))} on this connection`,
      );
    }
    // Still being set up: answer once `subscribed` is out, so the replies keep their order.
    if (entry.sub === null) entry.cancelId = id;
    else this.drop(id, subId, entry);
  }

  private drop(id: RequestId, subId: string, entry: SubEntry): void {
    entry.sink.detach();
    if (entry.sub) this.ctx.hub.unsubscribe(entry.sub);
    this.subs.delete(subId);
    this.send(JSON.stringify({ op: 'unsubscribed', id, sub: subId }));
  }

  // ---- publish ----

  private publish(id: RequestId, m: Record<string, unknown>): void {
    if (typeof m.topic !== 'string') {
      throw new RillError('invalid_message', '"topic" must be a topic name');
    }
    const topic = assertTopic(m.topic);
    const raw: Record<string, unknown> = {};
    if (m.type !== undefined) raw.type = m.type;
    if (m.key !== undefined) raw.key = m.key;
    if ('data' in m) raw.data = m.data;
    const input: EventInput = parseEventInput(raw, this.ctx.config.limits);
    if (this.ctx.state.closing) throw new RillError('shutting_down');
    this.begin();
    this.ctx.engine
      .append(topic, [input])
      .then(
        (results) => {
          const { event, duplicate } = results[0]!;
          this.send(
            `{"op":"ack","id":${JSON.stringify(id)},"topic":"${topic}","seq":${event.seq},` +
              `"eventId":"${eventId(event)}","time":${event.time},"duplicate":${duplicate}}`,
          );
        },
        (err: unknown) => {
          const e =
            err instanceof RillError
              ? err
              : new RillError('engine_unavailable', 'The event was not stored', { cause: err });
          if (e.code === 'engine_unavailable') this.log.warn({ err }, 'websocket publish failed');
          this.sendError(e, { id });
        },
      )
      .finally(() => this.finish());
  }
}

/** `from`/`since` as the query-string text parseStart reads; numbers must be integers. */
function startParam(v: unknown, name: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return String(v);
  throw new RillError('invalid_parameter', `"${name}" must be a string or a non-negative integer`);
}

/**
 * Whether the subscription resumes exactly where asked: every topic the cursor (or a `since=<seq>`
 * start) positions exists in the same epoch with the position inside its retained range
 * (`firstSeq - 1 <= seq <= lastSeq`). False means a `reset` notice will follow for some topic.
 */
export function resumeIsExact(
  topics: readonly string[],
  heads: ReadonlyMap<string, TopicHead | null>,
  start: StartSpec,
  cursor: Cursor | undefined,
): boolean {
  for (const t of topics) {
    const head = heads.get(t) ?? null;
    const pos = cursor?.positions.get(t);
    if (pos) {
      if (!head || head.epoch !== pos.epoch) return false;
      if (pos.seq < head.firstSeq - 1 || pos.seq > head.lastSeq) return false;
    } else if (start.kind === 'after' && cursor?.watermark === undefined && head) {
      if (start.seq < head.firstSeq - 1 || start.seq > head.lastSeq) return false;
    }
  }
  return true;
}

/**
 * The cursor a client resumes from if it goes away before this subscription delivers anything:
 * never past an event the subscription will deliver (at-least-once), as close as the facts at
 * hand allow. Topics the cursor lists keep their position; plain topics read before the hub
 * attached them get the position their start spec gives; the rest are covered by a watermark no
 * later than the earliest event they can start from (0 when that is unknown).
 */
export function startCursor(o: {
  topics: readonly string[];
  before: ReadonlyMap<string, TopicHead | null>;
  start: StartSpec;
  cursor: Cursor | undefined;
  pattern: boolean;
  t0: number;
  maxTopics: number;
}): string {
  const { start, cursor } = o;
  const unlistedFloor =
    cursor?.watermark !== undefined
      ? cursor.watermark
      : start.kind === 'now'
        ? o.t0 - WATERMARK_MARGIN_MS
        : start.kind === 'time'
          ? start.time
          : 0;
  const listed: Array<{ topic: string; pos: Position; floor: number }> = [];
  let watermark: number | undefined = o.pattern ? unlistedFloor : undefined;
  for (const topic of o.topics) {
    const given = cursor?.positions.get(topic);
    if (given) {
      listed.push({ topic, pos: given, floor: 0 });
      continue;
    }
    const head = o.before.get(topic);
    if (head && cursor?.watermark === undefined) {
      if (start.kind === 'now') {
        listed.push({
          topic,
          pos: { epoch: head.epoch, seq: head.lastSeq },
          floor: o.t0 - WATERMARK_MARGIN_MS,
        });
        continue;
      }
      if (start.kind === 'earliest') {
        listed.push({ topic, pos: { epoch: head.epoch, seq: head.firstSeq - 1 }, floor: 0 });
        continue;
      }
      if (start.kind === 'after') {
        listed.push({ topic, pos: { epoch: head.epoch, seq: start.seq }, floor: 0 });
        continue;
      }
    }
    watermark = Math.min(watermark ?? unlistedFloor, unlistedFloor);
  }
  // Keep the cursor within what a client may send back; the dropped ones fall to the watermark.
  for (const dropped of listed.splice(o.maxTopics)) {
    watermark = Math.min(watermark ?? dropped.floor, dropped.floor);
  }
  const positions = new Map<string, Position>(listed.map((l) => [l.topic, l.pos]));
  return encodeCursor({
    positions,
    ...(watermark === undefined ? {} : { watermark: Math.max(0, watermark) }),
  });
}
