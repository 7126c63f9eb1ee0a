import type { EphemeralEvent, EventInput, RillEvent } from '../model/event.js';
import { assertTopic } from '../model/topic.js';
import {
  DEFAULT_IDEMPOTENCY_WINDOW_MS,
  DEFAULT_RETENTION,
  checkCoordinationKey,
  type AppendResult,
  type Coordination,
  type Engine,
  type EngineOptions,
  type ReadResult,
  type RetentionConfig,
  type RetentionOverride,
  type SignalListener,
  type StorageUsage,
  type TopicHead,
  type TopicRetentionInfo,
  type WatchListener,
} from './engine.js';
import {
  DEFAULT_LIST_LIMIT,
  Feed,
  MAX_LIST_LIMIT,
  MAX_READ_LIMIT,
  StorageLog,
  clampLimit,
  eventBytes,
  makeEvent,
  storageFull,
} from './common.js';
import { Lifecycle } from './lifecycle.js';
import {
  fenceAllows,
  giveUpLease,
  takeLease,
  type LeaseRecord,
  type StateRecord,
} from './coordination.js';
import {
  applyOverride,
  cleanOverride,
  newEpoch,
  resolveRetention,
  retentionInfo,
  type TopicRetention,
} from './retention.js';

/** How often age retention and expired idempotency keys are swept by default, ms. */
export const DEFAULT_SWEEP_INTERVAL_MS = 1_000;

// Dropping from the front only moves `start`; the array is copied once the dead prefix is both
// large and at least half of it, so each append costs amortized O(1).
const COMPACT_MIN = 1_024;

interface KeyEntry {
  event: RillEvent;
  expires: number;
}

interface TopicState {
  readonly name: string;
  readonly epoch: string;
  readonly created: number;
  /** The limits in force: the configured ones with `override` applied. */
  retention: TopicRetention;
  override: RetentionOverride | null;
  /** Retained events are `events[start..]`. */
  events: RillEvent[];
  /** The size of each event ({@link eventBytes}), index for index with `events`. */
  sizes: number[];
  start: number;
  /** Bytes of the retained events. */
  bytes: number;
  lastSeq: number;
  lastTime: number;
  /** Insertion order is expiry order: `expires` never decreases within a topic. */
  keys: Map<string, KeyEntry>;
}

/**
 * An engine that keeps every log in process memory: for tests and ephemeral use. Nothing survives
 * the process, and watchers are called synchronously once an append is applied. `maxStoreBytes`
 * bounds the bytes of events kept over all topics: an append that would go past it after its own
 * retention is undone and refused with `insufficient_storage`.
 */
export class MemoryEngine implements Engine, Coordination {
  readonly name = 'memory';

  private readonly topics = new Map<string, TopicState>();
  /** Topic names in order, for `listTopics`. */
  private readonly names: string[] = [];
  private readonly life = new Lifecycle(this.name);
  private readonly feed = new Feed();
  private readonly retention: RetentionConfig;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly maxStoreBytes: number;
  private readonly storage: StorageLog;
  /** Bytes of the events retained over all topics. */
  private stored = 0;
  private readonly leases = new Map<string, LeaseRecord>();
  private readonly state = new Map<string, StateRecord>();

  constructor(options: EngineOptions = {}) {
    this.retention = options.retention ?? DEFAULT_RETENTION;
    this.windowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    this.now = options.now ?? Date.now;
    this.maxStoreBytes = options.maxStoreBytes ?? 0;
    this.storage = new StorageLog(options.log, this.name);
    this.life.every(options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS, () => this.sweep());
  }

  /** The bytes of events retained, against `storage.maxBytes`. */
  async storageUsage(): Promise<StorageUsage> {
    return { usedBytes: this.stored, maxBytes: this.maxStoreBytes > 0 ? this.maxStoreBytes : null };
  }

  async append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    this.life.assertOpen();
    assertTopic(topic);
    if (inputs.length === 0) return [];
    const now = this.now();
    let state = this.topics.get(topic);
    const created = state === undefined;
    if (state === undefined) state = this.create(topic, now);
    expireKeys(state, now);
    // What the append changes, to undo it when the store budget refuses it.
    const before = {
      lastSeq: state.lastSeq,
      lastTime: state.lastTime,
      length: state.events.length,
      start: state.start,
      bytes: state.bytes,
    };
    const keysSet: string[] = [];

