import type { Engine } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import type { RillEvent } from '../model/event.js';
import type { Sink } from './sink.js';
import type { SubscribeOptions, TopicState } from './subscription.js';
import { Subscription } from './subscription.js';

/** Longest a flush is put off to batch more events into each socket write, ms (see markDirty). */
const MAX_FLUSH_DELAY_MS = 10;

/** The hub's bounds; see `limits` in config.ts for their meaning and defaults. */
export interface HubLimits {
  maxSubscriberBufferBytes: number;
  replayBatch: number;
  maxTopicsPerSubscription: number;
  maxCursorTopics: number;
}

export interface HubOptions {
  limits: HubLimits;
  /** Idle time after which a stream gets a heartbeat, ms. */
  heartbeatMs: number;
}

/**
 * One topic's local fan-out: a single engine watch shared by every local subscriber of the topic.
 *
 * `lastSeq` is the highest seq the watch has shown (or the head when the watch started): every
 * event up to it is in the log, every event after it will come through the watch. A subscriber
 * whose position reached it can join `live` and miss nothing.
 */
export class Channel {
  readonly members = new Set<TopicState>();
  readonly live = new Set<TopicState>();
  /** Long-poll requests waiting for the next event; told after every batch. */
  readonly waiters = new Set<() => void>();
  lastSeq = 0;
  epoch: string | null = null;
  private readonly unwatch: () => void;
  private head: Promise<void>;
  private headFailed = false;

  constructor(
    readonly topic: string,
    private readonly engine: Engine,
  ) {
    // Watch first, then read the head: an event committed in between shows up in both, and the
    // subscribers drop the repeat; the other order could miss it.
    this.unwatch = engine.watch(topic, (events) => this.onEvents(events));
    this.head = this.readHead();
  }

  /**
   * Resolves once the head is known. A failed read (engine unreachable) is retried by the next
   * caller rather than remembered, so the channel recovers with the engine.
   */
  get ready(): Promise<void> {
    if (this.headFailed) {
      this.headFailed = false;
      this.head = this.readHead();
    }
    return this.head;
  }

  private readHead(): Promise<void> {
    const p = this.engine.head(this.topic).then((head) => {
      if (head && (this.epoch === null || this.epoch === head.epoch)) {
        this.epoch = head.epoch;
        if (head.lastSeq > this.lastSeq) this.lastSeq = head.lastSeq;
      }
    });
    // A failing head read surfaces to every subscriber's step; don't let it go unhandled here.
    p.catch(() => {
      this.headFailed = true;
    });
    return p;
  }

  private onEvents(events: readonly RillEvent[]): void {
    for (const ev of events) {
      if (ev.epoch !== this.epoch) {
        // A new log (wiped and recreated): its seqs restart, so the watermark does too.
        this.epoch = ev.epoch;
        this.lastSeq = ev.seq;
      } else if (ev.seq > this.lastSeq) {
        this.lastSeq = ev.seq;
      }
      for (const st of this.live) {
        if (st.epoch !== ev.epoch) {
          if (st.epoch === null && st.pos === 0) st.epoch = ev.epoch;
          else {
            st.sub.fallBehind(st);
            continue;
          }
        }
        if (ev.seq <= st.pos) continue;
        if (ev.seq === st.pos + 1) st.sub.deliver(st, ev);
        else st.sub.fallBehind(st);
      }
    }
    for (const w of this.waiters) w();
  }

  close(): void {
    this.unwatch();
  }
}

/**
 * The per-process fan-out (docs/architecture.md § The fan-out core): one watch per topic with local subscribers, each event
 * framed once per wire format, one coalesced write per subscriber per tick, one shared heartbeat
 * sweep instead of a timer per connection.
 */
export class Hub {
  readonly engine: Engine;
  readonly limits: HubLimits;
  private readonly channels = new Map<string, Channel>();
  private readonly subs = new Set<Subscription>();
  private readonly patternSubs = new Set<Subscription>();
  /** Long-poll waits, woken at shutdown. */
  private readonly waiting = new Set<() => void>();
  private unwatchTopics: (() => void) | null = null;
  private dirty: Subscription[] = [];
  private flushScheduled = false;
  /** When the last flush ended and how long it took (flush pacing, see markDirty). */
  private lastFlushEnd = 0;
  private lastFlushMs = 0;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private readonly heartbeatMs: number;

  constructor(engine: Engine, options: HubOptions) {
    this.engine = engine;
    this.limits = options.limits;
    this.heartbeatMs = options.heartbeatMs;
    // Sweep at a fraction of the interval so no stream stays silent much longer than it.
    this.heartbeatTimer = setInterval(
      () => this.sweep(),
      Math.max(50, Math.floor(options.heartbeatMs / 3)),
    );
    this.heartbeatTimer.unref();
  }

  /** Number of open subscriptions. */
  get size(): number {
    return this.subs.size;
  }

  /** Number of topics with a live watch. */
  get channelCount(): number {
    return this.channels.size;
  }

