import { statSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import {
  MAX_KEY_LENGTH,
  type EphemeralEvent,
  type EventInput,
  type RillEvent,
} from '../model/event.js';
import { RillError, isRillError } from '../model/errors.js';
import { assertTopic } from '../model/topic.js';
import { decodeTrace, encodeTrace } from '../model/trace.js';
import {
  DEFAULT_IDEMPOTENCY_WINDOW_MS,
  DEFAULT_RETENTION,
  checkCoordinationKey,
  type AppendResult,
  type Coordination,
  type Engine,
  type EngineOptions,
  type ReadResult,
  type RetentionOverride,
  type SignalListener,
  type StorageUsage,
  type TopicHead,
  type TopicRetentionInfo,
  type TopicSignal,
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
  RetentionResolver,
  retentionInfo,
  type TopicRetention,
} from './retention.js';

/** How often age retention and expired idempotency keys are swept by default, ms. */
export const DEFAULT_SWEEP_INTERVAL_MS = 1_000;

/**
 * Most events retention deletes in one transaction beyond the ones an append adds, and most
 * expired keys one sweep removes: a lowered limit on a big log converges over a few sweeps instead
 * of stalling every writer behind one huge transaction.
 */
const TRIM_BUDGET = 10_000;
/**
 * An append's events go into blocks of about this much data (characters): large enough that a
 * batch costs a few puts rather than one per event, small enough that one value stays far below
 * the sizes for which lmdb and its encoder allocate (and hold) a buffer of their own.
 */
const BLOCK_BYTES = 32 * 1024;
/** Most topics one sweep visits; the next sweep continues where it stopped. */
const TOPICS_PER_SWEEP = 10_000;
/**
 * LMDB reports a write cut short by a full disk as EIO ("short write"): with less free space than
 * this on the database's filesystem, an EIO counts as the disk being full.
 */
const SHORT_WRITE_FREE_BYTES = 16 * 1024 * 1024;
/** Error codes of a full store: ENOSPC, EDQUOT (Linux), MDB_MAP_FULL. */
const FULL_CODES = new Set<unknown>([28, 122, -30792, 'ENOSPC', 'EDQUOT']);
const EIO_CODES = new Set<unknown>([5, 'EIO']);
const ignore = (): void => {};

/** Refuses a data directory path that names something else than a directory. */
function assertDirectory(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch {
    return; // missing: lmdb creates it
  }
  if (st.isDirectory()) return;
  const hint =
    st.isFile() && st.size > 0
      ? ` If it is a database an earlier Rill made there, move it into a directory as data.mdb ` +
        `(mkdir DIR && mv ${path} DIR/data.mdb) and pass that directory.`
      : '';
  throw new RillError(
    'engine_unavailable',
    `The data directory ${path} ${st.isFile() ? 'is a file, not a directory' : 'is not a directory'}.${hint}`,
  );
}

/** Options of {@link LmdbEngine}. */
export interface LmdbEngineOptions extends EngineOptions {
  /** Directory of the database (created if missing). One process at a time may own it. */
  path: string;
  /**
   * When `append` resolves: `'flush'` (default) once the commit is fsynced, so it survives power
   * loss too; `'commit'` once it is committed to the file, which survives the process being killed,
   * while a machine crash may lose (never corrupt) the last commits. `'commit'` only saves the
   * fsync latency; throughput is the same, fsyncs overlapping later commits either way.
   */
  durability?: 'flush' | 'commit';
  /**
   * Set when other processes (the workers of one `rill serve --workers`) open the same directory:
   * the engine then tells them of its committed appends through `announce` and hears of theirs
   * through {@link LmdbEngine.peerAppended}. Without it one process at a time may own the directory.
   */
  peers?: AppendPeers;
}

/** That a topic's log reached `lastSeq` in a commit of another process (`created`: its first). */
export interface AppendNotice {
  topic: string;
  lastSeq: number;
  created: boolean;
  /**
   * Not an append: ephemeral events or a deletion, which the other processes' watchers of the
   * topic get as they are (nothing of them is in the map). Sent at once, not batched.
   */
  signal?: TopicSignal;
}

/** The link between the processes sharing one lmdb directory. */
export interface AppendPeers {
  /**
   * Called with this process's committed appends, one notice per topic, once per batch of
   * commits (not per append, never per delivery).
   */
  announce(notices: readonly AppendNotice[]): void;
}

interface TopicRecord {
  epoch: string;
  firstSeq: number;
  lastSeq: number;
  created: number;
  lastTime: number;
  /**
   * The first stored block: the seq it starts at, its number of events (0 when no block is
   * stored) and its time, the time of the first retained event. Kept here so that retention
   * finds what to drop, and whether anything is old enough, without a cursor per append.
   */
  fb: number;
  fn: number;
  ft: number;
  /**
   * Byte offsets ({@link eventBytes}) within the epoch: `o` after the newest event (the bytes ever
   * appended), `fo` before the first stored block, `ro` before `firstSeq` (kept only while the
   * topic has a byte limit; absent when unknown). The blocks still stored hold `o - fo` bytes of
   * events, the retained ones `o - ro`. Absent in topics written before offsets existed, whose
   * older events then count as 0 bytes.
   */
  o?: number;
  fo?: number;
  ro?: number;
  /** The topic's retention override (`Engine.setRetention`); absent when it has none. */
  rt?: RetentionOverride;
}

/**
 * Consecutive events of one append as stored, under the key `[topic, seq of its first event]`:
 * an append is split into blocks of up to about {@link BLOCK_BYTES} of data rather than one record
 * per event, so a batch costs a few puts (and, once retention drops them, a few removes) and a
 * replay reads a page of events in a few records. All of an append's events share its time. The
 * topic, seqs and epoch live in the key and the topic record.
 */
interface BlockRecord {
  /** time */
  t: number;
  /** number of events */
  n: number;
  /**
   * The events' data (JSON text) joined with `\n`: one string to encode and decode instead of one
   * per event. An array instead when some data has a line break (JSON text from the engine API
   * that was not produced by the publish path's serializer).
   */
  d: string | string[];
  /** type of each event (null when untyped); absent when none is typed */
  y?: (string | null)[];
  /** idempotency key of each event (null when none); absent when none has one */
  k?: (string | null)[];
  /**
   * trace context of each event ({@link encodeTrace}; null when none); absent when none has one,
   * as in blocks written before events had one
   */
  r?: (string | null)[];
  /** byte offset before its first event (see `TopicRecord.o`); absent in older blocks */
  o?: number;
}

/** A block and the seq of its first event. */
interface Located {
  start: number;
  block: BlockRecord;
}

interface KeyRecord {
  seq: number;
  time: number;
  /** Expiry, ms: the key is honoured while `exp > now`. */
  exp: number;
}

/** `[topic, seq of the block's first event]` */
type BlockKey = [topic: string, seq: number];
type IdemKey = [topic: string, key: string];
type ExpiryKey = [exp: number, topic: string, key: string];

const WAITING = 0;
const COMMITTED = 1;
const FAILED = 2;

/** One append's effect, waiting for its commit before watchers may see it. */
interface Pending {
  topic: string;
  events: RillEvent[];
  created: boolean;
  state: typeof WAITING | typeof COMMITTED | typeof FAILED;
  /** What it changed the bytes of stored blocks by (counted under a store budget only). */
  change: number;
}

/**
 * The embedded default engine: every topic's log in an LMDB database on disk (the `lmdb`
 * package), surviving restarts and the process being killed.
 *
 * Appends are lmdb asynchronous transactions. Their callbacks run one after another in call
 * order, each seeing the previous one's writes, and lmdb commits all the callbacks queued in the
 * meantime as one transaction: seqs are assigned inside the callback (contiguous without a lock of
 * our own) and ingest pays one fsync per batch of concurrent appends, not one per append.
 *
 * Watch sees the appends of this process only unless `peers` is set: then every process opening
 * the directory tells the others of its commits (one notice per topic per batch), and watchers of
 * every process are fed from the map itself, in seq order, whichever process appended. LMDB's
 * write lock spans processes and every append re-reads the topic record and idempotency keys
 * inside its write transaction, so seqs stay contiguous and keys exact across them.
 *
 * **A full store.** lmdb grows its file as needed. When the disk is full (ENOSPC, or the short write
 * LMDB reports as EIO) or `maxStoreBytes` would be exceeded, the append's transaction is aborted
 * and it fails with `insufficient_storage`: nothing of it was stored, reads (of the memory map)
 * and watches go on, and the next append tries again, so writes resume once retention or an
 * operator freed space. LMDB copies pages on write and reuses freed pages only two transactions
 * later, so on a disk with no room left at all even the transaction that would drop old events
 * may not commit: keep the store below the disk's size with `maxStoreBytes`.
 */
export class LmdbEngine implements Engine, Coordination {
  readonly name = 'lmdb';

  private readonly root: RootDatabase;
  private readonly topics: Database<TopicRecord, string>;
  private readonly blocks: Database<BlockRecord, BlockKey>;
  private readonly keys: Database<KeyRecord, IdemKey>;
  private readonly expiry: Database<true, ExpiryKey>;
  private readonly life = new Lifecycle(this.name);
  private readonly feed = new Feed();
  private readonly retention: RetentionResolver;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly waitForFlush: boolean;
  private readonly path: string;
  private readonly maxStoreBytes: number;
  /**
   * The bytes of events in stored blocks over all topics (`o - fo` summed), counted at open and
   * kept up to date only under a store budget. It counts what the write transactions applied so
   * far, committed or not: a failed commit's appends are taken off again.
   */
  private stored = 0;
  private readonly storage: StorageLog;
  /** Appends whose callback ran, in callback (that is, seq) order; `pending[pendingHead..]` live. */
  private pending: Pending[] = [];
  private pendingHead = 0;
  private sweepAfter: string | undefined;
  private sweeping = false;
  /** Shared with other processes: see {@link LmdbEngineOptions.peers}. */
  private readonly peers: AppendPeers | undefined;
  /** With peers, the store's byte total (`stored`), kept in the database under LMDB's lock. */
  private readonly counters: Database<number, string> | undefined;
  /** With peers: per watched topic, the last seq its watchers were handed. */
  private readonly delivered = new Map<string, { epoch: string | null; seq: number }>();
  /** With peers: this process's commits not announced yet (topic → notice). */
  private unannounced = new Map<string, AppendNotice>();
  /**
   * Leases (`l:<name>`) and state records (`s:<key>`) of {@link Coordination}, read and written in
   * write transactions: LMDB's write lock spans the processes sharing the directory, so the
   * workers of `rill serve --workers` see one lease.
   */
  private readonly coord: Database<LeaseRecord | StateRecord, string>;

  constructor(options: LmdbEngineOptions) {
    this.retention = new RetentionResolver(options.retention ?? DEFAULT_RETENTION);
    this.windowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    this.now = options.now ?? Date.now;
    this.waitForFlush = (options.durability ?? 'flush') === 'flush';
    this.path = options.path;
    this.maxStoreBytes = options.maxStoreBytes ?? 0;
    this.storage = new StorageLog(options.log, this.name);
    assertDirectory(options.path);
    try {
      // The path is a directory holding data.mdb and lock.mdb, whatever its name: left to itself
      // lmdb takes a name with an extension (`rill.data`) for the database file itself.
      this.root = open({ path: options.path, maxDbs: 8, noSubdir: false });
    } catch (err) {
      const why = `Cannot open the lmdb database at ${options.path}: ${(err as Error).message}`;
      throw new RillError('engine_unavailable', why, { cause: err });
    }
    this.topics = this.root.openDB<TopicRecord, string>('topics', {});
    // Before blocks, each event was its own record in a database named `events`; such a directory
    // is refused rather than read as empty.
    for (const name of this.root.getKeys({ limit: 64 })) {
      if (name === 'events') {
        void this.root.close();
        throw new RillError(
          'engine_unavailable',
          `The lmdb database at ${options.path} was written by an older Rill (one record per event), which this version does not read; move it away or delete it`,
        );
      }
    }
    this.blocks = this.root.openDB<BlockRecord, BlockKey>('blocks', {});
    this.keys = this.root.openDB<KeyRecord, IdemKey>('keys', {});
    this.expiry = this.root.openDB<true, ExpiryKey>('key-expiry', {});
    this.coord = this.root.openDB<LeaseRecord | StateRecord, string>('coordination', {});
    this.peers = options.peers;
    // Counted from the topics rather than kept in the database, which would cost every append a
    // write, also without a budget. With peers, each process appends: the total is then kept in
    // the database, counted again at open under the write lock and changed in each append's
    // transaction, so every process sees the others' appends in it.
    if (this.peers !== undefined && this.maxStoreBytes > 0) {
      const counters = this.root.openDB<number, string>('counters', {});
      this.counters = counters;
      this.root.transactionSync(() => {
        let total = 0;
        for (const { value } of this.topics.getRange({})) total += storedBytes(value);
        counters.putSync('stored', total);
      });
    } else if (this.maxStoreBytes > 0) {
      for (const { value } of this.topics.getRange({})) this.stored += storedBytes(value);
    }
    this.life.every(options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS, () => this.sweep());
  }

  /**
   * Under a store budget, the bytes of events in stored blocks against it; without one, the size
   * of the database file (what the disk holds, free pages included).
   */
  async storageUsage(): Promise<StorageUsage> {
    if (this.maxStoreBytes > 0) return { usedBytes: this.stored, maxBytes: this.maxStoreBytes };
    try {
      return { usedBytes: statSync(join(this.path, 'data.mdb')).size, maxBytes: null };
    } catch {
      return { usedBytes: null, maxBytes: null };
    }
  }

  async append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    this.life.assertOpen();
    assertTopic(topic);
    for (const input of inputs) {
      if (input.key !== undefined && input.key.length > MAX_KEY_LENGTH) {
        throw new RillError('invalid_event', `Event key longer than ${MAX_KEY_LENGTH} characters`);
      }
    }
    if (inputs.length === 0) return [];

    let entry: Pending | undefined;
    // A child transaction so that a batch that throws half-way leaves nothing behind (atomic).
    const txn = this.root.childTransaction(() => {
      const out = this.applyAppend(topic, inputs);
      entry = out.pending;
      this.pending.push(entry);
      return out.results;
    });
    // Captured now, synchronously: lmdb's `flushed` is then the flush of the batch being queued.
    const flushed = this.waitForFlush ? thenableToPromise(this.root.flushed) : undefined;
    const done = flushed === undefined ? txn : Promise.all([txn, flushed]).then(([r]) => r);
    // Tracked as a whole: close waits until the append is settled for watchers too.
    const settled = (async (): Promise<AppendResult[]> => {
      try {
        const results = await done;
        this.settle(entry as Pending, COMMITTED);
        this.storage.stored();
        return results;
      } catch (err) {
        // First, before any other await: lmdb rejects a separate promise with the real cause.
        const cause = commitCause(err);
        const stored = await txn.then(
          () => true,
          () => false,
        );
        // Committed but not flushed still reaches watchers: readers see it, and watch never skips.
        if (entry !== undefined) this.settle(entry, stored ? COMMITTED : FAILED);
        if (entry !== undefined && !stored && this.counters === undefined) {
          this.stored -= entry.change;
        }
        if (isRillError(err)) {
          if (err.code === 'insufficient_storage') this.storage.refused(err);
          throw err;
        }
        // A failed flush of a stored commit is not "nothing stored": that stays a 503.
        const full = stored ? undefined : this.fullStore(await cause);
        if (full !== undefined) {
          const refusal = storageFull(this.name, full, err);
          this.storage.refused(refusal);
          throw refusal;
        }
        throw new RillError('engine_unavailable', 'The lmdb engine could not store the events', {
          cause: err,
        });
      }
    })();
    return this.life.track(settled);
  }

  async read(topic: string, afterSeq: number, limit: number): Promise<ReadResult> {
    this.life.assertOpen();
    this.freshSnapshot();
    return this.readNow(topic, afterSeq, limit);
  }

  /** `read`, synchronously: the blocks and the topic record come from the same snapshot. */
  private readNow(topic: string, afterSeq: number, limit: number): ReadResult {
    const meta = this.topics.get(topic);
    if (meta === undefined) return { events: [], head: null };
    const head = toHead(topic, meta);
    const n = clampLimit(limit, MAX_READ_LIMIT);
    let from = Math.floor(afterSeq) + 1;
    if (!(from >= meta.firstSeq)) from = meta.firstSeq;
    const events: RillEvent[] = [];
    if (n === 0 || from > meta.lastSeq) return { events, head };
    // Reads are synchronous, so the blocks and the topic record come from the same snapshot.
    const first = from < meta.fb + meta.fn ? meta.fb : this.blockAt(topic, from)?.start;
    for (const { key, value } of this.blocks.getRange({
      start: [topic, first ?? from],
      end: [topic, meta.lastSeq + 1],
    })) {
      const start = key[1];
      const data = blockData(value);
      for (let i = Math.max(0, from - start); i < value.n; i++) {
        events.push(blockEvent(topic, meta.epoch, start, value, data, i));
        if (events.length === n) return { events, head };
      }
    }
    return { events, head };
  }

  async head(topic: string): Promise<TopicHead | null> {
    this.life.assertOpen();
    this.freshSnapshot();
    const meta = this.topics.get(topic);
    return meta === undefined ? null : toHead(topic, meta);
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    this.life.assertOpen();
    const meta = this.topics.get(topic);
    if (meta === undefined) return null;
    return this.firstSeqAtTime(topic, meta, ms);
  }

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    if (this.life.closed) return () => {};
    if (this.peers === undefined) return this.feed.watch(topic, listener, signals);
    // Everything after the head as it is now reaches the listener, from the map (a fresh snapshot:
    // a notice that came before the watch was dropped).
    if (!this.delivered.has(topic)) {
      this.freshSnapshot();
      const meta = this.topics.get(topic);
      this.delivered.set(topic, { epoch: meta?.epoch ?? null, seq: meta?.lastSeq ?? 0 });
    }
    const unwatch = this.feed.watch(topic, listener, signals);
    return () => {
      unwatch();
      if (!this.feed.hasWatchers(topic)) this.delivered.delete(topic);
    };
  }

  /**
   * Another process sharing the directory committed appends: watchers of their topics get the new
   * events, read from the map. Only with `peers`.
   */
  peerAppended(notices: readonly AppendNotice[]): void {
    if (this.life.closed || this.peers === undefined) return;
    // A read snapshot still open from before the message came would not show the commit.
    this.freshSnapshot();
    for (const n of notices) {
      if (typeof n?.topic !== 'string') continue;
      if (n.signal !== undefined) {
        this.feed.signal(n.topic, n.signal);
        continue;
      }
      if (n.created) this.feed.topicCreated(n.topic);
      if (this.delivered.has(n.topic)) this.pull(n.topic);
    }
  }

  /**
   * Another process sharing the directory ended without saying goodbye (killed): its last commits
   * may never have been announced, so every watched topic is read up to its head. Only with `peers`.
   */
  peerLost(): void {
    if (this.life.closed || this.peers === undefined) return;
    this.freshSnapshot();
    for (const topic of [...this.delivered.keys()]) this.pull(topic);
  }

  async broadcast(topic: string, events: readonly EphemeralEvent[]): Promise<void> {
    this.life.assertOpen();
    assertTopic(topic);
    if (events.length === 0) return;
    const signal: TopicSignal = { kind: 'ephemeral', events };
    this.feed.signal(topic, signal);
    this.signalPeers(topic, signal);
  }

  /** With peers: the other processes' watchers get `signal` too. */
  private signalPeers(topic: string, signal: TopicSignal): void {
    if (this.peers !== undefined && !this.life.closed) {
      this.peers.announce([{ topic, lastSeq: 0, created: false, signal }]);
    }
  }

  async deleteTopic(topic: string): Promise<boolean> {
    this.life.assertOpen();
    let epoch: string | undefined;
    let change = 0;
    await this.life.track(
      this.root.transaction(() => {
        this.root.committed.then(ignore, ignore); // see applyAppend
        const meta = this.topics.get(topic);
        if (meta === undefined) return;
        epoch = meta.epoch;
        change = -storedBytes(meta);
        for (const key of this.blocks.getKeys({
          start: [topic, 0],
          end: [topic, meta.lastSeq + 1],
        }))
          this.blocks.removeSync(key);
        // The key-expiry index keeps its entries: the sweep drops them, finding no key.
        for (const key of this.keys.getKeys({ start: [topic, ''], end: [topic, '\uffff'] }))
          this.keys.removeSync(key);
        this.topics.removeSync(topic);
      }),
    );
    if (epoch === undefined) return false;
    this.stored += change;
    this.feed.signal(topic, { kind: 'deleted', epoch });
    this.signalPeers(topic, { kind: 'deleted', epoch });
    return true;
  }

  async purge(topic: string, beforeSeq: number): Promise<TopicHead | null> {
    this.life.assertOpen();
    return this.updateTopic(topic, (meta, now) => {
      this.trim(topic, meta, now, Number.MAX_SAFE_INTEGER, beforeSeq);
      return toHead(topic, meta);
    });
  }

  async setRetention(
    topic: string,
    override: RetentionOverride | null,
  ): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    return this.updateTopic(topic, (meta, now) => {
      const rt = cleanOverride(override);
      if (rt === null) delete meta.rt;
      else meta.rt = rt;
      this.trim(topic, meta, now, Number.MAX_SAFE_INTEGER);
      return retentionInfo(this.retention.for(topic), meta.rt);
    });
  }

  async getRetention(topic: string): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const meta = this.topics.get(topic);
    return meta === undefined ? null : retentionInfo(this.retention.for(topic), meta.rt);
  }

  /** Runs `fn` on a topic's record in a write transaction and stores it; null for no topic. */
  private async updateTopic<T>(
    topic: string,
    fn: (meta: TopicRecord, now: number) => T,
  ): Promise<T | null> {
    let out: T | null = null;
    let change = 0;
    await this.life.track(
      this.root.transaction(() => {
        this.root.committed.then(ignore, ignore); // see applyAppend
        const meta = this.topics.get(topic);
        if (meta === undefined) return;
        const before = storedBytes(meta);
        out = fn(meta, this.now());
        change = storedBytes(meta) - before;
        this.topics.putSync(topic, meta);
      }),
    );
    this.stored += change;
    return out;
  }

  /** The limits in force for a topic: the configured ones with its override applied. */
  private limitsOf(topic: string, meta: TopicRecord): TopicRetention {
    return applyOverride(this.retention.for(topic), meta.rt);
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
    const out: TopicHead[] = [];
    if (limit === 0) return out;
    const fromAfter = after !== undefined && after >= prefix;
    const range = this.topics.getRange({
      start: fromAfter ? after : prefix,
      exclusiveStart: fromAfter,
      // Topic names are ASCII below DEL, so every name starting with `prefix` sorts before this.
      ...(prefix === '' ? {} : { end: `${prefix}\x7f` }),
      limit,
    });
    for (const { key, value } of range) out.push(toHead(key, value));
    return out;
  }

  /** Stops the sweep, waits for pending appends, then closes the database. */
  close(): Promise<void> {
    return this.life.close({
      release: async () => {
        this.feed.clear();
        await this.root.close();
      },
    });
  }

  // ---- Coordination ----

  async acquireLease(name: string, owner: string, ttlMs: number): Promise<number | null> {
    this.life.assertOpen();
    checkCoordinationKey(name);
    const key = `l:${name}`;
    return this.life.track(
      this.root.transaction(() => {
        const next = takeLease(
          this.coord.get(key) as LeaseRecord | undefined,
          owner,
          ttlMs,
          this.now(),
        );
        if (next === null) return null;
        void this.coord.put(key, next);
        return next.token;
      }),
    );
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    this.life.assertOpen();
    const key = `l:${name}`;
    await this.life.track(
      this.root.transaction(() => {
        const next = giveUpLease(this.coord.get(key) as LeaseRecord | undefined, owner);
        if (next !== undefined) void this.coord.put(key, next);
      }),
    );
  }

  async getState(key: string): Promise<string | null> {
    this.life.assertOpen();
    checkCoordinationKey(key);
    this.freshSnapshot();
    return (this.coord.get(`s:${key}`) as StateRecord | undefined)?.value ?? null;
  }

  async putState(key: string, value: string, fence: number): Promise<boolean> {
    this.life.assertOpen();
    checkCoordinationKey(key, value);
    const k = `s:${key}`;
    return this.life.track(
      this.root.transaction(() => {
        if (!fenceAllows(this.coord.get(k) as StateRecord | undefined, fence)) return false;
        void this.coord.put(k, { fence, value });
        return true;
      }),
    );
  }

  /** Runs inside the write transaction. */
  private applyAppend(
    topic: string,
    inputs: readonly EventInput[],
  ): { results: AppendResult[]; pending: Pending } {
    // lmdb rejects a promise of its own when the batch this runs in fails to commit; handled here,
    // or it would be an unhandled rejection (which ends the process).
    this.root.committed.then(ignore, ignore);
    const now = this.now();
    const existing = this.topics.get(topic);
    const meta: TopicRecord = existing ?? {
      epoch: newEpoch(),
      firstSeq: 1,
      lastSeq: 0,
      created: now,
      lastTime: 0,
      fb: 1,
      fn: 0,
      ft: 0,
    };
    // A topic written before offsets existed starts counting now.
    meta.o ??= 0;
    meta.fo ??= meta.fn === 0 ? meta.o : 0;
    const storedBefore = existing === undefined ? 0 : storedBytes(meta);
    const time = Math.max(now, meta.lastTime);
    const results: AppendResult[] = [];
    const fresh: RillEvent[] = [];
    const first = meta.lastSeq + 1;
    let start = first;
    let data: string[] = [];
    let bytes = 0;
    let joinable = true;
    let block: BlockRecord = { t: time, n: 0, d: data, o: meta.o };
    const store = (): void => {
      if (joinable) block.d = data.join('\n');
      this.blocks.putSync([topic, start], block);
      if (meta.fn === 0) {
        meta.fb = start;
        meta.fn = block.n;
        meta.ft = time;
        meta.fo = block.o;
      }
    };
    for (const input of inputs) {
      let previous: KeyRecord | undefined;
      if (input.key !== undefined) {
        previous = this.keys.get([topic, input.key]);
        if (previous !== undefined && previous.exp > now) {
          const seq = previous.seq;
          results.push({
            // A key repeated within this batch points to an event of this append.
            event:
              seq >= first
                ? (fresh[seq - first] as RillEvent)
                : this.original(topic, meta.epoch, previous, input),
            duplicate: true,
          });
          continue;
        }
      }
      if (bytes >= BLOCK_BYTES) {
        store();
        start = meta.lastSeq + 1;
        data = [];
        bytes = 0;
        joinable = true;
        block = { t: time, n: 0, d: data, o: meta.o };
      }
      const seq = ++meta.lastSeq;
      const i = block.n++;
      data.push(input.data);
      bytes += input.data.length;
      meta.o += eventBytes(input);
      if (joinable && input.data.includes('\n')) joinable = false;
      if (input.type !== undefined)
        (block.y ??= new Array<string | null>(i).fill(null))[i] = input.type;
      else if (block.y !== undefined) block.y.push(null);
      if (input.key !== undefined) {
        (block.k ??= new Array<string | null>(i).fill(null))[i] = input.key;
        const exp = time + this.windowMs;
        if (previous !== undefined) this.expiry.removeSync([previous.exp, topic, input.key]);
        this.keys.putSync([topic, input.key], { seq, time, exp });
        this.expiry.putSync([exp, topic, input.key], true);
      } else if (block.k !== undefined) block.k.push(null);
      if (input.trace !== undefined)
        (block.r ??= new Array<string | null>(i).fill(null))[i] = encodeTrace(input.trace);
      else if (block.r !== undefined) block.r.push(null);
      const event = blockEvent(topic, meta.epoch, start, block, data, i);
      fresh.push(event);
      results.push({ event, duplicate: false });
    }
    if (block.n > 0) {
      meta.lastTime = time;
      store();
    }
    const trimmed = this.trim(topic, meta, now, fresh.length + TRIM_BUDGET);
    let change = 0;
    if (this.maxStoreBytes > 0) {
      change = storedBytes(meta) - storedBefore;
      if (fresh.length > 0 && this.storedTotal() + change > this.maxStoreBytes) {
        // The child transaction this runs in is aborted: nothing of the append stays.
        throw storageFull(
          this.name,
          `it keeps at most ${this.maxStoreBytes} bytes of events (storage.maxBytes)`,
        );
      }
    }
    if (existing === undefined || fresh.length > 0 || trimmed) this.topics.putSync(topic, meta);
    this.addStored(change);
    return {
      results,
      pending: { topic, events: fresh, created: existing === undefined, state: WAITING, change },
    };
  }

  /** The event a still-valid idempotency key points to. */
  private original(topic: string, epoch: string, key: KeyRecord, input: EventInput): RillEvent {
    const found = this.blockAt(topic, key.seq);
    if (found !== undefined) {
      const { start, block } = found;
      return blockEvent(topic, epoch, start, block, blockData(block), key.seq - start);
    }
    // Retention already dropped the original: a retry carries the same event, so its own fields
    // stand in for the stored ones.
    const fallback: BlockRecord = { t: key.time, n: 1, d: [input.data] };
    if (input.type !== undefined) fallback.y = [input.type];
    if (input.trace !== undefined) fallback.r = [encodeTrace(input.trace)];
    if (input.key !== undefined) fallback.k = [input.key];
    return blockEvent(topic, epoch, key.seq, fallback, [input.data], 0);
  }

  /** The block holding `topic`'s event `seq`, if it is still stored. */
  private blockAt(topic: string, seq: number): Located | undefined {
    for (const { key, value } of this.blocks.getRange({
      start: [topic, seq],
      end: [topic, 0],
      reverse: true,
      limit: 1,
    })) {
      if (seq < key[1] + value.n) return { start: key[1], block: value };
    }
    return undefined;
  }

  /**
   * The first seq `topic` keeps under its count and age limits (`meta.firstSeq` when nothing is
   * due). Only reads, so it works inside a write transaction or on a read snapshot.
   */
  private retainFrom(topic: string, meta: TopicRecord, now: number): number {
    const { maxEvents, maxAgeMs, maxBytes } = this.limitsOf(topic, meta);
    let cut = meta.firstSeq;
    if (maxEvents > 0) cut = Math.max(cut, meta.lastSeq - maxEvents + 1);
    // Time never decreases, so nothing is too old while the first stored block is not.
    if (maxAgeMs > 0 && cut <= meta.lastSeq && meta.fn > 0 && meta.ft < now - maxAgeMs) {
      const oldest = now - maxAgeMs;
      const t = cut < meta.fb + meta.fn ? meta.ft : this.blockAt(topic, cut)?.block.t;
      if (t !== undefined && t < oldest) {
        cut = Math.max(cut, this.firstSeqAtTime(topic, meta, oldest));
      }
    }
    // `ro` (or, when unknown, `fo`, which is not above it) bounds the offset before `firstSeq`
    // from below: while even that keeps the topic within its limit, no block is read.
    if (maxBytes > 0 && meta.o !== undefined && cut <= meta.lastSeq) {
      const target = meta.o - maxBytes;
      if (target > (meta.ro ?? meta.fo ?? 0)) cut = this.seqFromOffset(topic, meta, cut, target);
    }
    return cut;
  }

  /**
   * The first seq from `from` on whose offset (the bytes appended in the epoch before it) is at
   * least `target`: the events from there to the newest hold at most `o - target` bytes.
   * `lastSeq + 1` when there is none. Reads the blocks from the one `from` falls in.
   */
  private seqFromOffset(topic: string, meta: TopicRecord, from: number, target: number): number {
    const first = from < meta.fb + meta.fn ? meta.fb : (this.blockAt(topic, from)?.start ?? from);
    for (const { key, value } of this.blocks.getRange({
      start: [topic, first],
      end: [topic, meta.lastSeq + 1],
    })) {
      const start = key[1];
      // A block from before offsets existed: its events count as 0 bytes, at offset 0 < target.
      if (value.o === undefined) continue;
      if (value.o >= target) return Math.max(start, from);
      let offset = value.o;
      const data = blockData(value);
      for (let i = 0; i < value.n; i++) {
        if (offset >= target && start + i >= from) return start + i;
        offset += blockEventBytes(value, data, i);
      }
    }
    return meta.lastSeq + 1;
  }

  /** The offset before event `seq` (`o` past the newest); 0 in a block from before offsets. */
  private offsetBefore(topic: string, meta: TopicRecord, seq: number): number {
    if (seq > meta.lastSeq) return meta.o ?? 0;
    const found =
      seq < meta.fb + meta.fn
        ? { start: meta.fb, block: this.blocks.get([topic, meta.fb]) }
        : this.blockAt(topic, seq);
    const block = found?.block;
    if (found === undefined || block === undefined || block.o === undefined) return 0;
    let offset = block.o;
    if (seq === found.start) return offset;
    const data = blockData(block);
    for (let i = 0; i < seq - found.start; i++) offset += blockEventBytes(block, data, i);
    return offset;
  }

  /**
   * Drops events from the start of `topic` beyond its limits, at most `budget` of them, and
   * advances `meta.firstSeq`. Runs inside a write transaction; true when it dropped any.
   */
  private trim(topic: string, meta: TopicRecord, now: number, budget: number, floor = 0): boolean {
    const cut = Math.min(
      Math.max(this.retainFrom(topic, meta, now), Math.min(floor, meta.lastSeq + 1)),
      meta.firstSeq + budget,
    );
    // A topic with a byte limit keeps the offset of its first retained event (`ro`), so that the
    // next append knows without reading whether it went over.
    const keepsOffset = this.limitsOf(topic, meta).maxBytes > 0 && meta.o !== undefined;
    if (cut <= meta.firstSeq) {
      if (keepsOffset && meta.ro === undefined) {
        meta.ro = this.offsetBefore(topic, meta, meta.firstSeq);
        return true;
      }
      if (!keepsOffset && meta.ro !== undefined) {
        delete meta.ro;
        return true;
      }
      return false;
    }
    if (keepsOffset) meta.ro = this.offsetBefore(topic, meta, cut);
    else delete meta.ro;
    // Blocks wholly before `cut` go; the one `cut` falls in stays, its events before `cut` unread.
    while (meta.fn > 0 && meta.fb + meta.fn <= cut) {
      this.blocks.removeSync([topic, meta.fb]);
      meta.fb += meta.fn;
      meta.fn = 0;
      if (meta.fb > meta.lastSeq) {
        meta.fo = meta.o;
        break;
      }
      const next = this.blocks.get([topic, meta.fb]);
      if (next === undefined) {
        throw new RillError('engine_unavailable', `The lmdb database misses events of ${topic}`);
      }
      meta.fn = next.n;
      meta.ft = next.t;
      if (next.o !== undefined) meta.fo = next.o;
    }
    meta.firstSeq = cut;
    return true;
  }

  /** Binary search over seq: time never decreases within a topic. */
  private firstSeqAtTime(topic: string, meta: TopicRecord, ms: number): number {
    let lo = meta.firstSeq;
    let hi = meta.lastSeq + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const found = this.blockAt(topic, mid);
      if (found !== undefined && found.block.t < ms) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Marks an append committed or failed and hands watchers every committed append at the front of
   * the queue. Lmdb commits batches in callback order, so once one append has committed, every
   * append whose callback ran before it has too (or has already been marked failed: its whole
   * batch was rejected before this one could commit).
   */
  private settle(entry: Pending, state: typeof COMMITTED | typeof FAILED): void {
    if (entry.state === WAITING) entry.state = state;
    if (state === COMMITTED) {
      for (let i = this.pendingHead; i < this.pending.length; i++) {
        const e = this.pending[i] as Pending;
        if (e === entry) break;
        if (e.state === WAITING) e.state = COMMITTED;
      }
    }
    while (this.pendingHead < this.pending.length) {
      const e = this.pending[this.pendingHead] as Pending;
      if (e.state === WAITING) break;
      this.pendingHead++;
      if (e.state === COMMITTED && this.peers !== undefined) this.committedShared(e);
      else if (e.state === COMMITTED) {
        this.feed.events(e.topic, e.events);
        if (e.created) this.feed.topicCreated(e.topic);
      }
    }
    if (this.pendingHead === this.pending.length) {
      this.pending = [];
      this.pendingHead = 0;
    } else if (this.pendingHead > 1_024 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /**
   * With peers: a commit of this process reaches its watchers from the map (in seq order with the
   * other processes' commits) and is announced to the other processes, once per batch.
   */
  private committedShared(e: Pending): void {
    const last = e.events[e.events.length - 1];
    if (last === undefined) return;
    const before = this.unannounced.get(e.topic);
    if (before === undefined && this.unannounced.size === 0) queueMicrotask(() => this.announce());
    this.unannounced.set(e.topic, {
      topic: e.topic,
      lastSeq: Math.max(last.seq, before?.lastSeq ?? 0),
      created: e.created || (before?.created ?? false),
    });
    if (e.created) this.feed.topicCreated(e.topic);
    if (this.delivered.has(e.topic)) this.pull(e.topic);
  }

  private announce(): void {
    const notices = [...this.unannounced.values()];
    this.unannounced = new Map();
    if (notices.length > 0 && !this.life.closed) this.peers?.announce(notices);
  }

  /** With peers: hands a watched topic's watchers every committed event they have not had. */
  private pull(topic: string): void {
    for (;;) {
      const from = this.delivered.get(topic);
      if (from === undefined) return;
      const meta = this.topics.get(topic);
      if (meta === undefined) return;
      // A log created since (or recreated): its events from its first on.
      if (meta.epoch !== from.epoch) {
        from.epoch = meta.epoch;
        from.seq = meta.firstSeq - 1;
      }
      const { events } = this.readNow(topic, from.seq, MAX_READ_LIMIT);
      const last = events[events.length - 1];
      if (last === undefined) return;
      from.seq = last.seq;
      this.feed.events(topic, events);
      if (events.length < MAX_READ_LIMIT) return;
    }
  }

  /**
   * With peers, a read sees every commit so far, the other processes' too: lmdb keeps a read
   * snapshot until the end of the event-loop turn, or its own next commit, and a reader that
   * loops over awaited reads would otherwise never see another process's commit.
   */
  private freshSnapshot(): void {
    if (this.peers !== undefined) this.root.resetReadTxn();
  }

  /** The byte total of the store: see {@link LmdbEngine.stored}. */
  private storedTotal(): number {
    return this.counters === undefined ? this.stored : (this.counters.get('stored') ?? 0);
  }

  /** Inside the write transaction: the byte total changed by `change`. */
  private addStored(change: number): void {
    if (this.counters === undefined) this.stored += change;
    else if (change !== 0) this.counters.putSync('stored', this.storedTotal() + change);
  }

  private sweep(): void {
    if (this.sweeping || this.life.closed) return;
    // Planned on a read snapshot first, so an idle database is never written (nor fsynced) by it.
    const now = this.now();
    let keysDue = false;
    for (const key of this.expiry.getKeys({ limit: 1 })) keysDue = key[0] <= now;
    const due = this.topicsDue(now);
    if (!keysDue && due.length === 0) return;
    this.sweeping = true;
    let change = 0;
    void this.life.track(
      this.root
        .transaction(() => {
          change = this.applySweep(due);
        })
        // A failed sweep changes nothing; the next one retries. Its cause is handled all the same.
        .catch((err: unknown) => {
          if (this.counters === undefined) this.stored -= change;
          return commitCause(err);
        })
        .finally(() => {
          this.sweeping = false;
        }),
    );
  }

  /** The next slice of topics in name order that have events to drop. */
  private topicsDue(now: number): string[] {
    const due: string[] = [];
    let visited = 0;
    let last: string | undefined;
    for (const { key, value } of this.topics.getRange({
      ...(this.sweepAfter === undefined ? {} : { start: this.sweepAfter, exclusiveStart: true }),
      limit: TOPICS_PER_SWEEP,
    })) {
      visited++;
      last = key;
      if (this.retainFrom(key, value, now) > value.firstSeq || this.lacksOffset(key, value)) {
        due.push(key);
      }
    }
    this.sweepAfter = visited < TOPICS_PER_SWEEP ? undefined : last;
    return due;
  }

  /** Whether a topic with a byte limit does not know its first retained event's offset yet. */
  private lacksOffset(topic: string, meta: TopicRecord): boolean {
    return meta.ro === undefined && meta.o !== undefined && this.limitsOf(topic, meta).maxBytes > 0;
  }

  /** Runs inside the write transaction; returns the change of the stored bytes it counted. */
  private applySweep(topics: readonly string[]): number {
    this.root.committed.then(ignore, ignore); // see applyAppend
    const now = this.now();
    const expired: ExpiryKey[] = [];
    for (const key of this.expiry.getKeys({ limit: TRIM_BUDGET })) {
      if (key[0] > now) break;
      expired.push(key);
    }
    for (const key of expired) {
      const [exp, topic, idem] = key;
      this.expiry.removeSync(key);
      const record = this.keys.get([topic, idem]);
      if (record !== undefined && record.exp === exp) this.keys.removeSync([topic, idem]);
    }

    let budget = TRIM_BUDGET;
    let change = 0;
    for (const topic of topics) {
      if (budget <= 0) break;
      // Re-read: appends queued since the plan may have moved the topic on.
      const meta = this.topics.get(topic);
      if (meta === undefined) continue;
      const before = meta.firstSeq;
      const storedBefore = storedBytes(meta);
      if (this.trim(topic, meta, now, budget)) {
        budget -= meta.firstSeq - before;
        this.topics.putSync(topic, meta);
        if (this.maxStoreBytes > 0) change += storedBytes(meta) - storedBefore;
      }
    }
    this.addStored(change);
    return change;
  }

  /**
   * What filled the store, when `cause` (a failed commit's) says it is full: a full disk (ENOSPC,
   * EDQUOT, or an EIO with the disk nearly full: LMDB's "short write") or map. Undefined otherwise.
   */
  private fullStore(cause: unknown): string | undefined {
    const code = (cause as { code?: unknown } | null)?.code;
    const message = cause instanceof Error ? cause.message : '';
    if (code === -30792 || /MDB_MAP_FULL/.test(message)) return 'the lmdb map is full';
    if (FULL_CODES.has(code) || /No space left on device/i.test(message)) {
      return `no space left on the disk of ${this.path}`;
    }
    if (EIO_CODES.has(code)) {
      try {
        const fs = statfsSync(this.path);
        const free = fs.bavail * fs.bsize;
        if (free < SHORT_WRITE_FREE_BYTES) {
          return `a write was cut short with ${free} bytes free on the disk of ${this.path}`;
        }
      } catch {
        // Not even statfs answers: not a question of space.
      }
    }
    return undefined;
  }
}

/** Bytes of events in a topic's stored blocks. */
function storedBytes(meta: TopicRecord): number {
  return (meta.o ?? 0) - (meta.fo ?? 0);
}

/** {@link eventBytes} of event `i` of a block. */
function blockEventBytes(block: BlockRecord, data: readonly string[], i: number): number {
  let n = Buffer.byteLength(data[i] as string);
  const type = block.y?.[i];
  if (type != null) n += Buffer.byteLength(type);
  const key = block.k?.[i];
  if (key != null) n += Buffer.byteLength(key);
  const trace = block.r?.[i];
  if (trace != null) n += trace.length;
  return n;
}

/**
 * The cause of a failed lmdb commit. lmdb rejects each write of the failed batch with "Commit
 * failed" and a separate promise, `commitError`, with the cause; that promise needs a handler too,
 * or it is an unhandled rejection, which ends the process. Call it before any other `await`.
 */
async function commitCause(err: unknown): Promise<unknown> {
  const pending = (err as { commitError?: PromiseLike<unknown> } | null)?.commitError;
  if (pending === undefined) return err;
  try {
    await pending;
    return err;
  } catch (cause) {
    return cause;
  }
}

/** The data of each event of a block. */
function blockData(block: BlockRecord): readonly string[] {
  return typeof block.d === 'string' ? block.d.split('\n') : block.d;
}

/** Event `i` of a block that starts at `start`. */
function blockEvent(
  topic: string,
  epoch: string,
  start: number,
  block: BlockRecord,
  data: readonly string[],
  i: number,
): RillEvent {
  const event: { -readonly [K in keyof RillEvent]: RillEvent[K] } = {
    topic,
    seq: start + i,
    epoch,
    time: block.t,
    data: data[i] as string,
  };
  const type = block.y?.[i];
  if (type != null) event.type = type;
  const key = block.k?.[i];
  if (key != null) event.key = key;
  const trace = block.r?.[i];
  if (trace != null) {
    const t = decodeTrace(trace);
    if (t !== undefined) event.trace = t;
  }
  return event;
}

function toHead(topic: string, meta: TopicRecord): TopicHead {
  return {
    topic,
    epoch: meta.epoch,
    firstSeq: meta.firstSeq,
    lastSeq: meta.lastSeq,
    created: meta.created,
    lastTime: meta.lastTime,
  };
}

/** Calls `then` right away, unlike `Promise.resolve(thenable)`, which defers it to a later tick. */
function thenableToPromise<T>(thenable: PromiseLike<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    thenable.then(resolve, reject);
  });
}
