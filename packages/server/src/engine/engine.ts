import type { EphemeralEvent, EventInput, RillEvent } from '../model/event.js';
import { RillError } from '../model/errors.js';
import { matchPattern } from '../model/topic.js';

/**
 * The Engine contract. An engine is the only stateful part of Rill: it owns every topic's log.
 * Every implementation (memory, lmdb, and later redis, nats) passes the same conformance suite,
 * `test/engine.contract.ts`, which is the executable form of the promises below.
 *
 * Guarantees:
 * 1. **Contiguous seq.** Within a topic and an epoch, seqs are 1, 2, 3 … with no hole and no
 *    repeat, whatever the number of concurrent `append` calls (and, for shared engines, nodes).
 *    Retention removes events from the start only, so the retained range is always
 *    `firstSeq..lastSeq`.
 * 2. **Atomic batches.** One `append` call stores all its events with consecutive seqs, or none.
 * 3. **Acknowledged means stored.** `append` resolves only once the events are stored as durably
 *    as the engine can (lmdb: committed to the on-disk file, surviving the process being killed).
 *    If the engine cannot store them it rejects with `engine_unavailable`, never a false success;
 *    when its storage is full (disk, memory or broker limit, or `maxStoreBytes`) it rejects with
 *    `insufficient_storage` and has stored none of them. Reads and watches go on meanwhile, and
 *    the next append succeeds by itself once space is freed.
 * 4. **Idempotency.** An event with a `key` already used in that topic within the idempotency
 *    window is not stored again: its result carries the original seq and `duplicate: true`, also
 *    within one batch.
 * 5. **Time** is the server's receive time in ms, never decreasing within a topic.
 * 6. **Watch.** `watch(topic, fn)` calls `fn` with every event of `topic` committed after `watch`
 *    returned — by this process or, for shared engines, any node — in seq order, each once. It may
 *    also deliver some events committed shortly before (consumers drop seq they already have). It
 *    never skips one: an engine that loses a live message (a dropped pub/sub packet) repairs the
 *    gap from the log before delivering later events.
 * 7. **Epoch.** A random alphanumeric string fixed when a topic's log is created. If the log is
 *    wiped and recreated, the epoch changes, so a cursor from the old log is never trusted.
 * 8. **Ephemeral events** (`broadcast`) reach the topic's watchers on every node through the
 *    watch's `signals` listener, and nothing else: they are not stored, take no seq and are never
 *    read back. Delivery is best effort (a watcher that is not connected at that moment misses
 *    them).
 * 9. **Administration.** `deleteTopic` removes a log whole (the next append starts a new epoch) and
 *    tells the topic's watchers on every node with a `deleted` signal; `purge` drops events from
 *    the start as retention does; `setRetention` stores a per-topic override of the configured
 *    retention with the log, seen by every node and surviving restarts (until the topic is
 *    deleted).
 */
export interface Engine {
  /** `memory`, `lmdb`, … */
  readonly name: string;

  /** Appends events to a topic (creating it if needed). Results are in input order. */
  append(topic: string, events: readonly EventInput[]): Promise<AppendResult[]>;

  /**
   * Up to `limit` retained events with `seq > afterSeq`, in seq order. An unknown topic reads as
   * empty with `head: null`.
   */
  read(topic: string, afterSeq: number, limit: number): Promise<ReadResult>;

  /** The topic's head, or `null` if the topic does not exist. */
  head(topic: string): Promise<TopicHead | null>;

  /**
   * The seq of the first retained event with `time >= ms`, or `lastSeq + 1` when there is none.
   * `null` for an unknown topic.
   */
  seqAtTime(topic: string, ms: number): Promise<number | null>;

  /**
   * Subscribes to a topic's live feed (guarantee 6), and to its signals (ephemeral events, the
   * topic's deletion: guarantees 8 and 9) when `signals` is given. Returns the function that
   * stops it.
   */
  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void;

  /** Hands ephemeral events to the topic's watchers on every node (guarantee 8). */
  broadcast(topic: string, events: readonly EphemeralEvent[]): Promise<void>;

  /**
   * Deletes a topic's log and its retention override; its watchers get a `deleted` signal. The
   * next append creates a new log under a new epoch. False when there was no such topic.
   */
  deleteTopic(topic: string): Promise<boolean>;

