/**
 * Reconnect delays: exponential backoff with full jitter (AWS Architecture Blog, "Exponential
 * Backoff And Jitter"): `random(0, min(cap, base · 2^attempt))`. Full jitter spreads a crowd of
 * clients that lost the same server so they don't come back in lockstep.
 */
export interface BackoffOptions {
  /** First delay's upper bound, ms. Default 500; a server `retry:` hint replaces it. */
  initialDelay?: number;
  /** Largest delay, ms. Default 30 000. */
  maxDelay?: number;
  /** A connection open this long (ms) counts as healthy: the next drop starts over. Default 10 000. */
  healthyAfter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialDelay: 500,
  maxDelay: 30_000,
  healthyAfter: 10_000,
};

/** The delay before reconnect number `attempt` (0-based). */
export function backoffDelay(
  attempt: number,
  base: number,
  cap: number,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * Math.min(cap, base * 2 ** Math.min(attempt, 30)));
}

/** Tracks attempts across drops; reset after a healthy period. */
export class Backoff {
  private attempt = 0;
  private openedAt: number | undefined;
  /** The server's `retry:` hint, ms. */
  hint: number | undefined;
  private readonly o: Required<BackoffOptions>;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.o = { ...DEFAULT_BACKOFF, ...options };
  }

  opened(): void {
    this.openedAt = Date.now();
  }

  /**
   * The delay before the next attempt, at least `floor` (a `Retry-After`). Counts the attempt.
   */
  next(floor = 0): number {
    if (this.openedAt !== undefined && Date.now() - this.openedAt >= this.o.healthyAfter) {
      this.attempt = 0;
    }
    this.openedAt = undefined;
    const d = backoffDelay(
      this.attempt++,
      this.hint ?? this.o.initialDelay,
      this.o.maxDelay,
      this.random,
    );
    return Math.min(Math.max(d, floor), Math.max(this.o.maxDelay, floor));
  }

  get attempts(): number {
    return this.attempt;
  }
}
