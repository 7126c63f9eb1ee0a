import type { Engine } from '../engine/engine.js';
import type { RillEvent } from '../model/event.js';
import type { TopicMeter } from '../model/meters.js';
import type { DelayMarked, DelayProbe } from './flush-scheduler.js';

/**
 * What a channel hands its topic's events to: one subscriber's position in the topic. The channel
 * only reads `pos` and `epoch`; the member moves them (in `deliver`) and decides what a new log
 * means for it (`adoptEpoch`).
 */
export interface ChannelMember {
  /** Highest seq handed to the subscriber. */
  readonly pos: number;
  /** The log `pos` counts in; null before the subscriber has seen any. */
  readonly epoch: string | null;
  /** Takes the event right after `pos` (same epoch, `seq === pos + 1`). */
  deliver(ev: RillEvent): void;
  /** The live feed skipped past `pos` (or changed log): the member must catch up from the log. */
  fallBehind(): void;
  /**
   * An event of another log than `epoch` arrived: true when the member takes that log as its own
   * (it has not started in any), false when it must catch up instead.
   */
  adoptEpoch(epoch: string): boolean;
}

/**
 * One topic's local fan-out: a single engine watch shared by every local subscriber of the topic.
 *
 * `lastSeq` is the highest seq the watch has shown (or the head when the watch started): every
 * event up to it is in the log, every event after it will come through the watch. A member whose
 * position reached it can go live (`goLive`) and miss nothing.
 *
 * Members are the subscribers that use the topic (they keep the channel open); the live ones are
 * the members the channel hands each event to. Long-poll waiters are told after every batch.
 */
export class Channel implements DelayMarked {
  /** Time of the first event handed to live members since the last flush; 0 when none. */
  delaySince = 0;
  private readonly members = new Set<ChannelMember>();
  private readonly live = new Set<ChannelMember>();
  private readonly waiters = new Set<() => void>();
  private seq = 0;
  private log: string | null = null;
  private readonly unwatch: () => void;
  private head: Promise<void>;
  private headFailed = false;

  constructor(
    readonly topic: string,
    private readonly engine: Engine,
    private readonly probe: DelayProbe | null = null,
    /** This topic's own series (only for topics `metrics.topics` selects); null for the rest. */
    readonly meter: TopicMeter | null = null,
  ) {
    // Watch first, then read the head: an event committed in between shows up in both, and the
    // members drop the repeat; the other order could miss it.
    this.unwatch = engine.watch(topic, (events) => this.onEvents(events));
    this.head = this.readHead();
  }

  /** The highest seq the watch has shown, or the head when it started. */
  get lastSeq(): number {
    return this.seq;
  }

  /** The log `lastSeq` counts in; null until the head is read or an event arrives. */
  get epoch(): string | null {
    return this.log;
  }

  /** True when nothing keeps the channel open: no member and no waiter. */
  get idle(): boolean {
    return this.members.size === 0 && this.waiters.size === 0;
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

  /** A subscriber starts using the topic (off the live path until it catches up). */
  addSubscriber(m: ChannelMember): void {
    this.members.add(m);
  }

  /** A subscriber is done with the topic; the owner closes the channel once it is `idle`. */
  removeSubscriber(m: ChannelMember): void {
    this.live.delete(m);
    this.members.delete(m);
  }

  /**
   * Puts a member on the live path: it gets every event the watch shows from now on. The caller
   * checked, in the same tick, that its position reached `lastSeq`.
   */
  goLive(m: ChannelMember): void {
    this.live.add(m);
  }

  /** Takes a member off the live path (it fell behind and catches up from the log). */
  leaveLive(m: ChannelMember): void {
    this.live.delete(m);
  }

  /** Calls `fn` after every batch of events, until `removeWaiter`. */
  addWaiter(fn: () => void): void {
    this.waiters.add(fn);
  }

  removeWaiter(fn: () => void): void {
    this.waiters.delete(fn);
  }

  close(): void {
    this.unwatch();
  }

  private readHead(): Promise<void> {
    const p = this.engine.head(this.topic).then((head) => {
      if (head && (this.log === null || this.log === head.epoch)) {
        this.log = head.epoch;
        if (head.lastSeq > this.seq) this.seq = head.lastSeq;
      }
    });
    // A failing head read surfaces to every subscriber's step; don't let it go unhandled here.
    p.catch(() => {
      this.headFailed = true;
    });
    return p;
  }

  /** Subscribers using the topic (for metrics). */
  get memberCount(): number {
    return this.members.size;
  }

  /** The fan-out loop: every event to every live member, in order. Keep it lean. */
  private onEvents(events: readonly RillEvent[]): void {
    let delivered = 0;
    for (const ev of events) {
      if (ev.epoch !== this.log) {
        // A new log (wiped and recreated): its seqs restart, so the watermark does too.
        this.log = ev.epoch;
        this.seq = ev.seq;
      } else if (ev.seq > this.seq) {
        this.seq = ev.seq;
      }
      for (const m of this.live) {
        if (m.epoch !== ev.epoch && !m.adoptEpoch(ev.epoch)) {
          m.fallBehind();
          continue;
        }
        if (ev.seq <= m.pos) continue;
        if (ev.seq === m.pos + 1) {
          m.deliver(ev);
          delivered++;
        } else m.fallBehind();
      }
    }
    if (delivered > 0) {
      if (this.probe !== null && this.delaySince === 0) {
        this.delaySince = events[0]!.time;
        this.probe.mark(this);
      }
    }
    for (const w of this.waiters) w();
  }
}
