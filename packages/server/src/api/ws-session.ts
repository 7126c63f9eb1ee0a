import type { Logger } from 'pino';
import type { RawData } from 'ws';
import { WebSocket } from 'ws';
import type { Identity } from '../auth/index.js';
import type { Lease, Subject } from '../limits/index.js';
import type { Cursor } from '../model/cursor.js';
import type { TopicHead } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import { eventId } from '../model/event.js';
import { isPattern } from '../model/topic.js';
import { resumeIsExact, startCursor } from '../fanout/resume.js';
import type { StartSpec, Subscription } from '../fanout/subscription.js';
import type {
  RequestId,
  WsAuth,
  WsPresence,
  WsPublish,
  WsSubscribe,
  WsUnsubscribe,
} from '../wire/ws-request.js';
import { parseWsRequest } from '../wire/ws-request.js';
import { WsSink, WsWriter } from '../net/ws-sink.js';
import { wsPresenceFrame } from '../wire/presence.js';
import { wsErrorFrame } from '../wire/ws.js';
import { checkSubscribe, forbidden } from './authn.js';
import { ephemeralOf } from './publish.js';
import type { AppContext } from './context.js';
import { lazyChildLoggerFactory } from './lazy-logger.js';
import { enterPresence, presenceCount, presencePage } from './presence.js';
import { logStreamEnd, logStreamOpen } from './stream-log.js';
import { endSpan, startPublishSpan, tracedAppend } from './tracing.js';
import type { ConnectionState } from './open-streams.js';
import { stored } from './publish.js';
import { WsCredentials, type SessionStart } from './ws-auth.js';
import { HookSession, summarize, type HookClientInfo } from '../hooks/index.js';

export type { SessionStart } from './ws-auth.js';

/**
 * Most requests (`subscribe`, `publish`) one socket may have in progress. Past it the server
 * stops reading the socket until one completes: TCP pushes back on the client instead of the
 * server holding an unbounded number of pending appends.
 */
export const WS_MAX_INFLIGHT = 64;

interface SubEntry {
  sink: WsSink;
  /** What it subscribed to: checked again when the connection's grants change. */
  patterns: readonly string[];
  /** Null until the hub has attached it. */
  sub: Subscription | null;
  /** An `unsubscribe` that arrived while the subscription was being set up. */
  cancelId?: RequestId;
  /** Its place in the `subscriptions` limit, given back when it ends. */
  lease: Lease | null;
  /** Ends its presence (its own on each topic, and the joins and leaves it hears). */
  leavePresence?: () => void;
}

/** Where a connection comes from and its place in the `connections` limit. */
export interface SessionLimits {
  address: string | null;
  lease: Lease | null;
}

/** Bits of why reading from the socket is paused. */
const PAUSE_INFLIGHT = 1;
const PAUSE_BACKLOG = 2;
const PAUSE_AUTH = 4;

/** A message that arrived while an `auth` was being checked: handled after it, in order. */
interface Queued {
  data: RawData;
  isBinary: boolean;
}

/**
 * One `rill.v1` WebSocket connection, once the handshake is done (`ws-upgrade.ts`): reads requests
 * ({@link parseWsRequest}), owns its subscriptions (each a hub subscription feeding a
 * {@link WsSink} over the shared {@link WsWriter}), answers, and keeps the peer honest (pings,
 * backpressure on what it sends us).
 */
