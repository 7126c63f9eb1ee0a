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
    this.lastFlushEnd = this.now();
    this.lastFlushMs = this.lastFlushEnd - start;
    this.lastFlushHeavy = frames >= HEAVY_FRAMES_PER_ITEM * dirty.length;
  };
}
