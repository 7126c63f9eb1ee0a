import proxyaddr from '@fastify/proxy-addr';
import type { Identity } from '../auth/identity.js';
import { RillError } from '../model/errors.js';
import {
  RATE_LIMITS,
  type LimitName,
  type LimitOverride,
  type LimitScope,
  type LimitSet,
  type Rate,
  type RateLimitName,
} from '../model/limits.js';
import { addressKey } from './client-address.js';
import type { LimitSettings } from './settings.js';
import { TokenBucket } from './token-bucket.js';

/** Index of each rate limit in a subject's buckets and counters. */
const CPS = 0;
const PUB = 1;
const BYTES = 2;
const TOPICS = 3;
const RATE_INDEX: Record<RateLimitName, number> = {
  connectionsPerSecond: CPS,
  publishesPerSecond: PUB,
  publishBytesPerSecond: BYTES,
  topicsPerMinute: TOPICS,
};

/** A subject unused this long, with nothing open and full buckets, is forgotten. */
const IDLE_MS = 30_000;

const SCOPE_WORDS: Record<LimitScope, string> = {
  key: 'this API key',
  user: 'this user',
  address: 'this client address',
};
const LIMIT_WORDS: Record<LimitName, string> = {
  connections: 'streams open at once',
  subscriptions: 'subscriptions open at once',
  connectionsPerSecond: 'new streams per second',
  publishesPerSecond: 'events published per second',
  publishBytesPerSecond: 'bytes published per second',
  topicsPerMinute: 'topics created per minute',
};

/** What the other nodes hold of one subject, as the last exchange told (shared limits). */
export interface RemoteCounts {
  connections: number;
  subscriptions: number;
}

/**
 * One key's, user's or address's counters on this node: what it has open, its token buckets, and
 * (shared limits) what it consumed since it was created, which the other nodes are told.
 */
export class Subject {
  connections = 0;
  subscriptions = 0;
  readonly buckets: Array<TokenBucket | null> = [null, null, null, null];
  /** Tokens taken here since creation, per rate limit (sent to the other nodes). */
  readonly consumed = [0, 0, 0, 0];
  readonly remote: RemoteCounts = { connections: 0, subscriptions: 0 };
  lastUsed: number;
  /** When this node started counting it. */
  readonly created: number;

  constructor(
    /** `key:<name>`, `user:<sub>`, `address:<ip>`: unique over scopes, the same on every node. */
    readonly id: string,
    readonly scope: LimitScope,
    public limits: LimitSet,
    /** What the limits were resolved from (an API key's own `limits`), to see it change. */
    public source: LimitOverride | undefined,
    now: number,
  ) {
    this.lastUsed = now;
    this.created = now;
  }

  bucket(i: number, now: number): TokenBucket | null {
    let b = this.buckets[i]!;
    if (b === null) {
      const r = this.rate(i);
      if (r.rate === 0) return null;
      // Per minute for topics: the bucket counts per second.
      const perSecond = i === TOPICS ? r.rate / 60 : r.rate;
      b = this.buckets[i] = new TokenBucket(perSecond, r.burst, now);
    }
    return b;
  }

  private rate(i: number): Rate {
    return this.limits[RATE_LIMITS[i]!];
  }

  /** Charges tokens the other nodes took (shared limits). */
  charge(i: number, n: number, now: number): void {
    if (n > 0) this.bucket(i, now)?.take(n, now);
  }

  /** Nothing open, nothing owed, not used for a while: nothing is lost by forgetting it. */
  idle(now: number): boolean {
    return (
      this.connections === 0 &&
      this.subscriptions === 0 &&
      now - this.lastUsed > IDLE_MS &&
      this.buckets.every((b) => b === null || b.isFull(now))
    );
  }
}

/** What a stream or a subscription holds until it ends: its place in its subjects' counts. */
export class Lease {
  private released = false;

  constructor(
    private subjects: readonly Subject[],
    private readonly connection: boolean,
    private readonly subscription: boolean,
  ) {}