  /**
   * Drops the retained events with `seq < beforeSeq` (at most up to `lastSeq + 1`), as retention
   * would. Returns the head afterwards, or null for an unknown topic.
   */
  purge(topic: string, beforeSeq: number): Promise<TopicHead | null>;

  /**
   * Sets a topic's retention override (null clears it): its fields win over the configured rules,
   * the ones it leaves out come from them. Applied at once. Returns the limits now in force, or
   * null for an unknown topic.
   */
  setRetention(
    topic: string,
    override: RetentionOverride | null,
  ): Promise<TopicRetentionInfo | null>;

  /** The limits in force for a topic and its override, or null for an unknown topic. */
  getRetention(topic: string): Promise<TopicRetentionInfo | null>;

  /**
   * Subscribes to topic creation: `listener` gets the name of every topic created after the call
   * (any node). Pattern subscriptions use it to pick up new topics.
   */
  watchTopics(listener: (topic: string) => void): () => void;

  /** Topics in name order, `after` a name (exclusive), for paging. */
  listTopics(options?: { prefix?: string; after?: string; limit?: number }): Promise<TopicHead[]>;

  /** Stops timers and watches and releases storage. Pending appends finish first. */
  close(): Promise<void>;
}

export type WatchListener = (events: readonly RillEvent[]) => void;

/** What passes through a topic's watch besides its stored events. */
export type TopicSignal =
  | { kind: 'ephemeral'; events: readonly EphemeralEvent[] }
  /** The log of `epoch` was deleted. */
  | { kind: 'deleted'; epoch: string };

export type SignalListener = (signal: TopicSignal) => void;

/** A topic's own retention limits, set at runtime; an absent field falls back to the config. */
export interface RetentionOverride {
  maxEvents?: number;
  maxAgeMs?: number;
  maxBytes?: number;
}

/** The retention of one topic: the limits in force (0 = unlimited) and its override, if any. */
export interface TopicRetentionInfo {
  maxEvents: number;
  maxAgeMs: number;
  maxBytes: number;
  override: RetentionOverride | null;
}

export interface AppendResult {
  event: RillEvent;
  /** True when the key was seen within the idempotency window: `event` is the original. */
  duplicate: boolean;
}

export interface TopicHead {
  topic: string;
  epoch: string;
  /** Seq of the oldest retained event; `lastSeq + 1` when none is retained. */
  firstSeq: number;
  /** Seq of the newest event ever appended in this epoch; 0 before the first. */
  lastSeq: number;
  /** Creation time of the topic's log, ms. */
  created: number;
  /** Time of the newest event, ms; 0 before the first. */
  lastTime: number;
}

export interface ReadResult {
  events: RillEvent[];
  head: TopicHead | null;
}

/** How long events are kept. The first rule whose pattern matches a topic applies, then the default. */
export interface RetentionConfig {
  /** Most events kept per topic; 0 = unlimited. */
  maxEvents: number;
  /** Oldest event kept, in ms; 0 = unlimited. */
  maxAgeMs: number;
  /**
   * Most bytes of events kept per topic (see {@link eventBytes} in `common.ts`); 0 or absent =
   * unlimited. The oldest events go first, as for the other limits.
   */
  maxBytes?: number;
  rules: RetentionRule[];
}

export interface RetentionRule {
  pattern: string;
  maxEvents?: number;
  maxAgeMs?: number;
  maxBytes?: number;
}

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

export const DEFAULT_RETENTION: RetentionConfig = {
  maxEvents: 100_000,
  maxAgeMs: 7 * 24 * 3600_000,
  rules: [],
};

/** How long an idempotency key is remembered, by default (ms). */
export const DEFAULT_IDEMPOTENCY_WINDOW_MS = 2 * 60_000;

/** Options every engine accepts. */
export interface EngineOptions {
  retention?: RetentionConfig;
  idempotencyWindowMs?: number;
  /** How often age-based retention and expired keys are swept, ms. */
  sweepIntervalMs?: number;
  /**
   * Most bytes of events the whole store keeps, over every topic (memory and lmdb engines); 0 or
   * absent = no limit. An append that would go past it (after its own retention) is refused with
   * `insufficient_storage`.
   */
  maxStoreBytes?: number;
  /** Injectable clock for tests. */
  now?: () => number;
  /** Where an engine with a broker reports losing and regaining it (a pino logger fits). */
  log?: EngineLog;
}

