import type { FastifyInstance } from 'fastify';
import { RillError } from '../model/errors.js';
import type { RillEvent } from '../model/event.js';
import { eventJson } from '../model/event.js';
import type { Hub } from '../fanout/hub.js';
import type { ResetNotice, Sink } from '../fanout/sink.js';
import type { StartSpec, Subscription } from '../fanout/subscription.js';
import type { Cursor } from '../model/cursor.js';
import { parseResumeCursor, parseStart, parseTopicsParam } from '../wire/subscribe-params.js';
import type { AppContext } from './context.js';
import type { StreamQuery } from './params.js';
import { parseLimit, parseWait } from './params.js';

/**
 * A sink that collects one response's worth of events for a long-poll. The subscription does the
 * resume work (cursors, patterns, reset notices, replay in bounded steps); the first write — one
 * tick's or one replay step's events, at most `limit` of them — becomes the response, and the
 * cursor is taken in the same tick, so it covers exactly what the response holds.
 */
class CollectSink implements Sink {
  private count = 0;
  private sub: Subscription | null = null;
  readonly resets: string[] = [];
  private closed!: () => void;
  private readonly closedP = new Promise<void>((r) => (this.closed = r));

  constructor(
    private readonly limit: number,
    private readonly done: (r: { events: string; cursor: string } | { error: RillError }) => void,
    private readonly hub: Hub,
    private readonly maxCursorLength: number,
  ) {}

  attached(sub: Subscription): void {
    this.sub = sub;
  }

  frameEvent(ev: RillEvent): string {
    this.count++;
    return eventJson(ev) + ',';
  }

  frameReset(n: ResetNotice): string {
    this.resets.push(JSON.stringify(n));
    // Queued like an event so a reset alone still answers the poll.
    return '';
  }

  write(chunk: string): void {
    const sub = this.sub!;
    const cursor = sub.cursor(this.maxCursorLength);
    this.hub.unsubscribe(sub);
    this.closed();
    this.done({ events: chunk.endsWith(',') ? chunk.slice(0, -1) : chunk, cursor });
  }

  /** Flushes what is queued; if nothing was, answers with no events. */
  finish(): void {
    const sub = this.sub;
    if (!sub || sub.closed) return;
    sub.flush();
    if (sub.closed) return;
    const cursor = sub.cursor(this.maxCursorLength);
    this.hub.unsubscribe(sub);
    this.closed();
    this.done({ events: '', cursor });
  }

  bufferedBytes(): number {
    // Past the limit the subscription stops taking live events and waits, which is what we want.
    return this.count >= this.limit ? Number.MAX_SAFE_INTEGER : 0;
  }

  waitDrain(): Promise<void> {
    return this.closedP;
  }

  heartbeat(): void {}

  end(error?: RillError): void {
    this.closed();
    this.done(
      error ? { error } : { events: '', cursor: this.sub?.cursor(this.maxCursorLength) ?? '' },
    );
  }

  /** Answers with an error instead of the page collected so far (its cursor is not given out). */
  fail(error: RillError): void {
    if (!this.sub || this.sub.closed) return;
    this.hub.unsubscribe(this.sub);
    this.end(error);
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
  },
): Promise<{ events: string; cursor: string; resets: string[] }> {
  let settle!: (r: { events: string; cursor: string } | { error: RillError }) => void;
  const result = new Promise<{ events: string; cursor: string } | { error: RillError }>(
    (r) => (settle = r),
  );
  const sink = new CollectSink(opts.limit, (r) => settle(r), hub, opts.maxCursorLength);
  const finish = (): void => sink.finish();
  const sub = await hub.subscribe(sink, {
    patterns: opts.patterns,
    start: opts.start,
    ...(opts.cursor ? { cursor: opts.cursor } : {}),
    replayBatch: opts.limit,
    // `wait=0` answers once every topic has been read up to its head, never before: an answer
    // taken while the engine is still being read would be a page of nothing.
    onCaughtUp: opts.waitMs === 0 ? finish : undefined,
    // An engine that cannot be read gives 503 (the client retries with the same cursor), never
    // an empty page.
    onEngineError: (e) => sink.fail(e),
  });
  if (opts.waitMs === 0 && sub.states.size === 0) finish();
  const timer = opts.waitMs > 0 ? setTimeout(finish, opts.waitMs) : undefined;
  opts.signal.addEventListener('abort', finish, { once: true });
  try {
    const r = await result;
    if ('error' in r) throw r.error;
    return { ...r, resets: sink.resets };
  } finally {
    clearTimeout(timer);
    opts.signal.removeEventListener('abort', finish);
    hub.unsubscribe(sub);
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
    async (req, reply) => {
      if (ctx.state.closing) throw new RillError('shutting_down');
      const patterns = parseTopicsParam(req.query.topics, limits.maxPatternsPerSubscription);
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
      const ac = new AbortController();
      reply.raw.on('close', () => ac.abort());
      const r = await pollOnce(ctx.hub, {
        patterns,
        start,
        cursor,
        limit,
        waitMs,
        maxCursorLength: limits.maxCursorLength,
        signal: ac.signal,
      });
      return reply
        .type('application/json; charset=utf-8')
        .header('cache-control', 'no-store')
        .send(
          `{"events":[${r.events}],"cursor":${JSON.stringify(r.cursor)},"resets":[${r.resets.join(',')}]}`,
        );
    },
  );
}
