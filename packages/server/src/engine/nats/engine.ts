import { MAX_KEY_LENGTH, type EphemeralEvent, type EventInput } from '../../model/event.js';
import { RillError } from '../../model/errors.js';
import { assertTopic } from '../../model/topic.js';
import {
  DEFAULT_IDEMPOTENCY_WINDOW_MS,
  DEFAULT_RETENTION,
  checkCoordinationKey,
  type AppendResult,
  type Coordination,
  type Engine,
  type EngineOptions,
  type HealthCheck,
  type NodeDirectory,
  type ReadResult,
  type RetentionOverride,
  type SignalListener,
  type StorageReport,
  type StorageUsage,
  type TopicHead,
  type TopicRetentionInfo,
  type WatchListener,
} from '../engine.js';
import {
  DEFAULT_LIST_LIMIT,
  Feed,
  MAX_LIST_LIMIT,
  MAX_READ_LIMIT,
  StorageLog,
  clampLimit,
} from '../common.js';
import { StorageType } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { Lifecycle } from '../lifecycle.js';
import { cleanOverride, RetentionResolver, retentionInfo } from '../retention.js';
import { describeLog, parseDescription, type LogSettings } from './codec.js';
import { locate } from './read.js';
import { Appender } from './append.js';
import { NatsClient } from './client.js';
import { Reader } from './read.js';
import { Streams } from './streams.js';
import { encodeSignal, NatsWatch } from './watch.js';

/** Default NATS address. */
export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
/** Default prefix of every stream and subject the engine uses. */
export const DEFAULT_NATS_PREFIX = 'rill';
/** How often age retention runs over idle topics by default, ms (every node sweeps). */
export const DEFAULT_NATS_SWEEP_INTERVAL_MS = 10_000;
/** Default time an operation waits for a (re)connecting NATS before failing, ms. */
export const DEFAULT_NATS_CONNECT_WAIT_MS = 1_000;
/** Default time a JetStream request may take, ms. */
export const DEFAULT_NATS_REQUEST_TIMEOUT_MS = 5_000;

const PREFIX_RE = /^[A-Za-z0-9_-]{1,32}$/;

/** Options of {@link NatsEngine}. */
export interface NatsEngineOptions extends EngineOptions {
  /** `nats://host:port` (comma-separated for several servers); default {@link DEFAULT_NATS_URL}. */
  url?: string;
  /** Prefix of every stream and subject: 1-32 characters of `[A-Za-z0-9_-]`. */
  prefix?: string;
  /** Longest an operation waits for a reconnecting server; default {@link DEFAULT_NATS_CONNECT_WAIT_MS}. */
  connectWaitMs?: number;
  /** Longest a JetStream request may take; default {@link DEFAULT_NATS_REQUEST_TIMEOUT_MS}. */
  requestTimeoutMs?: number;
  /** Stream replicas (1 for a single server, 3 for a JetStream cluster). Default 1. */
  replicas?: number;
}