/** The log an engine reports its broker connection to. */
export interface EngineLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** Optional capability: an engine that can report whether its backend is reachable. */
export interface HealthCheck {
  health(): Promise<{ ok: boolean; detail?: string }>;
}

export function hasHealthCheck(e: Engine): e is Engine & HealthCheck {
  return typeof (e as Partial<HealthCheck>).health === 'function';
}

/** How much of its storage an engine uses, in bytes; null where it cannot tell. */
export interface StorageUsage {
  usedBytes: number | null;
  /** The budget: `storage.maxBytes`, Redis' maxmemory, JetStream's limit; null for none. */
  maxBytes: number | null;
}

/** Optional capability: an engine that can report its storage use (for metrics; may be slow). */
export interface StorageReport {
  storageUsage(): Promise<StorageUsage>;
}

export function hasStorageReport(e: Engine): e is Engine & StorageReport {
  return typeof (e as Partial<StorageReport>).storageUsage === 'function';
}

/**
 * Optional capability of the shared engines: a directory of the nodes of a cluster, each entry a
 * short JSON text (a node's `/v1/stats` numbers) kept for `ttlMs` unless written again, so a node
 * that stopped drops out by itself.
 */
export interface NodeDirectory {
  putNode(id: string, json: string, ttlMs: number): Promise<void>;
  /** Every live node's entry. */
  listNodes(): Promise<string[]>;
}

export function hasNodeDirectory(e: Engine): e is Engine & NodeDirectory {
  const d = e as Partial<NodeDirectory>;
  return typeof d.putNode === 'function' && typeof d.listNodes === 'function';
}

/**
 * Optional capability, implemented by every built-in engine: what a process needs to coordinate
 * with the others sharing the engine (the outgoing webhooks' one delivery loop per cluster and its
 * persisted cursor, docs/webhooks.md).
 *
 * - A **lease** is held by one `owner` at a time for `ttlMs` after its last acquisition. Each time
 *   a lease changes hands the engine hands out a **fencing token**, a number greater than every
 *   token handed out for that lease before; renewing keeps the lease (and may raise the token).
 * - A **state record** is a short text under a key, kept with the engine's data (surviving
 *   restarts as the logs do). A write names the fencing token of the lease it was made under and
 *   is refused when the record was last written under a greater one, so a deposed leader that has
 *   not noticed yet cannot move state back.
 *
 * Names and keys are 1-{@link MAX_COORDINATION_KEY} characters of printable ASCII.
 */
export interface Coordination {
  /**
   * Takes lease `name` for `owner` when it is free or expired, or renews it when `owner` holds it;
   * returns the fencing token, or null when another owner holds it.
   */
  acquireLease(name: string, owner: string, ttlMs: number): Promise<number | null>;
  /** Gives lease `name` up when `owner` holds it, so another owner may take it at once. */
  releaseLease(name: string, owner: string): Promise<void>;
  /** The record under `key`, or null. */
  getState(key: string): Promise<string | null>;
  /**
   * Writes the record under `key` unless it was last written with a fencing token greater than
   * `fence`; true when written.
   */
  putState(key: string, value: string, fence: number): Promise<boolean>;
}

/** Longest lease name or state key, characters. */
export const MAX_COORDINATION_KEY = 512;
/** Largest state record, bytes. */
export const MAX_STATE_BYTES = 64 * 1024;

/** Throws `invalid_parameter` for a lease name or state key (or value) out of bounds. */
export function checkCoordinationKey(key: string, value?: string): void {
  if (key.length === 0 || key.length > MAX_COORDINATION_KEY || !/^[\x21-\x7e]+$/.test(key)) {
    throw new RillError(
      'invalid_parameter',
      `A lease name or state key must be 1-${MAX_COORDINATION_KEY} printable ASCII characters`,
    );
  }
  if (value !== undefined && Buffer.byteLength(value) > MAX_STATE_BYTES) {
    throw new RillError('invalid_parameter', `A state record is at most ${MAX_STATE_BYTES} bytes`);
  }
}

export function hasCoordination(e: Engine): e is Engine & Coordination {
  const c = e as Partial<Coordination>;
  return (
    typeof c.acquireLease === 'function' &&
    typeof c.releaseLease === 'function' &&
    typeof c.getState === 'function' &&
    typeof c.putState === 'function'
  );
}
