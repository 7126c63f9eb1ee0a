import type { FastifyInstance } from 'fastify';
import { RillError } from '../model/errors.js';
import type { RillEvent } from '../model/event.js';
import type { TransportMeter } from '../model/meters.js';
import { sharedEventJson } from '../wire/frame-cache.js';
import type { Hub } from '../fanout/hub.js';
import type { ResetNotice, Sink } from '../fanout/sink.js';
import type { StartSpec, Subscription } from '../fanout/subscription.js';
import type { Cursor } from '../model/cursor.js';
import { parseResumeCursor, parseStart, parseTopicsParam } from '../wire/subscribe-params.js';
import type { Identity } from '../auth/index.js';
import { checkSubscribe, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { admitStream } from './hooks.js';
import { logStreamEnd } from './stream-log.js';
import { subscriptionState, tokenExpired, type OpenStreams } from './open-streams.js';
import type { StreamQuery } from './params.js';
import { parseLimit, parseWait } from './params.js';
import {
  AUTH_ERRORS,
  cursorQuery,
  errors,
  fromQuery,
  json,
  limitQuery,
  route,
  sinceQuery,
  topicsQuery,
  waitQuery,
} from './schemas.js';
import { STREAM_HEADERS } from './stream.js';

/** How a long-poll's sink ended: a page (possibly empty) or an error. */
type PollOutcome = { page: string } | { error: RillError };

/**
 * A sink that collects one response's worth of events for a long-poll. The subscription does the
 * resume work (cursors, patterns, reset notices, replay in bounded steps); the first write — one
 * tick's or one replay step's events, at most `limit` of them — becomes the response. The sink
 * only receives calls: `write` answers false ("page full"), which stops the subscription in the
 * same tick, so the cursor the route takes afterwards covers exactly what the page holds.
 */
class CollectSink implements Sink {
  private count = 0;
  readonly resets: string[] = [];
  /** The first outcome; later ones (an error after the page, a second write) are ignored. */
  outcome: PollOutcome | null = null;
  private settle!: () => void;
  /** Resolves with the first outcome; the subscription's drain waits end with it too. */
  readonly settled = new Promise<void>((r) => (this.settle = r));

  constructor(
    private readonly limit: number,
    /** The long-poll meter: the subscription adds the page's events, `write` its bytes. */
    readonly meter: TransportMeter | null = null,
  ) {}

  frameEvent(ev: RillEvent): string {
    this.count++;
    return sharedEventJson(ev) + ',';
  }

  frameReset(n: ResetNotice): string {
    this.resets.push(JSON.stringify(n));
    // Queued like an event so a reset alone still answers the poll.
    return '';
  }

  /** See `Sink.bytesWritten`. */
  bytesWritten = 0;

  write(chunk: string): boolean {
    const bytes = Buffer.byteLength(chunk);
    this.bytesWritten += bytes;
    if (this.meter) this.meter.bytes += bytes;
    this.resolve({ page: chunk.endsWith(',') ? chunk.slice(0, -1) : chunk });
    return false;
  }

  bufferedBytes(): number {
    // Past the limit the subscription stops taking live events and waits, which is what we want.
    return this.count >= this.limit ? Number.MAX_SAFE_INTEGER : 0;
  }

  waitDrain(): Promise<void> {
    return this.settled;
  }

  heartbeat(): void {}

  end(error?: RillError): void {
    this.resolve(error ? { error } : { page: '' });
  }

  /** Ends with an error instead of a page, unless the page was taken already. */
  fail(error: RillError): void {
    this.resolve({ error });
  }

  /** Ends with no events, unless something else ended it first. */
  empty(): void {
    this.resolve({ page: '' });
  }

  private resolve(outcome: PollOutcome): void {
    if (this.outcome !== null) return;
    this.outcome = outcome;
    this.settle();
  }
}

/** One long-poll over a subscription: resolves with a page of events and the cursor after them. */
async function pollOnce(
  hub: Hub,
  opts: {
    patterns: string[];
    start: StartSpec;
    cursor: Cursor | undefined;
    limit: number;
    waitMs: number;
    /** Longest cursor the next request may carry: the page's cursor lists what fits in it. */
    maxCursorLength: number;
    signal: AbortSignal;
    /** Who polls: the wait ends at its token's expiry, and when its credential is revoked. */
    identity: Identity;
    streams: OpenStreams;
    /** The request's id, for the subscription's log lines. */
    id: string;
    /** The request's id and client address, for the connections listing. */
    connection: { id: string; address: string };
    meter: TransportMeter | null;
  },
): Promise<{ events: string; count: number; bytes: number; cursor: string; resets: string[] }> {
  const sink = new CollectSink(opts.limit, opts.meter);
  let sub: Subscription | undefined = undefined;
  /** Set when the subscription caught up before `hub.subscribe` returned it. */
  let finishEarly = false;
  /** Answers with what is queued (the flush hands it to the sink), or with no events. */
  const finish = (): void => {
    if (sink.outcome !== null) return;
    if (sub === undefined) {
      finishEarly = true;
      return;
    }
    sub.flush();
    // Stopped where the page ends (or, with none, where it stands): nothing more reaches it.
    hub.unsubscribe(sub);
    sink.empty();
  };
  /** Ends with an error instead of a page (the page's cursor is not given out). */
  const refuse = (e: RillError): void => {
    sink.fail(e);
    if (sub) hub.unsubscribe(sub);
  };
  // Tracked from the start: a credential revoked while the subscription is set up refuses it too.
  const tracked = opts.streams.track(
    opts.identity,
    { revoked: refuse },
    {
      ...opts.connection,
      transport: 'poll',
      openedAt: Date.now(),
      state: () => subscriptionState(opts.patterns, sub),
    },
  );
  try {
    sub = await subscribe();
  } catch (err) {
    tracked.untrack();
    throw err;
  }
  if (finishEarly || (opts.waitMs === 0 && sub.states.size === 0)) finish();
  // A wait never runs past the token's expiry: then the poll is refused as expired (the client
  // polls again with a new token and the same cursor).
  const exp = opts.identity.expiresAt;
  const expiresFirst = exp !== null && exp - Date.now() < opts.waitMs;
  const timer =
    opts.waitMs > 0
      ? setTimeout(
          expiresFirst ? () => refuse(tokenExpired()) : finish,
          expiresFirst ? Math.max(0, exp - Date.now()) : opts.waitMs,
        )
      : undefined;
  opts.signal.addEventListener('abort', finish, { once: true });
  try {
    await sink.settled;
    // Ended outside the sink's write. It has stopped already (a full page stops it within the
    // write, `finish` unsubscribes before answering), so its cursor is where the page ends.
    hub.unsubscribe(sub);
    const r = sink.outcome!;
    if ('error' in r) throw r.error;
    return {
      events: r.page,
      count: sub.sentEvents,
      // Every frame ends with a comma; the page drops the last one.
      bytes: r.page === '' ? 0 : sub.sentBytes - 1,
      cursor: sub.cursor(opts.maxCursorLength),
      resets: sink.resets,
    };
  } finally {
    clearTimeout(timer);
    tracked.untrack();
    opts.signal.removeEventListener('abort', finish);
  }

  function subscribe(): Promise<Subscription> {
    return hub.subscribe(sink, {
      id: opts.id,
      patterns: opts.patterns,
      start: opts.start,
      ...(opts.cursor ? { cursor: opts.cursor } : {}),
      replayBatch: opts.limit,
      // `wait=0` answers once every topic has been read up to its head, never before: an answer
      // taken while the engine is still being read would be a page of nothing.
      onCaughtUp: opts.waitMs === 0 ? finish : undefined,
      // An engine that cannot be read gives 503 (the client retries with the same cursor), never
      // an empty page.
      onEngineError: (e) => {
        sink.fail(e);
        if (sub) hub.unsubscribe(sub);
      },
    });
  }
}

/**
 * `GET /v1/events?topics=a,b.*&cursor=…&wait=25&limit=100`: long-polling for clients behind
 * proxies that break streaming. Answers at once when events exist after the cursor, otherwise waits
 * up to `wait` seconds for the next one. The same cursors, patterns and reset notices as the
 * streams: `{"events":[…],"cursor":"…","resets":[…]}`; pass `cursor` back on the next call.
 */
export function pollRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { limits } = ctx.config;
  app.get<{ Querystring: StreamQuery & { wait?: string; limit?: string } }>(
    '/v1/events',
    route({
      summary: 'Long-poll topics and patterns',
      description:
        'For clients behind proxies that break streaming: the events after cursor (or from the start position), at most limit; with nothing new, waits up to wait seconds. Pass the answer’s cursor back on the next call. The same cursors, patterns and reset notices as the streams; presence is refused (a long-poll is not present).',
      tags: ['streams'],
      operationId: 'poll',
      querystring: {
        topics: topicsQuery(limits.maxPatternsPerSubscription),
        wait: waitQuery,
        limit: limitQuery(100, 1000, 'limits.maxPageSize'),
        since: sinceQuery,
        from: fromQuery,
        cursor: cursorQuery('The cursor of the answer before (Last-Event-ID wins)'),
        lastEventId: cursorQuery('The same as cursor'),
      },
      required: ['topics'],
      headers: { 'last-event-id': STREAM_HEADERS['last-event-id'] },
      response: {
        200: json('A page of events', {
          type: 'object',
          required: ['events', 'cursor', 'resets'],
          properties: {
            events: { type: 'array', items: { $ref: 'Event#' } },
            cursor: { type: 'string', description: 'Pass it back on the next call.' },
            resets: { type: 'array', items: { $ref: 'Reset#' } },
          },
        }),
        ...errors(
          'invalid_parameter',
          'invalid_pattern',
          'too_many_topics',
          'invalid_cursor',
          ...AUTH_ERRORS,
          'rate_limited',
          'overloaded',
          'shutting_down',
          'engine_unavailable',
        ),
      },
    }),
    async (req, reply) => {
      if (ctx.state.closing) throw new RillError('shutting_down');
      const patterns = parseTopicsParam(req.query.topics, limits.maxPatternsPerSubscription);
      // A long-poll is no presence (it is there between requests only): say so rather than ignore.
      if (req.query.presence !== undefined) {
        throw new RillError(
          'invalid_parameter',
          'presence is for streams (SSE, NDJSON, WebSocket); a long-poll is not present',
        );
      }
      let identity = identityOf(req, ctx.auth);
      checkSubscribe(identity, patterns);
      const overloaded = ctx.load?.refuse();
      if (overloaded) throw overloaded;
      const asked = parseWait(req.query.wait);
      // HEAD answers at once: it asks what a GET would answer now, not for the next event.
      const waitMs = req.method === 'HEAD' ? 0 : asked;
      const limit = parseLimit(req.query.limit, 100, limits.maxPageSize);
      const start = parseStart(req.query);
      const cursor = parseResumeCursor(
        req.headers['last-event-id'],
        req.query.cursor ?? req.query.lastEventId,
        limits.maxCursorLength,
      );
      // The application's backend may refuse or narrow; each poll is a new request (decisions
      // are kept for hooks.cacheTtl).
      if (ctx.hooks) identity = await admitStream(ctx, req, identity, 'poll', patterns);
      // A HEAD answers at once and holds nothing: not counted.
      const lease =
        req.method === 'HEAD' || !ctx.limits.enabled
          ? null
          : ctx.limits.openStream(ctx.limits.ofRequest(req, identity));
      const ac = new AbortController();
      reply.raw.on('close', () => ac.abort());
      const meter = ctx.obs?.meters.transports.poll ?? null;
      if (meter) meter.opened++;
      const startedAt = Date.now();
      const ended = (events: number, bytes: number, reason: string): void =>
        logStreamEnd(
          ctx.logs.http,
          req.id,
          { transport: 'poll', topics: patterns, startedAt, events, bytes, reason },
          'debug',
        );
      let r;
      try {
        r = await pollOnce(ctx.hub, {
          patterns,
          start,
          cursor,
          limit,
          waitMs,
          maxCursorLength: limits.maxCursorLength,
          signal: ac.signal,
          identity,
          streams: ctx.streams,
          id: req.id,
          connection: { id: String(req.id), address: req.ip },
          meter,
        });
      } catch (err) {
        const code = err instanceof RillError ? err.code : 'internal';
        lease?.release();
        ended(0, 0, code);
        meter?.close(code);
        throw err;
      }
      lease?.release();
      ended(
        r.count,
        r.bytes,
        ac.signal.aborted ? 'client_closed' : r.count > 0 ? 'page' : 'timeout',
      );
      meter?.close(ac.signal.aborted ? 'client' : 'answered');
      return reply
        .type('application/json; charset=utf-8')
        .header('cache-control', 'no-store')
        .send(
          `{"events":[${r.events}],"cursor":${JSON.stringify(r.cursor)},"resets":[${r.resets.join(',')}]}`,
        );
    },
  );
}
