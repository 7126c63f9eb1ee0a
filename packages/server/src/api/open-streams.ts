import { isRevoked, OPEN_IDENTITY, type Identity } from '../auth/index.js';
import { RillError } from '../model/errors.js';

/** What the registry does to a stream it tracks; each transport ends its own way. */
export interface TrackedStream {
  /** Its credential was revoked: end it with `err` (`unauthorized`). */
  revoked(err: RillError): void;
  /**
   * Its identity's `expiresAt` has come: end it with `err` (`token_expired`). Without it no
   * deadline is kept (a long-poll bounds its own wait).
   */
  expired?(err: RillError): void;
}

/** A stream's place in the registry. */
export interface StreamHandle {
  /** The stream now runs under another identity (a WebSocket that re-authenticated). */
  update(identity: Identity): void;
  /** The stream ended: forget it. Idempotent. */
  untrack(): void;
}

const NOT_TRACKED: StreamHandle = { update: () => undefined, untrack: () => undefined };

/** Resolution of {@link Deadlines}, ms: a deadline fires at most this long after its time. */
export const DEADLINE_RESOLUTION_MS = 250;

/**
 * Deadlines for many streams on one timer: each goes into the bucket of its time rounded up to
 * {@link DEADLINE_RESOLUTION_MS}, and one sweep per resolution step fires the buckets that are due,
 * so a sweep costs what it fires, not what is waiting. The timer runs only while a deadline waits
 * and never keeps the process alive.
 */
export class Deadlines {
  private readonly buckets = new Map<number, Set<() => void>>();
  /** The last bucket swept; later deadlines go after it. */
  private swept = 0;
  private timer: NodeJS.Timeout | undefined;

  /** Calls `fn` once `at` (ms since the epoch) has passed; returns what cancels it. */
  at(at: number, fn: () => void): () => void {
    if (this.timer === undefined) {
      this.swept = Math.floor(Date.now() / DEADLINE_RESOLUTION_MS);
      this.timer = setInterval(() => this.sweep(), DEADLINE_RESOLUTION_MS);
      this.timer.unref();
    }
    const key = Math.max(Math.ceil(at / DEADLINE_RESOLUTION_MS), this.swept + 1);
    let bucket = this.buckets.get(key);
    if (!bucket) this.buckets.set(key, (bucket = new Set()));
    // A wrapper per call: the same function scheduled twice is two deadlines.
    const entry = (): void => fn();
    bucket.add(entry);
    return () => {
      const b = this.buckets.get(key);
      if (b?.delete(entry) && b.size === 0) this.buckets.delete(key);
    };
  }

  private sweep(): void {
    const now = Math.floor(Date.now() / DEADLINE_RESOLUTION_MS);
    const due: Array<() => void> = [];
    if (now - this.swept <= this.buckets.size) {
      for (let k = this.swept + 1; k <= now; k++) this.take(k, due);
    } else {
      // Longer since the last sweep than there are buckets (a paused process): look at each.
      for (const k of [...this.buckets.keys()]) if (k <= now) this.take(k, due);
    }
    this.swept = now;
    if (this.buckets.size === 0) this.stop();
    for (const fn of due) fn();
  }

  private take(key: number, into: Array<() => void>): void {
    const b = this.buckets.get(key);
    if (!b) return;
    this.buckets.delete(key);
    into.push(...b);
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.stop();
    this.buckets.clear();
  }
}

/** What a stream whose token expired ends with. */
export function tokenExpired(): RillError {
  return new RillError('token_expired', 'The token has expired');
}

interface Entry {
  stream: TrackedStream;
  credentialId: string;
  cancelExpiry: (() => void) | undefined;
}

/**
 * The open streams (SSE, NDJSON, long-poll waits, WebSockets) by the credential that opened them,
 * so that a revoked credential's streams can be ended, and each stream's expiry on the shared
 * {@link Deadlines}. Touched when a stream opens and ends, never per delivered event. Streams of a
 * server without authentication are not tracked (nothing can be revoked or expire).
 */
export class OpenStreams {
  readonly deadlines = new Deadlines();
  private readonly byCredential = new Map<string, Set<Entry>>();

  /** Number of tracked streams (tests, metrics). */
  get size(): number {
    let n = 0;
    for (const set of this.byCredential.values()) n += set.size;
    return n;
  }

  /**
   * Tracks a stream opened by `identity` until its handle's `untrack`: it is told when its
   * credential is revoked and when its identity expires (at `expiresAt`, when there is one).
   */
  track(identity: Identity, stream: TrackedStream): StreamHandle {
    if (identity === OPEN_IDENTITY) return NOT_TRACKED;
    const entry: Entry = { stream, credentialId: '', cancelExpiry: undefined };
    let tracked = true;
    this.place(entry, identity);
    return {
      update: (next) => {
        if (!tracked) return;
        this.remove(entry);
        this.place(entry, next);
      },
      untrack: () => {
        if (!tracked) return;
        tracked = false;
        this.remove(entry);
      },
    };
  }

  /**
   * Ends, with `unauthorized`, every stream whose credential is in `revoked` (as a reload reports
   * them: exact ids and `jwt:<kid>:*`); returns how many.
   */
  revoke(revoked: readonly string[]): number {
    const hit: Entry[] = [];
    for (const [id, set] of this.byCredential) if (isRevoked(id, revoked)) hit.push(...set);
    for (const e of hit) this.remove(e);
    const err = new RillError('unauthorized', 'The credentials of this stream were revoked');
    for (const e of hit) e.stream.revoked(err);
    return hit.length;
  }

  close(): void {
    this.deadlines.close();
    this.byCredential.clear();
  }

  private place(entry: Entry, identity: Identity): void {
    entry.credentialId = identity.credentialId;
    let set = this.byCredential.get(identity.credentialId);
    if (!set) this.byCredential.set(identity.credentialId, (set = new Set()));
    set.add(entry);
    const expired = entry.stream.expired;
    if (identity.expiresAt !== null && expired) {
      entry.cancelExpiry = this.deadlines.at(identity.expiresAt, () => {
        entry.cancelExpiry = undefined;
        this.remove(entry);
        expired.call(entry.stream, tokenExpired());
      });
    }
  }

  private remove(entry: Entry): void {
    entry.cancelExpiry?.();
    entry.cancelExpiry = undefined;
    const set = this.byCredential.get(entry.credentialId);
    if (set?.delete(entry) && set.size === 0) this.byCredential.delete(entry.credentialId);
  }
}
