import type { Engine } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import type { Meters } from '../model/meters.js';
import { Channel } from './channel.js';
import { DelayProbe, FlushScheduler } from './flush-scheduler.js';
import type { Sink } from './sink.js';
import type { SubscribeOptions, SubscriptionHost, SubscriptionLimits } from './subscription.js';
import { Subscription } from './subscription.js';

/** The hub's bounds; see `limits` in config.ts for their meaning and defaults. */
export type HubLimits = SubscriptionLimits;

export interface HubOptions {
  limits: HubLimits;
  /** Idle time after which a stream gets a heartbeat, ms. */
  heartbeatMs: number;
  /** The server's counters; without them nothing is counted or measured. */
  meters?: Meters | null;
}

/** What the hub's subscriptions hold up, for the saturation gauges (read at scrape time). */
export interface HubSaturation {
  subscriptions: number;
  channels: number;
  /** Subscriptions with a topic off the live path (catching up: slow consumers, new ones). */
  behind: number;
  /** Events the subscriptions in catch-up are behind their topics' last seq. */
  behindEvents: number;
  /** Bytes queued or in socket buffers over every subscription. */
  bufferedBytes: number;
}

/**
 * The per-process fan-out (docs/architecture.md § The fan-out core): one watch per topic with
 * local subscribers (a {@link Channel}), each event framed once per wire format, one coalesced
 * write per subscriber per tick ({@link FlushScheduler}), one shared heartbeat sweep instead of a
 * timer per connection.
 *
 * The hub sets subscriptions up and takes them down; it is not on an event's path. Subscriptions
 * reach it only through the {@link SubscriptionHost} it hands them.
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
  private readonly heartbeatTimer: NodeJS.Timeout;
  private readonly heartbeatMs: number;
  /** What every subscription of this hub is given: made once, not per subscription. */
  private readonly host: SubscriptionHost;
  private readonly meters: Meters | null;
  private readonly probe: DelayProbe | null;

  constructor(engine: Engine, options: HubOptions) {
    this.engine = engine;
    this.limits = options.limits;
    this.heartbeatMs = options.heartbeatMs;
    const meters = options.meters ?? null;
    this.meters = meters;
    this.probe =
      meters === null
        ? null
        : new DelayProbe((ms, now) => {
            meters.deliveryLatency.add(ms, now);
            meters.onDeliveryDelay?.(ms / 1000);
          });
    this.host = {
      engine,
      limits: options.limits,
      meters,
      flushes: new FlushScheduler(undefined, undefined, this.probe?.flushed ?? null),
      openChannel: (topic) => this.channel(topic),
      releaseChannel: (ch) => this.releaseChannel(ch),
      ended: (sub) => this.forget(sub),
    };
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

  /** One pass over the subscriptions: what they hold up (for metrics, not the hot path). */
  saturation(): HubSaturation {
    let behind = 0;
    let behindEvents = 0;
    let bufferedBytes = 0;
    for (const sub of this.subs) {
      bufferedBytes += sub.bufferedBytes();
      if (!sub.closed && sub.behind) {
        behind++;
        behindEvents += sub.backlog().events;
      }
    }
    return {
      subscriptions: this.subs.size,
      channels: this.channels.size,
      behind,
      behindEvents,
      bufferedBytes,
    };
  }

  /** Subscribers of `topic` on this node (for per-topic metrics). */
  subscribersOf(topic: string): number {
    return this.channels.get(topic)?.memberCount ?? 0;
  }

  /**
   * Starts a subscription feeding `sink`. Patterns are expanded to the topics that exist now and
   * followed as new ones appear. Resolves once every initial topic is attached; events then flow.
   */
  async subscribe(sink: Sink, options: SubscribeOptions): Promise<Subscription> {
    const sub = new Subscription(this.host, sink, options);
    this.subs.add(sub);
    this.meters?.subscriptionStarted(options.cursor ? 'resume' : options.start.kind);
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

  /** Ends a subscription without telling its client (the connection is gone, a page is done). */
  unsubscribe(sub: Subscription): void {
    sub.detach();
    this.forget(sub);
  }

  private forget(sub: Subscription): void {
    this.subs.delete(sub);
    if (this.patternSubs.delete(sub) && this.patternSubs.size === 0 && this.unwatchTopics) {
      this.unwatchTopics();
      this.unwatchTopics = null;
    }
  }

  private channel(topic: string): Channel {
    let ch = this.channels.get(topic);
    if (!ch) {
      ch = new Channel(topic, this.engine, this.probe, this.meters?.topic(topic) ?? null);
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
    ch.addWaiter(check);
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
      ch.removeWaiter(check);
      this.releaseChannel(ch);
    }
  }

  private releaseChannel(ch: Channel): void {
    if (ch.idle && this.channels.get(ch.topic) === ch) {
      ch.close();
      this.channels.delete(ch.topic);
    }
  }

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
    const now = Date.now();
    const idleSince = now - this.heartbeatMs;
    for (const sub of this.subs) sub.heartbeatIfIdle(idleSince, now);
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