export class WsSession {
  private readonly writer: WsWriter;
  private readonly subs = new Map<string, SubEntry>();
  private nextSub = 1;
  private inflight = 0;
  private paused = 0;
  private closed = false;
  private pingSentAt = 0;
  private nextPingAt: number;
  private readonly credentials: WsCredentials;
  /** Set while an `auth` is being checked: the messages behind it wait here. */
  private queue: Queued[] | null = null;
  /** When the connection opened. */
  readonly startedAt = Date.now();
  /** Events and bytes sent by the subscriptions that ended; the open ones' are added at close. */
  private sentEvents = 0;
  private sentBytes = 0;
  private readonly counted = new WeakSet<Subscription>();
  private fellBehind = 0;
  /** What it subscribed to (bounded: the first ones, for the end line). */
  private readonly topics: string[] = [];
  private topicCount = 0;
  /** Why the server closed it, when it did. */
  private endReason: string | undefined;
  /** This connection's logger: `reqId` on every line, a real child only once a line is written. */
  private readonly log: Logger;
  /** Who the connection's requests count for, for the identity they were computed for. */
  private limitSubjects: { identity: Identity; subjects: readonly Subject[] } | null = null;
  /** Why the server closed the socket (a catalogue code), for the closed-connections counter. */
  private closeReason: string | null = null;
  /** The last error sent as a message (not counted again when the socket closes with it). */
  private lastError: RillError | null = null;
  /** Where it comes from, as the backend hooks are told. */
  private readonly hookClient: HookClientInfo;
  /** The subscribe hook's decisions on this connection, per topic or pattern. */
  private readonly hookSession = new HookSession();

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: AppContext,
    private readonly wsLog: Logger,
    /** The connection's id (`reqId` in the log). */
    readonly id: string,
    private readonly onGone: () => void,
    start: SessionStart,
    private readonly limits: SessionLimits = { address: null, lease: null },
    connection: { id: string; address: string; hookClient: HookClientInfo },
  ) {
    this.log = lazyChildLoggerFactory(wsLog, { reqId: id }, {});
    this.hookClient = connection.hookClient;
    const meter = ctx.obs?.meters.transports.ws ?? null;
    this.writer = new WsWriter(ws, meter);
    if (meter) meter.opened++;
    this.credentials = new WsCredentials(
      ctx,
      {
        send: (text) => this.send(text),
        close: (err, why) => this.close(err, why),
        hookClient: connection.hookClient,
        connection: {
          id: connection.id,
          address: connection.address,
          transport: 'ws',
          openedAt: Date.now(),
          state: () => this.state(),
        },
      },
      start,
    );
    const interval = ctx.config.ws.pingInterval;
    this.nextPingAt = Date.now() + interval / 2 + Math.random() * (interval / 2);
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => {
      this.pingSentAt = 0;
    });
    // Protocol violations (1002, 1007, 1008, 1009): ws has already sent the close frame.
    ws.on('error', (err) => this.log.debug({ err }, 'websocket error'));
    ws.on('close', (code) => this.onClose(code));
    logStreamOpen(wsLog, id, 'ws', []);
  }

  /** Called by the shared sweep. */
  heartbeat(now: number, interval: number, timeout: number): void {
    if (this.closed) return;
    if (this.pingSentAt !== 0) {
      if (now - this.pingSentAt >= timeout) {
        // Best effort: a dead peer never sees the close frame, but a merely slow one may.
        this.close(new RillError('ping_timeout'));
        this.endReason ??= 'ping_timeout';
        this.ws.terminate();
      }
    } else if (now >= this.nextPingAt) {
      this.pingSentAt = now;
      this.nextPingAt = now + interval;
      if (this.ws.readyState === WebSocket.OPEN) this.ws.ping();
    }
  }

  /** What the connections listing shows: every subscription's patterns, the socket's backlog. */
  private state(): ConnectionState {
    const patterns: string[] = [];
    let topics = 0;
    let live = true;
    for (const e of this.subs.values()) {
      patterns.push(...e.patterns);
      topics += e.sub?.states.size ?? 0;
      if (!e.sub || e.sub.behind) live = false;
    }
    // Each subscription's count includes the socket's backlog, shared by all: counted once.
    const socket = this.writer.bufferedBytes();
    let bufferedBytes = socket;
    for (const e of this.subs.values()) bufferedBytes += e.sub ? e.sub.bufferedBytes() - socket : 0;
    return { patterns, topics, bufferedBytes, live };
  }

  /**
   * Closes the socket with the error's close code (shutdown: 4001); the end line's reason is
   * `why`, else the error's code.
   */
  close(err: RillError, why?: string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.endReason ??= why ?? err.code;
    this.closeReason ??= err.code;
    const meters = this.ctx.obs?.meters;
    if (meters) {
      meters.closeCode(err.closeCode);
      // Counted once when its error message went out just before.
      if (err !== this.lastError) meters.error('ws', err);
    }
    this.ws.close(err.closeCode, err.code);
  }

  private onClose(code: number): void {
    if (this.closed) return;
    this.closed = true;
    this.credentials.dispose();
    this.limits.lease?.release();
    this.queue = null;
    for (const entry of this.subs.values()) {
      entry.lease?.release();
      entry.sink.detach();
      entry.leavePresence?.();
      if (entry.sub) {
        this.ctx.hub.unsubscribe(entry.sub);
        this.count(entry.sub);
      }
    }
    this.subs.clear();
    this.writer.meter?.close(this.closeReason ?? 'client');
    this.onGone();
    logStreamEnd(this.wsLog, this.id, {
      transport: 'ws',
      topics: this.topics,
      topicCount: this.topicCount,
      startedAt: this.startedAt,
      events: this.sentEvents,
      bytes: this.sentBytes,
      reason: this.endReason ?? closeReason(code),
      fellBehind: this.fellBehind,
      closeCode: code,
    });
  }

  /** Adds what an ended subscription sent to the connection's totals (once per subscription). */
  private count(sub: Subscription): void {
    // The bytes are the sink's running total: added once, the first time the subscription ends.
    if (!this.counted.has(sub)) {
      this.counted.add(sub);
      this.sentBytes += sub.sentBytes;
    }
    this.sentEvents += sub.sentEvents;
    this.fellBehind += sub.fellBehind;
    sub.sentEvents = 0;
    sub.fellBehind = 0;
  }

  /** Notes what a subscription asked for, for the end line (the first ten patterns, and a count). */
  private noteTopics(patterns: readonly string[]): void {
    for (const p of patterns) {
      this.topicCount++;
      if (this.topics.length < 10 && !this.topics.includes(p)) this.topics.push(p);
    }
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
    this.ctx.obs?.meters.error('ws', err);
    this.lastError = err;
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
    if (this.queue !== null) {
      // Behind an `auth` being checked: a client may send `auth` and `subscribe` without waiting.
      // Reading pauses, so at most what had arrived with it queues.
      this.queue.push({ data, isBinary });
      this.pause(PAUSE_AUTH);
      return;
    }
    this.handle(data, isBinary);
  }

  private handle(data: RawData, isBinary: boolean): void {
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
    const req = parseWsRequest(text, this.ctx.config.limits);
    const bytes = Buffer.isBuffer(data) ? data.length : text.length;
    if ('error' in req) {
      if (req.error.code === 'internal') {
        this.log.error({ err: req.error.cause }, 'websocket request failed');
      }
      this.sendError(req.error, req.id === undefined ? {} : { id: req.id });
      return;
    }
    try {
      if (req.op === 'auth') {
        this.authenticate(req);
        return;
      }
      this.credentials.require();
      switch (req.op) {
        case 'subscribe':
          this.subscribe(req);
          break;
        case 'unsubscribe':
          this.unsubscribe(req);
          break;
        case 'publish':
          this.publish(req, bytes);
          break;
        case 'ping':
          this.send(`{"op":"pong","id":${JSON.stringify(req.id)}}`);
          break;
        case 'presence':
          this.presence(req);
          break;
      }
    } catch (err) {
      this.sendError(this.toError(err), { id: req.id });
    }
  }

  // ---- auth ----

  /**
   * Checks the token and answers `authed`, or `error` (the first `auth` refused closes the
   * socket, with the error's code). Messages behind it wait until it is answered.
   */
  private authenticate({ id, token }: WsAuth): void {
    this.queue = [];
    const first = this.credentials.identity === null;
    this.credentials
      .authenticate(token)
      .then(
        (identity) => {
          if (this.closed) return;
          // Now counted for its key or user too: over its connection limit, it is closed (4008).
          try {
            this.limits.lease?.moveTo(this.ctx.limits.limiter, this.subjectsOf(identity));
          } catch (err) {
            const e = this.toError(err);
            this.sendError(e, { id });
            this.close(e);
            return;
          }
          this.send(
            JSON.stringify({ op: 'authed', id, sub: identity.sub, expiresAt: identity.expiresAt }),
          );
          this.dropForbidden();
        },
        (err: unknown) => {
          if (this.closed) return;
          const e = this.toError(err);
          this.sendError(e, { id });
          if (first) this.close(e);
        },
      )
      .finally(() => this.drainQueue());
  }

  /** Handles the messages that waited for an `auth`, until one of them is an `auth` again. */
  private drainQueue(): void {
    const waiting = this.queue ?? [];
    this.queue = null;
    while (waiting.length > 0 && this.queue === null && !this.closed) {
      const m = waiting.shift()!;
      this.handle(m.data, m.isBinary);
    }
    if (this.queue !== null) (this.queue as Queued[]).unshift(...waiting);
    else this.resume(PAUSE_AUTH);
  }

  /** Ends, with `forbidden`, the subscriptions the connection's new grants no longer allow. */
  private dropForbidden(): void {
    const grants = this.credentials.require().grants;
    for (const [subId, entry] of [...this.subs]) {
      const lost = entry.patterns.find((p) => !grants.canSubscribe(p));
      if (lost === undefined) continue;
      const err = forbidden('subscribe to', lost);
      // Set up: the hub ends it and the sink tells the client (`error` with its `sub`). Still
      // being set up: its `subscribe` is answered with the error instead.
      if (entry.sub) entry.sub.fail(err);
      else entry.sink.end(err);
      entry.lease?.release();
      if (this.subs.get(subId) === entry) this.subs.delete(subId);
    }
  }

  /** Who a request of `identity` on this connection counts for (the last answer is kept). */
  private subjectsOf(identity: Identity): readonly Subject[] {
    const cached = this.limitSubjects;
    if (cached !== null && cached.identity === identity) return cached.subjects;
    const subjects = this.ctx.limits.subjects(identity, this.limits.address);
    this.limitSubjects = { identity, subjects };
    return subjects;
  }

  private toError(err: unknown): RillError {
    if (err instanceof RillError) return err;
    this.log.error({ err }, 'websocket request failed');
    return new RillError('internal', 'Internal error', { cause: err });
  }

  // ---- subscribe ----

  /**
   * Checks what depends on this connection (errors answer the request), then sets up in the
   * background. The request itself was checked by {@link parseWsRequest}.
   */
  private subscribe({ id, patterns, start, cursor, presence }: WsSubscribe): void {
    const identity = this.credentials.require();
    checkSubscribe(identity, patterns);
    const max = this.ctx.config.ws.maxSubscriptions;
    if (this.subs.size >= max) {
      throw new RillError('too_many_subscriptions', `At most ${max} subscriptions per connection`, {
        details: { limit: max },
      });
    }
    if (this.ctx.state.closing) throw new RillError('shutting_down');
    const overloaded = this.ctx.load?.refuse();
    if (overloaded) throw overloaded;
    // Over the subscriptions limit only this request is refused; the others keep flowing.
    const lease = this.ctx.limits.enabled
      ? this.ctx.limits.openSubscription(this.subjectsOf(identity))
      : null;

    const subId = `s${this.nextSub++}`;
    const entry: SubEntry = {
      sink: new WsSink(this.writer, subId, (sink) => {
        entry.leavePresence?.();
        if (this.subs.get(subId)?.sink === sink) {
          this.subs.delete(subId);
          lease?.release();
        }
        if (entry.sub) this.count(entry.sub);
      }),
      patterns,
      sub: null,
      lease,
    };
    this.subs.set(subId, entry);
    this.noteTopics(patterns);
    this.begin();
    this.setUp(id, subId, entry, patterns, start, cursor, presence, identity)
      .catch((err: unknown) => {
        entry.lease?.release();
        entry.sink.detach();
        entry.leavePresence?.();
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
    presence: boolean,
    identity: Identity,
  ): Promise<void> {
    const { hub, engine } = this.ctx;
    if (this.ctx.hooks?.has('subscribe')) {
      // Once per topic or pattern on this connection; a refusal answers this `subscribe` only.
      await this.ctx.hooks.subscribe(identity, this.hookClient, patterns, this.hookSession);
      if (this.closed) {
        entry.lease?.release();
        this.subs.delete(subId);
        return;
      }
    }
    const t0 = Date.now();
    // Heads of the plain topics are read before the hub attaches them: a start position taken from
    // them can only be at or before where the subscription really starts, never past an event it
    // will deliver.
    const plain = patterns.filter((p) => !isPattern(p));
    const before = new Map<string, TopicHead | null>();
    await Promise.all(plain.map(async (t) => before.set(t, await engine.head(t))));
    if (this.closed) {
      entry.lease?.release();
      this.subs.delete(subId);
      return;
    }

    const sub = await hub.subscribe(entry.sink, {
      id: this.id,
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
    entry.leavePresence = enterPresence(
      this.ctx,
      identity,
      patterns,
      presence ? (n) => sub.notify(wsPresenceFrame(subId, n)) : null,
    );
    if (entry.cancelId !== undefined) this.drop(entry.cancelId, subId, entry);
  }

  // ---- presence ----

  /** Answers a presence query with a page of members, or with the numbers only. */
  private presence({ id, topic, after, limit, count }: WsPresence): void {
    const identity = this.credentials.require();
    const answer = count
      ? presenceCount(this.ctx, identity, topic)
      : presencePage(this.ctx, identity, topic, { after, limit });
    answer.then(
      (body) => {
        if (!this.closed) this.send(JSON.stringify({ op: 'presence', id, ...body }));
      },
      (err: unknown) => {
        if (!this.closed) this.sendError(this.toError(err), { id });
      },
    );
  }

  // ---- unsubscribe ----

  private unsubscribe({ id, sub: subId }: WsUnsubscribe): void {
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
    entry.lease?.release();
    entry.sink.detach();
    entry.leavePresence?.();
    if (entry.sub) {
      this.ctx.hub.unsubscribe(entry.sub);
      this.count(entry.sub);
    }
    this.subs.delete(subId);
    this.send(JSON.stringify({ op: 'unsubscribed', id, sub: subId }));
  }

  // ---- publish ----

  private publish({ id, topic, event: input }: WsPublish, bytes: number): void {
    const identity = this.credentials.require();
    if (!identity.grants.canPublish(topic)) throw forbidden('publish to', topic);
    if (this.ctx.state.closing) throw new RillError('shutting_down');
    const overloaded = this.ctx.load?.refuse();
    if (overloaded) throw overloaded;
    const rate = this.ctx.limits;
    let created: Promise<unknown> | null = null;
    if (rate.enabled) {
      const subjects = this.subjectsOf(identity);
      // Only this publish is refused (an `error` for its id); the connection goes on.
      rate.limiter.publish(subjects, 1, bytes);
      created = rate.checkTopic(topic, subjects);
    }
    // Within the limits, the application's backend decides (a refusal answers this publish only).
    const hooks = this.ctx.hooks;
    if (hooks?.has('publish')) {
      const asked = hooks.publish(identity, this.hookClient, topic, summarize([input], bytes));
      created = created === null ? asked : Promise.all([asked, created]);
    }
    this.begin();
    if (input.ephemeral === true) {
      const ev = ephemeralOf(topic, input, Date.now());
      const sent = (): Promise<void> => this.ctx.engine.broadcast(topic, [ev]);
      (created === null ? sent() : created.then(sent))
        .then(
          () =>
            this.send(
              `{"op":"ack","id":${JSON.stringify(id)},"topic":"${topic}","ephemeral":true,"time":${ev.time}}`,
            ),
          (err: unknown) =>
            this.sendError(
              err instanceof RillError
                ? err
                : new RillError('engine_unavailable', 'The event was not sent', { cause: err }),
              { id },
            ),
        )
        .finally(() => this.finish());
      return;
    }
    const obs = this.ctx.obs;
    const t0 = performance.now();
    const span = startPublishSpan('ws', topic, [input], undefined, Date.now());
    const append = (): ReturnType<typeof this.ctx.engine.append> => {
      const appended = tracedAppend(this.ctx.engine, topic, [input], span);
      return rate.enabled ? appended.then((r) => (rate.published(topic), r)) : appended;
    };
    (created === null ? append() : created.then(append))
      .then(
        (results) => {
          span.end();
          obs?.meters.publishedEvents('ws', topic, stored(results));
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
          endSpan(span, e);
          if (e.code === 'engine_unavailable') this.log.warn({ err }, 'websocket publish failed');
          this.sendError(e, { id });
        },
      )
      .finally(() => {
        obs?.publishDuration?.ws.observe((performance.now() - t0) / 1000);
        this.finish();
      });
  }
}

/** Why a connection the server did not close ended, by its close code. */
function closeReason(code: number): string {
  if (code === 1000 || code === 1001 || code === 1005) return 'client_closed';
  if (code === 1006) return 'connection_lost';
  return 'protocol_error';
}
