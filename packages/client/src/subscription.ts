import { Backoff, type BackoffOptions } from './backoff.js';
import { parseId, cursorPositions, type Position } from './cursor.js';
import { MAX_RETRY_AFTER, RillError, networkError, retryDelay, rillError } from './errors.js';
import { settleAuth } from './token.js';
import type {
  StreamHandlers,
  StreamRequest,
  Transport,
  TransportContext,
} from './transport/transport.js';
import type {
  ConnectionState,
  GapNotice,
  PresenceChange,
  ResetNotice,
  RillEvent,
  RillNotice,
  StartFrom,
} from './types.js';

/** Where and how a subscription starts, and its callbacks. */
export interface SubscribeOptions<T = unknown> {
  /** `now` (default), `earliest`, or a seq (inclusive). */
  from?: StartFrom;
  /** After a seq (integer below 10^12), or from a time (ms, `Date`, ISO string). Wins over `from`. */
  since?: number | string | Date;
  /** Resume cursor from an earlier subscription (`subscription.cursor`); wins for the topics it lists. */
  cursor?: string;
  /** Aborting it closes the subscription. */
  signal?: AbortSignal;
  /** Also yield notices (reset, gap) from the async iterator, in stream order. */
  notices?: boolean;
  /** `auto` (SSE, falling back to long-poll), `sse`, `ws` or `poll`; default the client's. */
  transport?: TransportName;
  /** Events the async iterator may hold for a slow consumer before the stream pauses. Default 10 000. */
  maxBuffer?: number;
  /** Callback form: every event, in order, exactly once. */
  onEvent?: (event: RillEvent<T>) => void;
  onNotice?: (notice: RillNotice) => void;
  onState?: (change: StateChange) => void;
  /** Ask the server for joins and leaves (implied by `onPresence`); listen with `on('presence')`. */
  presence?: boolean;
  /**
   * Joins and leaves of the subscribed topics (exact names; SSE and WebSocket, not long-poll).
   * Asks the server for them; who is there already: `client.presence(topic)`.
   */
  onPresence?: (change: PresenceChange) => void;
}

export type TransportName = 'auto' | 'sse' | 'ws' | 'poll';

/** A connection state change, with why. */
export interface StateChange {
  state: ConnectionState;
  /** Which transport the subscription uses now. */
  transport: string;
  /** Why it left `open`, or why it closed. */
  error?: RillError;
  reason?: string;
  /** Before a reconnect: the wait (ms) and the attempt number (1-based). */
  delay?: number;
  attempt?: number;
}

/** What a subscription needs from its client. */
export interface SubscriptionHost {
  ctx: TransportContext;
  transports: Partial<Record<Exclude<TransportName, 'auto'>, Transport>>;
  transport: TransportName;
  backoff: BackoffOptions;
  history(
    topic: string,
    after: number,
    limit: number,
    signal: AbortSignal,
  ): Promise<{ epoch: string; events: RillEvent[]; more: boolean }>;
  forget(sub: Subscription<never, never>): void;
}

type Listener<A> = (a: A) => void;

/**
 * Runs an application callback. Its exception is rethrown on its own (an uncaught error the app
 * sees) instead of breaking the stream it came from.
 */