    const time = Math.max(now, state.lastTime);
    const results: AppendResult[] = [];
    const fresh: RillEvent[] = [];
    for (const input of inputs) {
      if (input.key !== undefined) {
        const seen = state.keys.get(input.key);
        if (seen !== undefined && seen.expires > now) {
          results.push({ event: seen.event, duplicate: true });
          continue;
        }
      }
      const event = makeEvent(topic, state.epoch, ++state.lastSeq, time, input);
      const size = eventBytes(input);
      state.events.push(event);
      state.sizes.push(size);
      state.bytes += size;
      if (input.key !== undefined) {
        // Re-inserting moves the key to the end of the map, keeping it in expiry order. A key
        // re-inserted here was absent or expired, so undoing the append may simply delete it.
        state.keys.delete(input.key);
        state.keys.set(input.key, { event, expires: time + this.windowMs });
        keysSet.push(input.key);
      }
      fresh.push(event);
      results.push({ event, duplicate: false });
    }
    if (fresh.length > 0) state.lastTime = time;
    trim(state, now);
    const stored = this.stored + state.bytes - before.bytes;
    if (fresh.length > 0 && this.maxStoreBytes > 0 && stored > this.maxStoreBytes) {
      state.events.length = before.length;
      state.sizes.length = before.length;
      state.start = before.start;
      state.bytes = before.bytes;
      state.lastSeq = before.lastSeq;
      state.lastTime = before.lastTime;
      for (const key of keysSet) state.keys.delete(key);
      if (created) this.drop(topic);
      const err = storageFull(
        this.name,
        `it keeps at most ${this.maxStoreBytes} bytes of events (storage.maxBytes)`,
      );
      this.storage.refused(err);
      throw err;
    }
    this.stored = stored;
    compact(state);
    if (fresh.length > 0) this.storage.stored();

