/**
 * A token bucket: `rate` tokens a second flow in, at most `burst` are kept. Hand-written (it is on
 * the publish path, one per key and limit): two numbers and a timestamp, refilled lazily.
 *
 * A request costing more than `burst` (a large batch) is let through on a full bucket and leaves
 * the bucket in debt, so over any period the tokens taken never exceed `burst + rate × period`,
 * and a request within the size limits is never refused for ever.
 */
export class TokenBucket {
  private tokens: number;
  private updated: number;

  constructor(
    /** Tokens a second; 0 means no limit. */
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.updated = now;
  }

  /** Tokens in the bucket now (negative: in debt). */
  level(now: number): number {
    if (now > this.updated) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.updated) * this.rate) / 1000);
      this.updated = now;
    }
    return this.tokens;
  }

  /**
   * Ms until `cost` may be taken (0: now). The bucket need hold only `min(cost, burst)`: a larger
   * request goes through on a full bucket and leaves it in debt.
   */
  wait(cost: number, now: number): number {
    if (this.rate === 0) return 0;
    const need = Math.min(cost, this.burst);
    const level = this.level(now);
    if (level >= need) return 0;
    return Math.ceil(((need - level) * 1000) / this.rate);
  }

  /** Takes `cost` tokens, whether or not they are there (check {@link wait} first). */
  take(cost: number, now: number): void {
    this.level(now);
    this.tokens -= cost;
  }

  /** Whether the bucket is full: it then holds nothing a forgotten bucket would not. */
  isFull(now: number): boolean {
    return this.level(now) >= this.burst;
  }
}