  /**
   * Starts a subscription feeding `sink`. Patterns are expanded to the topics that exist now and
   * followed as new ones appear. Resolves once every initial topic is attached; events then flow.
   */
  async subscribe(sink: Sink, options: SubscribeOptions): Promise<Subscription> {
    const sub = new Subscription(this, sink, options);
    this.subs.add(sub);
    try {
      const plain = options.patterns.filter((p) => !p.includes('*') && !p.includes('>'));
      const wild = options.patterns.filter((p) => p.includes('*') || p.includes('>'));
      if (wild.length > 0) {
        // Register for new topics before listing the existing ones, so none falls in between.
        this.patternSubs.add(sub);
        this.ensureTopicWatch();
        for (const p of wild) {
          const prefix = literalPrefix(p);
          let after: string | undefined;
          for (;;) {
            const page = await this.engine.listTopics({
              prefix,
              limit: 1000,
              ...(after === undefined ? {} : { after }),
            });
            for (const h of page) if (sub.matches(h.topic)) sub.addTopic(h.topic);
            if (sub.closed) throw new RillError('too_many_topics');
            if (page.length < 1000) break;
            after = page[page.length - 1]!.topic;
          }
        }
      }
      for (const t of plain) sub.addTopic(t);
      if (sub.closed) throw new RillError('too_many_topics');
      // Let every channel learn its head before the stream opens: a `now` start is then a point
      // in the engine's order before anything the client does once it sees the stream open (with
      // a shared engine, a publish on another node). Bounded, so an unreachable engine does not
      // hold the stream back; the catch-up retries the head anyway.
      await settleWithin(
        [...sub.states.values()].map((st) => st.channel.ready),
        HEAD_WAIT_MS,
      );
    } catch (err) {
      this.unsubscribe(sub);
      throw err;
    }
    return sub;
  }

  unsubscribe(sub: Subscription): void {
    sub.detach();
    this.subs.delete(sub);
    if (this.patternSubs.delete(sub) && this.patternSubs.size === 0 && this.unwatchTopics) {
      this.unwatchTopics();
      this.unwatchTopics = null;
    }
  }

  /** @internal */
  channel(topic: string): Channel {
    let ch = this.channels.get(topic);
    if (!ch) {
      ch = new Channel(topic, this.engine);
      this.channels.set(topic, ch);
    }
    return ch;
  }

  /**
   * Resolves once `topic` has an event after `afterSeq` (or a new epoch), after `ms`, or when the
   * request goes away (`signal`), whichever comes first. For long-polling.
   */
  async waitBeyond(
    topic: string,
    afterSeq: number,
    ms: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const ch = this.channel(topic);
    // The epoch to compare with is the one the channel knows once ready: a new channel's is null
    // until its head is read, which is no change of log.
    let epoch: string | null | undefined;
    let wake: () => void = () => undefined;
    const done = new Promise<void>((resolve) => (wake = resolve));
    const check = (): void => {
      if (ch.lastSeq > afterSeq || (epoch !== undefined && ch.epoch !== epoch)) wake();
    };
    ch.waiters.add(check);
    const timer = setTimeout(wake, ms);
    signal?.addEventListener('abort', wake, { once: true });
    this.waiting.add(wake);
    try {
      await ch.ready;
      epoch = ch.epoch;
      check();
      await done;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', wake);
      this.waiting.delete(wake);
      ch.waiters.delete(check);
      this.releaseChannel(ch);
    }
  }

  /** @internal */
  releaseChannel(ch: Channel): void {
    if (ch.members.size === 0 && ch.waiters.size === 0 && this.channels.get(ch.topic) === ch) {
      ch.close();
      this.channels.delete(ch.topic);
    }
  }

  /** @internal Queues a subscription for this tick's coalesced write. */
  markDirty(sub: Subscription): void {
    this.dirty.push(sub);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Write less often under load (the fan-out profile is mostly writev syscalls, one per socket
      // per flush): the next flush waits as long as the last one took, so flushing never takes
      // more than about half the process and each write carries every event that arrived
      // meanwhile. A light flush (few sockets, microseconds) adds no delay; a heavy one adds at
      // most MAX_FLUSH_DELAY_MS to an event's latency. Nothing is dropped, only batched.
      const wait = this.lastFlushEnd + this.lastFlushMs - performance.now();
      if (wait < 1) setImmediate(this.flushAll);
      else setTimeout(this.flushAll, Math.min(wait, MAX_FLUSH_DELAY_MS));
    }
  }

  private readonly flushAll = (): void => {
    this.flushScheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    const start = performance.now();
    for (const sub of dirty) sub.flush();
    this.lastFlushEnd = performance.now();
    this.lastFlushMs = this.lastFlushEnd - start;
  };

  private ensureTopicWatch(): void {
    if (this.unwatchTopics) return;
    this.unwatchTopics = this.engine.watchTopics((topic) => {
      for (const sub of this.patternSubs) {
        // A topic born after the subscription started is new to it from its first event.
        if (sub.matches(topic)) sub.addTopic(topic, { kind: 'earliest' });
      }
    });
  }

  private sweep(): void {
    const idleSince = Date.now() - this.heartbeatMs;
    for (const sub of this.subs) {
      if (sub.lastWrite <= idleSince) {
        sub.lastWrite = Date.now();
        sub.sink.heartbeat();
      }
    }
  }

  /**
   * Ends every stream with `shutting_down` (clients reconnect elsewhere and resume) and stops the
   * hub. The engine is closed by its owner.
   */
  close(): void {
    clearInterval(this.heartbeatTimer);
    const err = new RillError('shutting_down');
    for (const sub of [...this.subs]) sub.fail(err);
    for (const wake of [...this.waiting]) wake();
    for (const ch of this.channels.values()) ch.close();
    this.channels.clear();
    if (this.unwatchTopics) this.unwatchTopics();
    this.unwatchTopics = null;
  }
}

/** Longest a new subscription waits for its channels' heads before its stream opens, ms. */
const HEAD_WAIT_MS = 2_000;

/** Resolves when every promise settled, or after `ms`, whichever comes first; never rejects. */
async function settleWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  if (promises.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(promises),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

/** The literal segments before a pattern's first wildcard, as a listing prefix. */
function literalPrefix(pattern: string): string {
  const segs = pattern.split('.');
  const lit: string[] = [];
  for (const s of segs) {
    if (s === '*' || s === '>') break;
    lit.push(s);
  }
  return lit.length === 0 ? '' : lit.join('.') + '.';
}
