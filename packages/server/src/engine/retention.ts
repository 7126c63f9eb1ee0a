import { randomBytes } from 'node:crypto';
import { matchPattern } from '../model/topic.js';
import type { RetentionConfig, RetentionOverride, TopicRetentionInfo } from './engine.js';

/** The retention limits that apply to one topic; `0` means unlimited. */
export interface TopicRetention {
  maxEvents: number;
  maxAgeMs: number;
  maxBytes: number;
}

/**
 * The limits for `topic`: the first rule whose pattern matches it, with the fields that rule leaves
 * out taken from the default.
 */
export function resolveRetention(config: RetentionConfig, topic: string): TopicRetention {
  for (const rule of config.rules) {
    if (matchPattern(rule.pattern, topic)) {
      return {
        maxEvents: rule.maxEvents ?? config.maxEvents,
        maxAgeMs: rule.maxAgeMs ?? config.maxAgeMs,
        maxBytes: rule.maxBytes ?? config.maxBytes ?? 0,
      };
    }
  }
  return { maxEvents: config.maxEvents, maxAgeMs: config.maxAgeMs, maxBytes: config.maxBytes ?? 0 };
}

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
