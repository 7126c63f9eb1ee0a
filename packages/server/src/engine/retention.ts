import { randomBytes } from 'node:crypto';
import {
  resolveRetention,
  type RetentionConfig,
  type RetentionOverride,
  type TopicRetention,
  type TopicRetentionInfo,
} from './engine.js';

export { resolveRetention, type TopicRetention } from './engine.js';

/** `base` with the fields `override` sets taken from it. */
export function applyOverride(
  base: TopicRetention,
  override: RetentionOverride | null | undefined,
): TopicRetention {
  if (override === null || override === undefined) return base;
  return {
    maxEvents: override.maxEvents ?? base.maxEvents,
    maxAgeMs: override.maxAgeMs ?? base.maxAgeMs,
    maxBytes: override.maxBytes ?? base.maxBytes,
  };
}

/** What `Engine.getRetention` returns. */
export function retentionInfo(
  base: TopicRetention,
  override: RetentionOverride | null | undefined,
): TopicRetentionInfo {
  return { ...applyOverride(base, override), override: cleanOverride(override) };
}

/** The override with only its set fields; null when it sets none. */
export function cleanOverride(o: RetentionOverride | null | undefined): RetentionOverride | null {
  if (o === null || o === undefined) return null;
  const out: RetentionOverride = {};
  if (o.maxEvents !== undefined) out.maxEvents = o.maxEvents;
  if (o.maxAgeMs !== undefined) out.maxAgeMs = o.maxAgeMs;
  if (o.maxBytes !== undefined) out.maxBytes = o.maxBytes;
  return Object.keys(out).length === 0 ? null : out;
}

/** Most topics whose resolved limits a {@link RetentionResolver} remembers before starting over. */
const RESOLVED_MAX = 10_000;

/**
 * {@link resolveRetention} with a bounded cache: engines ask on every append, and matching every
 * rule's pattern each time would cost more than the lookup.
 */
export class RetentionResolver {
  private readonly cache = new Map<string, TopicRetention>();

  constructor(readonly config: RetentionConfig) {}

  for(topic: string): TopicRetention {
    let r = this.cache.get(topic);
    if (r === undefined) {
      if (this.cache.size >= RESOLVED_MAX) this.cache.clear();
      r = resolveRetention(this.config, topic);
      this.cache.set(topic, r);
    }
    return r;
  }
}

/** Length of an epoch, in characters. */
export const EPOCH_LENGTH = 12;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A new random epoch: {@link EPOCH_LENGTH} alphanumeric characters (about 71 bits). */
export function newEpoch(): string {
  let out = '';
  while (out.length < EPOCH_LENGTH) {
    for (const b of randomBytes(16)) {
      // 248 = 4 * 62: rejecting the top bytes keeps every character equally likely.
      if (b < 248) out += ALPHABET[b % 62];
      if (out.length === EPOCH_LENGTH) break;
    }
  }
  return out;
}
