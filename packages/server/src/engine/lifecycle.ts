import { closedError } from './common.js';

/** What an engine does when it closes, beyond what {@link Lifecycle} does for every engine. */
export interface CloseSteps {
  /** Runs right after the engine is marked closed: cut short what sleeps (a reconnect pause). */
  wake?: () => void;
  /**
   * Runs once nothing is in flight any more: stop the watches, drop the listeners, close the
   * client(s). Errors of a client being closed mean nothing now: swallow them ({@link quietly}).
   */
  release: () => Promise<void> | void;
}

/**
 * An engine's open/closed state and its close, the same for every engine. Closing marks the engine
 * closed at once (every later operation fails with `engine_unavailable`, every later watch is a
 * no-op), stops its timers, waits for the operations in flight (pending appends finish, as the
 * contract promises, and a sweep is not cut half-way), then releases the engine's resources.
 * Calling `close` again returns the same promise.
 */
export class Lifecycle {
  private isClosed = false;
  private closing: Promise<void> | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly timers: NodeJS.Timeout[] = [];

  /** @param engine the engine's name, for the error operations get once it is closed */
  constructor(private readonly engine: string) {}

  /** True from the first `close` call on. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Throws `engine_unavailable` once the engine is closed: every operation starts with it. */
  assertOpen(): void {
    if (this.isClosed) throw closedError(this.engine);
  }

  /** Keeps `op` among the operations `close` waits for until it settles; returns `op`. */
  track<T>(op: Promise<T>): Promise<T> {
    this.inflight.add(op);
    const forget = (): void => {
      this.inflight.delete(op);
    };
    void op.then(forget, forget);
    return op;
  }

  /** Calls `fn` every `ms` until the engine closes; the timer does not keep the process alive. */
  every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** Closes the engine once (see the class comment); `steps` of later calls are not used. */
  close(steps: CloseSteps): Promise<void> {
    this.closing ??= this.shutdown(steps);
    return this.closing;
  }

  private async shutdown(steps: CloseSteps): Promise<void> {
    this.isClosed = true;
    steps.wake?.();
    for (const timer of this.timers) clearInterval(timer);
    // Whatever was tracked while waiting is waited for too.
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    await steps.release();
  }
}

/** Waits for `op` and ignores how it ended: for clients being closed, whose errors mean nothing. */
export async function quietly(op: Promise<unknown> | undefined): Promise<void> {
  await op?.catch(() => undefined);
}