    this.feed.events(topic, fresh);
    if (created) this.feed.topicCreated(topic);
    return results;
  }

  async read(topic: string, afterSeq: number, limit: number): Promise<ReadResult> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    if (state === undefined) return { events: [], head: null };
    const n = clampLimit(limit, MAX_READ_LIMIT);
    let skip = Math.floor(afterSeq) + 1 - firstSeq(state);
    if (!(skip > 0)) skip = 0;
    const from = state.start + skip;
    return { events: state.events.slice(from, from + n), head: headOf(state) };
  }

  async head(topic: string): Promise<TopicHead | null> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    return state === undefined ? null : headOf(state);
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    if (state === undefined) return null;
    let lo = state.start;
    let hi = state.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((state.events[mid] as RillEvent).time < ms) lo = mid + 1;
      else hi = mid;
    }
    return firstSeq(state) + (lo - state.start);
  }

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    if (this.life.closed) return () => {};
    return this.feed.watch(topic, listener, signals);
  }

  async broadcast(topic: string, events: readonly EphemeralEvent[]): Promise<void> {
    this.life.assertOpen();
    assertTopic(topic);
    if (events.length > 0) this.feed.signal(topic, { kind: 'ephemeral', events });
  }

  async deleteTopic(topic: string): Promise<boolean> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    if (state === undefined) return false;
    this.stored -= state.bytes;
    this.drop(topic);
    this.feed.signal(topic, { kind: 'deleted', epoch: state.epoch });
    return true;
  }

  async purge(topic: string, beforeSeq: number): Promise<TopicHead | null> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    if (state === undefined) return null;
    const before = state.bytes;
    while (state.start < state.events.length && firstSeq(state) < beforeSeq) {
      state.bytes -= state.sizes[state.start] as number;
      state.start++;
    }
    compact(state);
    this.stored += state.bytes - before;
    return headOf(state);
  }

  async setRetention(
    topic: string,
    override: RetentionOverride | null,
  ): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    if (state === undefined) return null;
    state.override = cleanOverride(override);
    state.retention = applyOverride(resolveRetention(this.retention, topic), state.override);
    const before = state.bytes;
    trim(state, this.now());
    compact(state);
    this.stored += state.bytes - before;
    return retentionInfo(resolveRetention(this.retention, topic), state.override);
  }

  async getRetention(topic: string): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const state = this.topics.get(topic);
    if (state === undefined) return null;
    return retentionInfo(resolveRetention(this.retention, topic), state.override);
  }

  watchTopics(listener: (topic: string) => void): () => void {
    if (this.life.closed) return () => {};
    return this.feed.watchTopics(listener);
  }

  async listTopics(
    options: { prefix?: string; after?: string; limit?: number } = {},
  ): Promise<TopicHead[]> {
    this.life.assertOpen();
    const limit = clampLimit(options.limit, MAX_LIST_LIMIT, DEFAULT_LIST_LIMIT);
    const prefix = options.prefix ?? '';
    const after = options.after;
    let i = lowerBound(this.names, after !== undefined && after > prefix ? after : prefix);
    const out: TopicHead[] = [];
    for (; i < this.names.length && out.length < limit; i++) {
      const name = this.names[i] as string;
      if (!name.startsWith(prefix)) break;
      if (after !== undefined && name <= after) continue;
      out.push(headOf(this.topics.get(name) as TopicState));
    }
    return out;
  }

  close(): Promise<void> {
    return this.life.close({ release: () => this.feed.clear() });
  }

  // ---- Coordination: one process, so a lease only ever changes hands within it ----

  async acquireLease(name: string, owner: string, ttlMs: number): Promise<number | null> {
    this.life.assertOpen();
    checkCoordinationKey(name);
    const next = takeLease(this.leases.get(name), owner, ttlMs, this.now());
    if (next === null) return null;
    this.leases.set(name, next);
    return next.token;
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    this.life.assertOpen();
    const next = giveUpLease(this.leases.get(name), owner);
    if (next !== undefined) this.leases.set(name, next);
  }

  async getState(key: string): Promise<string | null> {
    this.life.assertOpen();
    checkCoordinationKey(key);
    return this.state.get(key)?.value ?? null;
  }

  async putState(key: string, value: string, fence: number): Promise<boolean> {
    this.life.assertOpen();
    checkCoordinationKey(key, value);
    if (!fenceAllows(this.state.get(key), fence)) return false;
    this.state.set(key, { fence, value });
    return true;
  }

  private create(topic: string, now: number): TopicState {
    const state: TopicState = {
      name: topic,
      epoch: newEpoch(),
      created: now,
      retention: resolveRetention(this.retention, topic),
      override: null,
      events: [],
      sizes: [],
      start: 0,
      bytes: 0,
      lastSeq: 0,
      lastTime: 0,
      keys: new Map(),
    };
    this.topics.set(topic, state);
    this.names.splice(lowerBound(this.names, topic), 0, topic);
    return state;
  }

  /** Forgets a topic an undone append had created. */
  private drop(topic: string): void {
    this.topics.delete(topic);
    this.names.splice(lowerBound(this.names, topic), 1);
  }

  private sweep(): void {
    const now = this.now();
    for (const state of this.topics.values()) {
      expireKeys(state, now);
      const before = state.bytes;
      trim(state, now);
      compact(state);
      this.stored += state.bytes - before;
    }
  }
}

function firstSeq(state: TopicState): number {
  return state.lastSeq - (state.events.length - state.start) + 1;
}

function headOf(state: TopicState): TopicHead {
  return {
    topic: state.name,
    epoch: state.epoch,
    firstSeq: firstSeq(state),
    lastSeq: state.lastSeq,
    created: state.created,
    lastTime: state.lastTime,
  };
}

function expireKeys(state: TopicState, now: number): void {
  for (const [key, entry] of state.keys) {
    if (entry.expires > now) break;
    state.keys.delete(key);
  }
}

/** Applies count, byte and age retention, from the start of the log only. */
function trim(state: TopicState, now: number): void {
  const { maxEvents, maxAgeMs, maxBytes } = state.retention;
  const { events, sizes } = state;
  const drop = (): void => {
    state.bytes -= sizes[state.start] as number;
    state.start++;
  };
  if (maxEvents > 0) {
    while (events.length - state.start > maxEvents) drop();
  }
  if (maxBytes > 0) {
    while (state.bytes > maxBytes && state.start < events.length) drop();
  }
  if (maxAgeMs > 0) {
    const oldest = now - maxAgeMs;
    while (state.start < events.length && (events[state.start] as RillEvent).time < oldest) drop();
  }
}

/** Copies the retained events once the dropped prefix is both large and at least half. */
function compact(state: TopicState): void {
  if (state.start >= COMPACT_MIN && state.start * 2 >= state.events.length) {
    state.events = state.events.slice(state.start);
    state.sizes = state.sizes.slice(state.start);
    state.start = 0;
  }
}

/** Index of the first name `>= name`. */
function lowerBound(names: readonly string[], name: string): number {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((names[mid] as string) < name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