/**
 * The NATS JetStream engine: every topic's log in a JetStream stream of its own, shared by any
 * number of Rill nodes.
 *
 * **Seq design.** A topic is one stream (file storage) with one subject. Each append (or group of
 * appends queued on a node) is **one message** holding its events, with the first seq and the
 * time in headers, so a batch is atomic and its seqs consecutive. Appends are linearized by
 * optimistic concurrency: every publish carries `Nats-Expected-Last-Sequence` = the stream
 * sequence of the message this node saw last; if another node appended meanwhile the publish is
 * refused, the node reads the messages it missed (seqs, idempotency keys) and retries. The next
 * seq is therefore always last seq + 1, across nodes, without a lock. A genesis message (no
 * events, deduplicated by `Nats-Msg-Id`) makes the expectation meaningful from the first append.
 * Each publish also carries a unique `Nats-Msg-Id`, so a publish the client re-sends is stored
 * once. The epoch and creation time live in the stream's description: deleting the stream and
 * recreating it yields a new epoch.
 *
 * **Idempotency keys** are checked against the events of the window, which the appending node
 * knows exactly (its view is the stream's, or the publish is refused).
 *
 * **Watch** uses an ordered consumer per watched topic (it recreates itself on a gap or after a
 * reconnect, resuming after the last message it delivered); a new epoch restarts it from seq 1.
 *
 * **Retention**: count, age and bytes, applied by purging whole messages from the start (`purge`
 * with a sequence); a message partly under the count limit stays stored but hidden (`firstSeq` is
 * computed), while bytes are kept in whole messages (each carries the byte offset of its events, so
 * the cut is found by binary search). `duplicate_window` is the idempotency window.
 *
 * **A full store.** When JetStream refuses a publish for a stream limit with `discard: new`
 * (maximum bytes or messages), an account or server storage limit, the append fails with
 * `insufficient_storage`: the batch is one message, so nothing of it was stored. Reads and watches
 * go on, and the next append tries again (after reloading its view of the log).
 *
 * The parts: `client.ts` (the connection), `streams.ts` (stream names and creation), `codec.ts`
 * (the message format), `append.ts` (appends and retention), `read.ts` (heads and reads),
 * `watch.ts` (live feeds).
 */
/** Shortest life of a node directory entry not written again, ms. */
const NODE_TTL_MS = 10_000;

/** A lease name or state key as a key-value key: base64url behind a letter (keys take few characters). */
function kvKey(s: string): string {
  return `k${Buffer.from(s, 'utf8').toString('base64url')}`;
}

export class NatsEngine implements Engine, HealthCheck, StorageReport, NodeDirectory, Coordination {
  private readonly prefix: string;
  private nodesKv: Promise<KV> | null = null;
  private leasesKv: { ttlMs: number; kv: Promise<KV> } | null = null;
  private stateKv: Promise<KV> | null = null;
  readonly name = 'nats';

  private readonly life = new Lifecycle(this.name);
  private readonly feed = new Feed();
  private readonly client: NatsClient;
  private readonly reader: Reader;
  private readonly appender: Appender;
  private readonly live: NatsWatch;
  private readonly streams: Streams;
  private readonly retention: RetentionResolver;

  constructor(options: NatsEngineOptions = {}) {
    const prefix = options.prefix ?? DEFAULT_NATS_PREFIX;
    if (!PREFIX_RE.test(prefix)) {
      throw new RillError(
        'invalid_parameter',
        `Invalid NATS prefix ${JSON.stringify(prefix)}: use 1-32 characters of [A-Za-z0-9_-]`,
      );
    }
    this.prefix = prefix;
    const retention = new RetentionResolver(options.retention ?? DEFAULT_RETENTION);
    const windowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    const now = options.now ?? Date.now;
    const streams = new Streams(prefix, options.replicas ?? 1, windowMs);
    this.streams = streams;
    this.retention = retention;
    this.client = new NatsClient(
      {
        url: options.url ?? DEFAULT_NATS_URL,
        connectWaitMs: options.connectWaitMs ?? DEFAULT_NATS_CONNECT_WAIT_MS,
        requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_NATS_REQUEST_TIMEOUT_MS,
        log: options.log,
        prepare: (jsm) => streams.ensureRegistry(jsm),
        onReconnect: () => this.live.restart(),
      },
      this.life,
    );
    this.reader = new Reader(this.client, streams, retention, now);
    this.appender = new Appender(
      this.client,
      streams,
      retention,
      windowMs,
      now,
      this.life,
      new StorageLog(options.log, this.name),
    );
    this.live = new NatsWatch(this.client, streams, this.feed, this.life);
    this.life.every(options.sweepIntervalMs ?? DEFAULT_NATS_SWEEP_INTERVAL_MS, () =>
      this.appender.sweep(),
    );
  }

  /** Resolves once connected and JetStream answers. */
  ready(timeoutMs = 10_000): Promise<void> {
    return this.client.ready(timeoutMs);
  }