function call<A>(fn: Listener<A>, a: A): void {
  try {
    fn(a);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}

/** Largest history page one gap fill reads at a time. */
const FILL_PAGE = 1000;

/**
 * One subscription: a live stream that survives disconnects. It reconnects with backoff,
 * resumes from the cursor of the last event it delivered, drops repeats by `(topic, seq)` and,
 * when a topic's seq jumps, reads the missing range from history before delivering anything
 * later. Iterate it (`for await`), or pass callbacks; `close()` (or `return()`) ends it.
 */
export class Subscription<T = unknown, Item = RillEvent<T>> implements AsyncIterable<Item> {
  private st: ConnectionState = 'connecting';
  private cur: string | undefined;
  private readonly pos = new Map<string, Position>();
  private gen = 0;
  private stopConn: (() => void) | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly inbox: Array<() => void | Promise<void>> = [];
  private pumping = false;
  private queue: Item[] = [];
  private waiter: (() => void) | undefined;
  private iterating = false;
  private paused = false;
  private ended: RillError | undefined;
  private threw = false;
  private startTime: number | undefined;
  private wasOpen = false;
  private fillAc = new AbortController();
  /** Lets go of the client's token (stops its refreshes when no subscription holds it). */
  private release: (() => void) | undefined;
  private readonly backoff: Backoff;
  private kind: Exclude<TransportName, 'auto'>;
  private readonly ls = {
    event: new Set<Listener<RillEvent<T>>>(),
    notice: new Set<Listener<RillNotice>>(),
    state: new Set<Listener<StateChange>>(),
    presence: new Set<Listener<PresenceChange>>(),
  };
  private readonly maxBuffer: number;
  /** The topics and patterns subscribed to. */
  readonly topics: readonly string[];

  constructor(
    topics: string[],
    private readonly o: SubscribeOptions<T>,
    private readonly host: SubscriptionHost,
  ) {
    this.topics = topics;
    this.maxBuffer = o.maxBuffer ?? 10_000;
    this.backoff = new Backoff(host.backoff);
    const t = o.transport ?? host.transport;
    this.kind = t === 'auto' ? 'sse' : t;
    if (o.cursor) {
      this.cur = o.cursor;
      for (const [k, v] of cursorPositions(o.cursor)) this.pos.set(k, v);
    }
    if (o.onEvent) this.ls.event.add(o.onEvent);
    if (o.onNotice) this.ls.notice.add(o.onNotice);
    if (o.onState) this.ls.state.add(o.onState);
    if (o.onPresence) this.ls.presence.add(o.onPresence);
    if (o.signal?.aborted) {
      queueMicrotask(() => this.close('aborted'));
      return;
    }
    o.signal?.addEventListener('abort', () => this.close('aborted'), { once: true });
    queueMicrotask(() => this.connect());
  }

  /** Current connection state. */
  get state(): ConnectionState {
    return this.st;
  }

  /** Where to resume: pass it as `cursor` to a later `subscribe` to continue exactly here. */
  get cursor(): string | undefined {
    return this.cur;
  }

  /** The error that closed the subscription, if one did. */
  get error(): RillError | undefined {
    return this.ended;
  }

  /** Listens to events, notices or state changes; returns the function that stops listening. */
  on(type: 'event', fn: Listener<RillEvent<T>>): () => void;
  on(type: 'notice', fn: Listener<RillNotice>): () => void;
  on(type: 'state', fn: Listener<StateChange>): () => void;
  /** Joins and leaves: the subscription must have asked for them (`presence: true`). */
  on(type: 'presence', fn: Listener<PresenceChange>): () => void;
  on(type: 'event' | 'notice' | 'state' | 'presence', fn: Listener<never>): () => void {
    const set = this.ls[type] as Set<Listener<never>>;
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Ends the subscription and its connection. Idempotent. */
  close(reason = 'closed'): void {
    if (this.st === 'closed') return;
    this.stop();
    this.setState({ state: 'closed', reason });
    this.wake();
  }

  private stop(): void {
    this.release?.();
    this.release = undefined;
    this.gen++;
    clearTimeout(this.timer);
    this.stopConn?.();
    this.stopConn = undefined;
    this.fillAc.abort();
    this.fillAc = new AbortController();
    this.inbox.length = 0;
  }

  private setState(c: Omit<StateChange, 'transport'>): void {
    this.st = c.state;
    if (c.state === 'closed') this.host.forget(this as unknown as Subscription<never, never>);
    const change = { ...c, transport: this.kind };
    for (const fn of this.ls.state) call(fn, change);
  }

  private connect(): void {
    if (this.st === 'closed' || this.paused) return;
    // While open, the token is refreshed ahead of its expiry, so a reconnect finds a good one.
    this.release ??= this.host.ctx.tokens.hold();
    const gen = ++this.gen;
    const o = this.o;
    const req: StreamRequest = { topics: [...this.topics] };
    if (o.since !== undefined) {
      req.since = o.since instanceof Date ? String(o.since.getTime()) : String(o.since);
    } else if (o.from !== undefined) req.from = String(o.from);
    if (o.presence === true || o.onPresence) req.presence = true;
    if (this.cur) req.cursor = this.cur;
    else if (this.startTime !== undefined) {
      // `from=now` and nothing seen yet: resume by the time the first stream opened, so events
      // published while reconnecting are not lost (at-least-once; repeats are none: nothing seen).
      req.since = String(this.startTime);
      delete req.from;
    }
    const live =
      <A extends unknown[]>(fn: (...a: A) => void) =>
      (...a: A): void => {
        if (gen === this.gen) fn(...a);
      };
    const h: StreamHandlers = {
      open: live(({ serverTime }) => {
        this.backoff.opened();
        if (
          !this.cur &&
          this.startTime === undefined &&
          o.since === undefined &&
          (o.from ?? 'now') === 'now'
        ) {
          // The Date header has 1 s resolution and is truncated: never later than the real start.
          this.startTime = serverTime ?? Date.now() - 1000;
        }
        this.wasOpen = true;
        this.setState({ state: 'open' });
      }),
      event: live((ev, c) => this.push(() => this.onEvent(ev, c))),
      reset: live((n, c) => this.push(() => this.onReset(n, c))),
      presence: live((change) => {
        for (const fn of this.ls.presence) call(fn, change);
      }),
      cursor: live((c) =>
        this.push(() => {
          this.cur = c;
        }),
      ),
      retry: live((ms) => {
        this.backoff.hint = ms;
      }),
      close: live((err, ra) => this.dropped(err, ra)),
    };
    const transport = this.host.transports[this.kind];
    try {
      if (!transport)
        throw rillError(
          'invalid_parameter',
          `Transport ${this.kind} is not available in this build`,
        );
      this.stopConn = transport(req, h, this.host.ctx);
    } catch (err) {
      this.fail(err instanceof RillError ? err : networkError(err));
    }
  }

  private dropped(error: RillError, retryAfter?: number): void {
    this.gen++;
    this.stopConn = undefined;
    if (this.st === 'closed') return;
    // `token_expired`: reconnect (with a new token, from the cursor) only when one can be had.
    const err = settleAuth(error, this.host.ctx.tokens);
    if (!err.retryable) return this.fail(err);
    if (
      err.code === 'stream_blocked' &&
      (this.o.transport ?? this.host.transport) === 'auto' &&
      this.host.transports.poll
    ) {
      this.kind = 'poll';
    }
    // Never sooner than the server asked (a 429's or 503's Retry-After), within maxRetryAfter.
    const maxRetryAfter = this.host.ctx.options.maxRetryAfter as number | undefined;
    const delay = this.backoff.next(
      retryAfter ?? retryDelay(err, maxRetryAfter ?? MAX_RETRY_AFTER),
    );
    this.setState({
      state: this.wasOpen ? 'reconnecting' : 'connecting',
      error: err,
      delay,
      attempt: this.backoff.attempts,
    });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private fail(err: RillError): void {
    this.ended = err;
    this.stop();
    this.setState({ state: 'closed', error: err, reason: err.message });
    this.wake();
  }

  private push(fn: () => void | Promise<void>): void {
    this.inbox.push(fn);
    if (this.inbox.length > this.maxBuffer) {
      // Events arrive faster than a gap fill completes: drop the connection and what it queued,
      // and resume from the last delivered cursor once the fill is done. The log is the truth.
      this.stopConn?.();
      this.stopConn = undefined;
      this.gen++;
      this.inbox.length = 0;
      this.inbox.push(() => this.connect());
    }
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.inbox.length > 0 && this.st !== 'closed') {
        const r = this.inbox.shift()!();
        if (r) await r;
      }
    } catch (err) {
      if (this.st !== 'closed') {
        const e = err instanceof RillError ? err : networkError(err);
        this.stopConn?.();
        this.inbox.length = 0;
        this.dropped(e.retryable ? e : rillError(e.code, e.message, { retryable: true, cause: e }));
      }
    } finally {
      this.pumping = false;
    }
  }

  private onEvent(ev: RillEvent, c: string | undefined): void | Promise<void> {
    if (ev.ephemeral === true) {
      // Live only: no seq, no position to keep, nothing to fill.
      for (const fn of this.ls.event) call(fn, ev as RillEvent<T>);
      this.enqueue(ev as Item);
      return;
    }
    const epoch = parseId(ev.id)?.epoch ?? '';
    const p = this.pos.get(ev.topic);
    if (p && p.epoch === epoch) {
      if (ev.seq <= p.seq) return;
      if (ev.seq > p.seq + 1) {
        return this.fill(ev.topic, p.epoch, p.seq, ev.seq - 1).then(() =>
          this.deliver(ev, epoch, c),
        );
      }
    }
    this.deliver(ev, epoch, c);
  }

  /** Reads `(after, to]` of a topic from history and delivers it; announces what is gone. */
  private async fill(topic: string, epoch: string, after: number, to: number): Promise<void> {
    const signal = this.fillAc.signal;
    while (after < to) {
      const page = await this.host.history(topic, after, Math.min(FILL_PAGE, to - after), signal);
      if (page.epoch !== epoch) break;
      for (const ev of page.events) {
        if (ev.seq > to) break;
        if (ev.seq > after + 1) this.gap(topic, epoch, after + 1, ev.seq - 1);
        this.deliver(ev, epoch, undefined);
        after = ev.seq;
      }
      if (page.events.length === 0 || !page.more) break;
    }
    if (after < to) this.gap(topic, epoch, after + 1, to);
  }

  private gap(topic: string, epoch: string, from: number, to: number): void {
    const n: GapNotice = { kind: 'gap', topic, epoch, missing: { from, to } };
    this.pos.set(topic, { epoch, seq: to });
    this.notice(n);
  }

  private onReset(n: ResetNotice, c: string | undefined): void {
    this.pos.set(n.topic, { epoch: n.epoch, seq: n.seq });
    if (c) this.cur = c;
    this.notice(n);
  }

  private deliver(ev: RillEvent, epoch: string, c: string | undefined): void {
    this.pos.set(ev.topic, { epoch, seq: ev.seq });
    if (c) this.cur = c;
    for (const fn of this.ls.event) call(fn, ev as RillEvent<T>);
    this.enqueue(ev as Item);
  }

  private notice(n: RillNotice): void {
    for (const fn of this.ls.notice) call(fn, n);
    if (this.o.notices) this.enqueue(n as Item);
  }

  private enqueue(item: Item): void {
    if (!this.iterating) return;
    this.queue.push(item);
    this.wake();
    if (this.queue.length >= this.maxBuffer && !this.paused) {
      // A slow consumer: stop reading rather than buffer without bound; resume from the cursor
      // of the last queued event once it has caught up.
      this.paused = true;
      this.stopConn?.();
      this.stopConn = undefined;
      this.gen++;
      clearTimeout(this.timer);
      this.inbox.length = 0;
    }
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  [Symbol.asyncIterator](): AsyncIterator<Item> {
    this.iterating = true;
    return {
      next: async (): Promise<IteratorResult<Item>> => {
        for (;;) {
          if (this.queue.length > 0) {
            const value = this.queue.shift()!;
            if (this.paused && this.queue.length <= this.maxBuffer / 2 && this.st !== 'closed') {
              this.paused = false;
              this.connect();
            }
            return { value, done: false };
          }
          if (this.st === 'closed') {
            if (this.ended && !this.threw) {
              this.threw = true;
              throw this.ended;
            }
            return { value: undefined, done: true };
          }
          await new Promise<void>((r) => (this.waiter = r));
        }
      },
      return: async (): Promise<IteratorResult<Item>> => {
        this.close();
        this.queue = [];
        return { value: undefined, done: true };
      },
    };
  }
}