  /** Gives the place back. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const s of this.subjects) this.drop(s);
  }

  /**
   * The stream now runs for other subjects (a WebSocket that authenticated after its handshake):
   * counts it under the ones it did not have, which must have room, else throws `rate_limited`
   * and changes nothing.
   */
  moveTo(limiter: Limiter, next: readonly Subject[]): void {
    if (this.released) return;
    const added = next.filter((s) => !this.subjects.includes(s));
    limiter.check(added, { connection: this.connection, subscription: this.subscription });
    limiter.commit(added, { connection: this.connection, subscription: this.subscription });
    for (const s of this.subjects) if (!next.includes(s)) this.drop(s);
    this.subjects = next;
  }

  private drop(s: Subject): void {
    if (this.connection) s.connections--;
    if (this.subscription) s.subscriptions--;
  }
}

/**
 * The rate and count limits of one node (docs/limits.md): a {@link Subject} per key, user and
 * address seen recently, checked on every stream, subscription and publish without leaving the
 * process. With shared limits a {@link SharedLimits} exchange adds what the other nodes counted,
 * one interval late. Hand-written: it is on the publish and subscribe paths.
 */
export class Limiter {
  readonly enabled: boolean;
  private readonly subjects = new Map<string, Subject>();
  private readonly addressRanges: Array<{
    match: (a: string, i: number) => boolean;
    o: LimitOverride;
  }>;
  private readonly sweepTimer: NodeJS.Timeout | undefined;

  constructor(readonly settings: LimitSettings) {
    this.enabled = settings.enabled;
    this.addressRanges = Object.entries(settings.overrides.addresses).map(([range, o]) => ({
      match: proxyaddr.compile(range),
      o,
    }));
    if (this.enabled) {
      this.sweepTimer = setInterval(() => this.sweep(Date.now()), 10_000);
      this.sweepTimer.unref();
    }
  }

  /** Subjects seen and kept (tests, metrics). */
  get size(): number {
    return this.subjects.size;
  }

  /** Every subject this node holds (for the exchange with the other nodes). */
  all(): IterableIterator<Subject> {
    return this.subjects.values();
  }

  /** The subject named `id`, if this node holds it. */
  get(id: string): Subject | undefined {
    return this.subjects.get(id);
  }

  /**
   * Who a request counts for: its API key or JWT subject, and its client address unless that is
   * exempt. Empty when limits are off.
   */
  subjectsOf(identity: Identity, address: string | null, addressExempt: boolean): Subject[] {
    if (!this.enabled) return [];
    const now = Date.now();
    const out: Subject[] = [];
    if (identity.kind === 'apiKey' && identity.name !== undefined) {
      const own = identity.limits;
      const s = this.subject(`key:${identity.name}`, 'key', now, own, () => ({
        ...this.settings.perKey,
        ...this.settings.overrides.keys[identity.name!],
        ...own,
      }));
      out.push(s);
    } else if (identity.kind === 'jwt' && identity.sub !== null) {
      out.push(
        this.subject(`user:${identity.sub}`, 'user', now, undefined, () => ({
          ...this.settings.perUser,
          ...this.settings.overrides.users[identity.sub!],
        })),
      );
    }
    if (address !== null && !addressExempt) {
      const key = addressKey(address);
      out.push(
        this.subject(`address:${key}`, 'address', now, undefined, () => {
          const o = this.addressRanges.find((r) => r.match(address, 0))?.o;
          return { ...this.settings.perAddress, ...o };
        }),
      );
    }
    return out;
  }

  private subject(
    id: string,
    scope: LimitScope,
    now: number,
    source: LimitOverride | undefined,
    limits: () => LimitSet,
  ): Subject {
    let s = this.subjects.get(id);
    if (s === undefined) {
      s = new Subject(id, scope, limits(), source, now);
      this.subjects.set(id, s);
    } else if (s.source !== source) {
      // The key's own limits changed (its entry was reloaded): new buckets with the new rates.
      s.limits = limits();
      s.source = source;
      s.buckets.fill(null);
    }
    s.lastUsed = now;
    return s;
  }

