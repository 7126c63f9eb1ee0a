/** Longest a flush is put off to batch more events into each socket write, ms (see markDirty). */
export const MAX_FLUSH_DELAY_MS = 10;

/**
 * Frames per flushed item, on average, from which a flush counts as heavy: its writes were
 * batching events that arrived while the previous flush was pending, so pacing the next one pays.
 */
export const HEAVY_FRAMES_PER_ITEM = 2;

/** Something with queued output to write in the next coalesced flush. */
export interface Flushable {
  /** Writes what is queued; returns the frames written (0 when nothing was, or it has ended). */
  flush(): number;
}

/**
 * Flush pacing (docs/architecture.md § The fan-out core): subscriptions that queued output are
 * flushed together, once per tick at most, so each socket gets one write however many events
 * arrived since its last.
 *
 * At light load a flush runs in the next tick: when the last flush wrote about one frame per
 * socket, events are not arriving faster than they are written, and waiting would only add
 * latency without batching anything.
 *
 * Under load (the last flush wrote several frames per socket on average) write less often: the
 * fan-out profile is mostly writev syscalls, one per socket per flush, so the next flush waits as
 * long as the last one took, so flushing never takes more than about half the process and each
 * write carries every event that arrived meanwhile. That adds at most `maxDelayMs` to an event's
 * latency. Nothing is dropped, only batched.
 */
export class FlushScheduler {
  private dirty: Flushable[] = [];
  private scheduled = false;
  /** When the last flush ended and how long it took. */
  private lastFlushEnd = 0;
  private lastFlushMs = 0;
  /** Whether the last flush was heavy (see HEAVY_FRAMES_PER_ITEM): only then is the next paced. */
  private lastFlushHeavy = false;

  /**
   * `now` is a monotonic clock in ms (tests pass their own); `afterFlush` runs once after each
   * flush of every dirty item (the delivery delay probe).
   */
  constructor(
    private readonly maxDelayMs = MAX_FLUSH_DELAY_MS,
    private readonly now: () => number = () => performance.now(),
    private readonly afterFlush: (() => void) | null = null,
  ) {}

  /**
   * Queues `item` for the next flush. Call it once per flush, when its queue stops being empty;
   * an item whose output is gone by then (ended, already flushed) must make `flush` a no-op.
   */
  markDirty(item: Flushable): void {
    this.dirty.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    const wait = this.lastFlushHeavy ? this.lastFlushEnd + this.lastFlushMs - this.now() : 0;
    if (wait < 1) setImmediate(this.flushAll);
    else setTimeout(this.flushAll, Math.min(wait, this.maxDelayMs));
  }

  /** Bound once: scheduling it allocates no closure per flush. */
  private readonly flushAll = (): void => {
    this.scheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    const start = this.now();
    let frames = 0;
    for (const item of dirty) frames += item.flush();
    if (this.afterFlush !== null) this.afterFlush();
    this.lastFlushEnd = this.now();
    this.lastFlushMs = this.lastFlushEnd - start;
    this.lastFlushHeavy = frames >= HEAVY_FRAMES_PER_ITEM * dirty.length;
  };
}

/** A channel whose live events wait for the next flush since `delaySince` (an event time, ms). */
export interface DelayMarked {
  delaySince: number;
}

/**
 * Measures the delay from an event's time (set when the engine stored it) to the flush that wrote
 * it to the live subscribers' sockets, once per flush per topic rather than per delivery: a
 * channel marks itself with the time of its first event since the last flush, and the flush
 * records `now - that` for every channel marked.
 */
export class DelayProbe {
  private marked: DelayMarked[] = [];

  constructor(
    private readonly record: (ms: number, now: number) => void,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Called by a channel when `delaySince` goes from 0 to an event time. */
  mark(ch: DelayMarked): void {
    this.marked.push(ch);
  }

  /** After a flush: one sample per marked channel. */
  readonly flushed = (): void => {
    if (this.marked.length === 0) return;
    const now = this.clock();
    for (const ch of this.marked) {
      this.record(Math.max(0, now - ch.delaySince), now);
      ch.delaySince = 0;
    }
    this.marked = [];
  };
}