  async health(): Promise<{ ok: boolean; detail?: string }> {
    if (this.life.closed) return { ok: false, detail: 'The nats engine is closed' };
    try {
      const jsm = await this.client.api();
      await jsm.getAccountInfo();
      return { ok: true };
    } catch {
      return { ok: false, detail: 'NATS JetStream is unreachable' };
    }
  }

  /** The JetStream account's storage (file and memory) against its limit (null for none). */
  async storageUsage(): Promise<StorageUsage> {
    const jsm = await this.client.api();
    const info = await this.client.guard(() => jsm.getAccountInfo());
    const max = Math.max(info.limits.max_storage, 0) + Math.max(info.limits.max_memory, 0);
    const unlimited = info.limits.max_storage < 0 && info.limits.max_memory < 0;
    return { usedBytes: info.storage + info.memory, maxBytes: unlimited || max === 0 ? null : max };
  }

  /**
   * The node directory: a key-value bucket in memory whose entries expire after `ttlMs` (the
   * bucket's age limit, set when the first node creates it).
   */
  async putNode(id: string, json: string, ttlMs: number): Promise<void> {
    const kv = await this.nodeBucket(ttlMs);
    await this.client.guard(() => kv.put(id, json));
  }

  async listNodes(): Promise<string[]> {
    const kv = await this.nodeBucket(NODE_TTL_MS);
    return this.client.guard(async () => {
      const out: string[] = [];
      const keys: string[] = [];
      for await (const k of await kv.keys()) keys.push(k);
      for (const k of keys) {
        const e = await kv.get(k);
        if (e && e.operation === 'PUT') out.push(e.string());
      }
      return out;
    });
  }

  private async nodeBucket(ttlMs: number): Promise<KV> {
    this.life.assertOpen();
    await this.client.api();
    this.nodesKv ??= new Kvm(this.client.js).create(`${this.prefix}_nodes`, {
      ttl: Math.max(ttlMs, NODE_TTL_MS),
      history: 1,
      storage: StorageType.Memory,
    });
    try {
      return await this.nodesKv;
    } catch (err) {
      this.nodesKv = null;
      throw new RillError('engine_unavailable', 'NATS did not open the node directory', {
        cause: err,
      });
    }
  }

  // ---- Coordination ----
  // Leases live in the key-value bucket `<prefix>_leases`, whose age limit is the lease's time to
  // live (a lease not renewed expires with its entry): taken with a create (refused when the key
  // has a live entry), renewed with an update checked against the revision read, so two nodes
  // cannot both take or keep it. The fencing token is the revision, which only grows in a bucket.
  // State records live in `<prefix>_state` (no age limit) as {f: fence, v: value}, written with a
  // create or a revision-checked update after the fence was checked. Both buckets are on file.

  async acquireLease(name: string, owner: string, ttlMs: number): Promise<number | null> {
    checkCoordinationKey(name);
    const kv = await this.leaseBucket(ttlMs);
    const key = kvKey(name);
    const entry = await this.client.guard(() => kv.get(key));
    if (entry !== null && entry.operation === 'PUT') {
      if (entry.string() !== owner) return null;
      // Refused when another node changed it since the read: it is theirs now.
      return kv.update(key, owner, entry.revision).catch(() => null);
    }
    return kv.create(key, owner).catch(() => null);
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    // Nothing was taken through this engine before the bucket was opened.
    if (this.leasesKv === null) return;
    const kv = await this.leaseBucket(this.leasesKv.ttlMs);
    const key = kvKey(name);
    const entry = await this.client.guard(() => kv.get(key));
    if (entry === null || entry.operation !== 'PUT' || entry.string() !== owner) return;
    await kv.delete(key, { previousSeq: entry.revision }).catch(() => undefined);
  }

  async getState(key: string): Promise<string | null> {
    checkCoordinationKey(key);
    const kv = await this.stateBucket();
    const entry = await this.client.guard(() => kv.get(kvKey(key)));
    if (entry === null || entry.operation !== 'PUT') return null;
    return (JSON.parse(entry.string()) as { v: string }).v;
  }