  /**
   * Opens a stream (`connection`: counts against `connections` and `connectionsPerSecond`) and/or
   * a subscription for `subjects`, or throws `rate_limited` naming the first limit reached.
   */
  open(subjects: readonly Subject[], what: { connection: boolean; subscription: boolean }): Lease {
    this.check(subjects, what);
    this.commit(subjects, what);
    return new Lease(subjects, what.connection, what.subscription);
  }

  /** Throws `rate_limited` if any subject has no room for what is being opened. */
  check(subjects: readonly Subject[], what: { connection: boolean; subscription: boolean }): void {
    const now = Date.now();
    for (const s of subjects) {
      if (what.connection) {
        const max = s.limits.connections;
        if (max > 0 && s.connections + s.remote.connections >= max) {
          throw refusal(s, 'connections', max, 1);
        }
        this.checkRate(s, CPS, 1, now);
      }
      if (what.subscription) {
        const max = s.limits.subscriptions;
        if (max > 0 && s.subscriptions + s.remote.subscriptions >= max) {
          throw refusal(s, 'subscriptions', max, 1);
        }
      }
    }
  }

  /** Counts what {@link check} allowed. */
  commit(subjects: readonly Subject[], what: { connection: boolean; subscription: boolean }): void {
    const now = Date.now();
    for (const s of subjects) {
      if (what.connection) {
        s.connections++;
        this.takeRate(s, CPS, 1, now);
      }
      if (what.subscription) s.subscriptions++;
    }
  }

  /**
   * Before a publish's body is read: refuses when a subject's publish or byte bucket cannot take
   * even one event or the announced body (`bytes`, from Content-Length; 0 if unknown).
   */
  precheckPublish(subjects: readonly Subject[], bytes: number): void {
    const now = Date.now();
    for (const s of subjects) {
      this.checkRate(s, PUB, 1, now);
      if (bytes > 0) this.checkRate(s, BYTES, bytes, now);
    }
  }

  /** Counts a publish of `events` events in `bytes` bytes, or throws `rate_limited`. */
  publish(subjects: readonly Subject[], events: number, bytes: number): void {
    if (subjects.length === 0) return;
    const now = Date.now();
    for (const s of subjects) {
      this.checkRate(s, PUB, events, now);
      this.checkRate(s, BYTES, bytes, now);
    }
    for (const s of subjects) {
      this.takeRate(s, PUB, events, now);
      this.takeRate(s, BYTES, bytes, now);
    }
  }

  /** Counts the creation of a topic, or throws `rate_limited`. */
  createTopic(subjects: readonly Subject[]): void {
    const now = Date.now();
    for (const s of subjects) this.checkRate(s, TOPICS, 1, now);
    for (const s of subjects) this.takeRate(s, TOPICS, 1, now);
  }

  private checkRate(s: Subject, i: number, cost: number, now: number): void {
    const b = s.bucket(i, now);
    if (b === null) return;
    const waitMs = b.wait(cost, now);
    if (waitMs > 0) {
      const name = RATE_LIMITS[i]!;
      throw refusal(s, name, s.limits[name].rate, waitMs / 1000);
    }
  }

  private takeRate(s: Subject, i: number, cost: number, now: number): void {
    const b = s.bucket(i, now);
    if (b === null) return;
    b.take(cost, now);
    s.consumed[i]! += cost;
  }

  /** Forgets subjects that hold nothing (kept while shared limits may still report on them). */
  sweep(now: number): void {
    for (const [id, s] of this.subjects) {
      if (s.idle(now) && s.remote.connections === 0 && s.remote.subscriptions === 0) {
        this.subjects.delete(id);
      }
    }
  }

  close(): void {
    clearInterval(this.sweepTimer);
  }
}

/** The `rate_limited` error for `subject` reaching `limit`. */
function refusal(s: Subject, limit: LimitName, value: number, retryAfter: number): RillError {
  return new RillError(
    'rate_limited',
    `Limit reached: at most ${value} ${LIMIT_WORDS[limit]} for ${SCOPE_WORDS[s.scope]} (${limit})`,
    { details: { limit, scope: s.scope, limitValue: value }, retryAfter },
  );
}

export { RATE_INDEX };
