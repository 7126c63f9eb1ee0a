import { z } from 'zod';

/**
 * The rate and count limits a key, a user or a client address is held to (docs/limits.md): their
 * names (public: they are the `limit` of a `rate_limited` error), scopes and the schema of one set,
 * shared by the configuration (`rateLimits`) and an API key's own entry (`limits`).
 */

/** The limits, as a `rate_limited` error names them in `details.limit`. */
export const LIMIT_NAMES = [
  'connections',
  'subscriptions',
  'connectionsPerSecond',
  'publishesPerSecond',
  'publishBytesPerSecond',
  'topicsPerMinute',
] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

/** Who a limit is counted for: an API key, a JWT `sub`, a client address. */
export type LimitScope = 'key' | 'user' | 'address';

/** A token bucket: `rate` tokens a second (a minute for `topicsPerMinute`), at most `burst` saved. */
export interface Rate {
  rate: number;
  burst: number;
}

/** The rate limits (token buckets), as opposed to the counts of what is open. */
export const RATE_LIMITS = [
  'connectionsPerSecond',
  'publishesPerSecond',
  'publishBytesPerSecond',
  'topicsPerMinute',
] as const;
export type RateLimitName = (typeof RATE_LIMITS)[number];

/** One scope's limits, every one set; 0 means no limit (a count of 0, a rate of 0). */
export interface LimitSet {
  /** Streams open at once: SSE and NDJSON streams, WebSockets, long-polls waiting. */
  connections: number;
  /** Subscriptions open at once: a stream or long-poll is one, each WebSocket `subscribe` one. */
  subscriptions: number;
  connectionsPerSecond: Rate;
  /** Events published (a batch of n is n). */
  publishesPerSecond: Rate;
  /** Bytes of publish bodies (HTTP) and `publish` messages (WebSocket). */
  publishBytesPerSecond: Rate;
  /** Publishes to a topic that did not exist. */
  topicsPerMinute: Rate;
}

/** Some of a scope's limits: an override or an API key's own. */
export type LimitOverride = Partial<LimitSet>;

const BYTE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kb: 1000,
  kib: 1024,
  mb: 1_000_000,
  mib: 1024 * 1024,
  gb: 1_000_000_000,
  gib: 1024 ** 3,
};

/** A number, or for bytes a size such as `"1MiB"`. */
function amount(units: boolean) {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    if (typeof v === 'number') return v;
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
    const mult = m && units ? BYTE_UNITS[m[2]!.toLowerCase()] : m && m[2] === '' ? 1 : undefined;
    if (!m || mult === undefined) {
      ctx.addIssue({
        code: 'custom',
        message: units ? 'expected a number or a size such as "1MiB"' : 'expected a number',
      });
      return z.NEVER;
    }
    return Math.round(Number(m[1]) * mult);
  });
}

/** A rate: `100`, or `{rate: 100, burst: 500}` (burst defaults to the rate). */
function rateSchema(units: boolean) {
  const n = amount(units).pipe(z.number().min(0).max(1e12));
  return z.union([n, z.strictObject({ rate: n, burst: n.optional() })]).transform((v): Rate =>
    typeof v === 'number'
      ? { rate: v, burst: v }
      : {
          rate: v.rate,
          burst: v.burst ?? v.rate,
        },
  );
}

const count = z.number().int().min(0).max(1e9);

/** The fields of a limit set, each optional (an override). */
const overrideShape = {
  connections: count.optional(),
  subscriptions: count.optional(),
  connectionsPerSecond: rateSchema(false).optional(),
  publishesPerSecond: rateSchema(false).optional(),
  publishBytesPerSecond: rateSchema(true).optional(),
  topicsPerMinute: rateSchema(false).optional(),
};

/** Some limits of one scope, the others taken from the scope's defaults. */
export const LimitOverrideSchema = z.strictObject(overrideShape);

/** A scope's whole limit set, each limit defaulting to `defaults`'. */
export function limitSetSchema(defaults: LimitSet) {
  return z
    .strictObject(overrideShape)
    .prefault({})
    .transform((o): LimitSet => ({ ...defaults, ...stripUndefined(o) }));
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

const MiB = 1024 * 1024;

/**
 * Defaults for a public deployment (the reasoning is in docs/limits.md § Defaults). Each publish
 * burst holds at least one request of the largest size allowed (10,000 events, 8 MiB), so a
 * request within the size limits passes on a full bucket.
 */
export const DEFAULT_LIMITS: Record<LimitScope, LimitSet> = {
  key: {
    connections: 10_000,
    subscriptions: 100_000,
    connectionsPerSecond: { rate: 500, burst: 5_000 },
    publishesPerSecond: { rate: 10_000, burst: 20_000 },
    publishBytesPerSecond: { rate: 64 * MiB, burst: 128 * MiB },
    topicsPerMinute: { rate: 6_000, burst: 6_000 },
  },
  user: {
    connections: 100,
    subscriptions: 1_000,
    connectionsPerSecond: { rate: 10, burst: 100 },
    publishesPerSecond: { rate: 200, burst: 10_000 },
    publishBytesPerSecond: { rate: 1 * MiB, burst: 8 * MiB },
    topicsPerMinute: { rate: 60, burst: 100 },
  },
  address: {
    connections: 1_000,
    subscriptions: 10_000,
    connectionsPerSecond: { rate: 100, burst: 1_000 },
    publishesPerSecond: { rate: 1_000, burst: 10_000 },
    publishBytesPerSecond: { rate: 8 * MiB, burst: 16 * MiB },
    topicsPerMinute: { rate: 600, burst: 600 },
  },
};