  async putState(key: string, value: string, fence: number): Promise<boolean> {
    checkCoordinationKey(key, value);
    const kv = await this.stateBucket();
    const k = kvKey(key);
    const record = JSON.stringify({ f: fence, v: value });
    // A write refused because another landed between the read and it is tried again on the new one.
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = await this.client.guard(() => kv.get(k));
      try {
        if (entry !== null && entry.operation === 'PUT') {
          if ((JSON.parse(entry.string()) as { f: number }).f > fence) return false;
          await kv.update(k, record, entry.revision);
        } else {
          await kv.create(k, record);
        }
        return true;
      } catch {
        continue;
      }
    }
    throw new RillError('engine_unavailable', 'NATS did not store the state record');
  }

  private async leaseBucket(ttlMs: number): Promise<KV> {
    this.life.assertOpen();
    await this.client.api();
    if (this.leasesKv === null || this.leasesKv.ttlMs !== ttlMs) {
      const name = `${this.prefix}_leases`;
      const kv = (async () => {
        const bucket = await new Kvm(this.client.js).create(name, { ttl: ttlMs, history: 1 });
        // A bucket made with another time to live keeps it: bring it to this one.
        if ((await bucket.status()).ttl !== ttlMs) {
          const jsm = await this.client.api();
          const info = await jsm.streams.info(`KV_${name}`);
          await jsm.streams.update(`KV_${name}`, { ...info.config, max_age: ttlMs * 1_000_000 });
        }
        return bucket;
      })();
      this.leasesKv = { ttlMs, kv };
    }
    const current = this.leasesKv;
    try {
      return await current.kv;
    } catch (err) {
      if (this.leasesKv === current) this.leasesKv = null;
      throw new RillError('engine_unavailable', 'NATS did not open the lease bucket', {
        cause: err,
      });
    }
  }

  private async stateBucket(): Promise<KV> {
    this.life.assertOpen();
    await this.client.api();
    this.stateKv ??= new Kvm(this.client.js).create(`${this.prefix}_state`, { history: 1 });
    try {
      return await this.stateKv;
    } catch (err) {
      this.stateKv = null;
      throw new RillError('engine_unavailable', 'NATS did not open the state bucket', {
        cause: err,
      });
    }
  }

  async append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    this.life.assertOpen();
    assertTopic(topic);
    for (const input of inputs) {
      if (
        input.key !== undefined &&
        (input.key.length === 0 || input.key.length > MAX_KEY_LENGTH)
      ) {
        throw new RillError('invalid_event', `Event key must be 1-${MAX_KEY_LENGTH} characters`);
      }
    }
    if (inputs.length === 0) return [];
    return this.appender.append(topic, inputs);
  }

  async read(topic: string, afterSeq: number, limit: number): Promise<ReadResult> {
    this.life.assertOpen();
    return this.reader.read(topic, afterSeq, clampLimit(limit, MAX_READ_LIMIT));
  }

  async head(topic: string): Promise<TopicHead | null> {
    this.life.assertOpen();
    return this.reader.head(topic);
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    this.life.assertOpen();
    return this.reader.seqAtTime(topic, ms);
  }

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    return this.live.watch(topic, listener, signals);
  }

  /** A core NATS publish on the topic's signal subject, which no stream stores. */
  async broadcast(topic: string, events: readonly EphemeralEvent[]): Promise<void> {
    this.life.assertOpen();
    assertTopic(topic);
    if (events.length === 0) return;
    await this.client.api();
    this.signal(topic, encodeSignal({ kind: 'ephemeral', events }));
  }

  async deleteTopic(topic: string): Promise<boolean> {
    this.life.assertOpen();
    const jsm = await this.client.api();
    const info = await this.client.guard(() => this.streams.info(jsm, topic));
    const meta = info === null ? null : parseDescription(info.config.description);
    if (info === null || meta === null) return false;
    await this.client.guard(() => jsm.streams.delete(info.config.name));
    this.appender.invalidate(topic);
    this.signal(topic, encodeSignal({ kind: 'deleted', epoch: meta.epoch }));
    return true;
  }

  /**
   * Purges the messages wholly before `beforeSeq` and records it as the log's floor in the
   * stream's description, which hides the events before it in a message that stays.
   */
  async purge(topic: string, beforeSeq: number): Promise<TopicHead | null> {
    this.life.assertOpen();
    const jsm = await this.client.api();
    const state = await this.client.guard(() => this.reader.headState(jsm, topic));
    if (state === null) return null;
    const { head, info } = state;
    const cut = Math.min(Math.floor(beforeSeq), head.lastSeq + 1);
    if (cut <= head.firstSeq) return head;
    const stream = info.config.name;
    await this.client.guard(async () => {
      // The newest message stays: it carries lastSeq.
      const at = Math.min(await locate(jsm, stream, info, cut), info.state.last_seq);
      if (at > info.state.first_seq) await jsm.streams.purge(stream, { seq: at });
    });
    await this.updateSettings(topic, (s) => ({ ...s, floor: Math.max(s.floor ?? 0, cut) }));
    return this.reader.head(topic);
  }

  async setRetention(
    topic: string,
    override: RetentionOverride | null,
  ): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const o = cleanOverride(override);
    // What the limits hid so far stays gone when they loosen: the floor holds it.
    const before = await this.reader.head(topic);
    if (before === null) return null;
    const done = await this.updateSettings(topic, (s) => {
      const next: LogSettings = { floor: Math.max(s.floor ?? 0, before.firstSeq) };
      if (o !== null) next.retention = o;
      return next;
    });
    if (!done) return null;
    return retentionInfo(this.retention.for(topic), o);
  }

  async getRetention(topic: string): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const jsm = await this.client.api();
    const info = await this.client.guard(() => this.streams.info(jsm, topic));
    const meta = info === null ? null : parseDescription(info.config.description);
    if (meta === null) return null;
    return retentionInfo(this.retention.for(topic), meta.retention);
  }

  /** Rewrites the settings in a topic's stream description; false for an unknown topic. */
  private async updateSettings(
    topic: string,
    fn: (settings: LogSettings) => LogSettings,
  ): Promise<boolean> {
    const jsm = await this.client.api();
    const info = await this.client.guard(() => this.streams.info(jsm, topic));
    const meta = info === null ? null : parseDescription(info.config.description);
    if (info === null || meta === null) return false;
    const { epoch, created, ...settings } = meta;
    const description = describeLog(epoch, created, fn(settings));
    await this.client.guard(() => jsm.streams.update(info.config.name, { description }));
    this.appender.invalidate(topic);
    return true;
  }

  private signal(topic: string, body: string): void {
    const nc = this.client.connection;
    if (nc === undefined || nc.isClosed()) {
      throw new RillError('engine_unavailable', 'NATS is unreachable');
    }
    nc.publish(this.streams.signalSubject(topic), body);
  }

  watchTopics(listener: (topic: string) => void): () => void {
    return this.live.watchTopics(listener);
  }

  async listTopics(
    options: { prefix?: string; after?: string; limit?: number } = {},
  ): Promise<TopicHead[]> {
    this.life.assertOpen();
    const limit = clampLimit(options.limit, MAX_LIST_LIMIT, DEFAULT_LIST_LIMIT);
    if (limit === 0) return [];
    const names = await this.reader.topicNames(options.prefix ?? '', options.after, limit);
    const heads = await Promise.all(names.map((t) => this.head(t)));
    return heads.filter((h): h is TopicHead => h !== null);
  }

  /** Waits for pending appends and a running sweep, then stops the feeds and the connection. */
  close(): Promise<void> {
    return this.life.close({
      wake: () => this.client.wake(),
      release: async () => {
        await this.live.stop();
        this.feed.clear();
        await this.client.close();
      },
    });
  }
}
