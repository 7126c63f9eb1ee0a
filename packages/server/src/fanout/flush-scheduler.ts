/** Longest a flush is put off to batch more events into each socket write, ms (see markDirty). */
export const MAX_FLUSH_DELAY_MS = 10;

/** Something with queued output to write in the next coalesced flush. */
export interface Flushable {
  flush(): void;
}

/**
 * Flush pacing (docs/architecture.md § The fan-out core): subscriptions that queued output are
 * flushed together, once per tick at most, so each socket gets one write however many events
 * arrived since its last.
 *
 * Write less often under load (the fan-out profile is mostly writev syscalls, one per socket per
 * flush): the next flush waits as long as the last one took, so flushing never takes more than
 * about half the process and each write carries every event that arrived meanwhile. A light flush
 * (few sockets, microseconds) adds no delay; a heavy one adds at most `maxDelayMs` to an event's
 * latency. Nothing is dropped, only batched.
 */
export class FlushScheduler {
  private dirty: Flushable[] = [];
  private scheduled = false;
  /** When the last flush ended and how long it took. */
  private lastFlushEnd = 0;
  private lastFlushMs = 0;

  /** `now` is a monotonic clock in ms (tests pass their own). */
  constructor(
    private readonly maxDelayMs = MAX_FLUSH_DELAY_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Queues `item` for the next flush. Call it once per flush, when its queue stops being empty;
   * an item whose output is gone by then (ended, already flushed) must make `flush` a no-op.
   */
  markDirty(item: Flushable): void {
    this.dirty.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    const wait = this.lastFlushEnd + this.lastFlushMs - this.now();
    if (wait < 1) setImmediate(this.flushAll);
    else setTimeout(this.flushAll, Math.min(wait, this.maxDelayMs));
  }

  /** Bound once: scheduling it allocates no closure per flush. */
  private readonly flushAll = (): void => {
    this.scheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    const start = this.now();
    for (const item of dirty) item.flush();
    this.lastFlushEnd = this.now();
    this.lastFlushMs = this.lastFlushEnd - start;
  };
}
