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
  clampLimit,
  makeEvent,
} from '../common.js';
import { Lifecycle } from '../lifecycle.js';
import { cleanOverride, newEpoch, RetentionResolver, retentionInfo } from '../retention.js';
import { RedisClients } from './client.js';
import { encodeTrace } from '../../model/trace.js';
import { fromEntry, fromFields, toHead, type AppendReply } from './codec.js';
import { RedisKeys } from './keys.js';
import { RedisWatch } from './watch.js';

/** Default Redis address. */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
/** Default prefix of every key and channel the engine uses. */
export const DEFAULT_REDIS_PREFIX = 'rill';
/**
 * How often age retention runs over idle topics by default, ms. Longer than the embedded engines'
 * because every node sweeps: count retention and appends trim on their own.
 */
export const DEFAULT_REDIS_SWEEP_INTERVAL_MS = 10_000;
/** Default interval of the subscriber connection's liveness probe, ms. */
export const DEFAULT_PROBE_INTERVAL_MS = 5_000;
/** Default time a probe may go unanswered before the connection is replaced, ms. */
export const DEFAULT_PROBE_TIMEOUT_MS = 3_000;
/** Default time a command may take before it fails with `engine_unavailable`, ms. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 5_000;
/** Default time an operation waits for a (re)connecting Redis before failing, ms. */
export const DEFAULT_CONNECT_WAIT_MS = 1_000;
/** Largest batch (data + type + key bytes) carried inside a pub/sub message by default. */
export const DEFAULT_INLINE_BYTES = 64 * 1024;

/** Topics one sweep tick visits; the next tick continues after the last. */
const SWEEP_PAGE = 1_000;
const PREFIX_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Options of {@link RedisEngine}. */
export interface RedisEngineOptions extends EngineOptions {
  /** `redis://[user:pass@]host:port/db` or `rediss://…`; default {@link DEFAULT_REDIS_URL}. */
  url?: string;
  /**
   * Prefix of every key and channel, so several deployments (or test runs) share one Redis;
   * 1-64 characters of `[A-Za-z0-9_.:-]`. Default {@link DEFAULT_REDIS_PREFIX}.
   */
  prefix?: string;
  /** Liveness probe interval of the pub/sub connection, ms; default {@link DEFAULT_PROBE_INTERVAL_MS}. */
  probeIntervalMs?: number;
  /** Unanswered probe time before the pub/sub connection is replaced; default {@link DEFAULT_PROBE_TIMEOUT_MS}. */
  probeTimeoutMs?: number;
  /** Longest a command may take; default {@link DEFAULT_COMMAND_TIMEOUT_MS}. */
  commandTimeoutMs?: number;
  /** Longest an operation waits for a reconnecting Redis; default {@link DEFAULT_CONNECT_WAIT_MS}. */
  connectWaitMs?: number;
  /** Batches up to this size travel inside the pub/sub message; default {@link DEFAULT_INLINE_BYTES}. */
  inlineBytes?: number;
}

/**
 * The Redis engine: every topic's log in a Redis stream, shared by any number of Rill nodes.
 *
 * - **Append** is one Lua script (atomic in Redis): it creates the topic with its epoch, checks
 *   idempotency keys, assigns contiguous seqs, adds the entries (id `<seq>-0`, so reads address
 *   seqs directly), applies retention (`XTRIM MINID`) and publishes the batch on the topic's
 *   channel. It resolves only once Redis ran it; how durable that is depends on Redis' own
 *   persistence (`appendonly yes` + `appendfsync always` for an fsync before every reply).
 * - **Watch** subscribes to the topic's channel. Messages carry the seq range (and small batches
 *   themselves); a message whose first seq is not the next expected one — a lost message, a
 *   reconnect, a batch too big to inline — makes the engine read the gap from the stream before
 *   delivering anything later, so the feed never skips. After every reconnect of the pub/sub
 *   connection every watched topic is re-read from its last delivered seq.
 * - A **liveness probe** pings the pub/sub connection; one that stays silent is dropped and
 *   replaced (a half-open TCP connection would otherwise look subscribed forever).
 * - When Redis is at `maxmemory` (with `maxmemory-policy noeviction`: any other policy lets Redis
 *   evict logs silently) or cannot persist (`MISCONF`), an append fails with
 *   `insufficient_storage` having changed nothing; reads and live feeds go on, and appends succeed
 *   again once memory is freed (age retention's sweep, an operator, a larger `maxmemory`).
 * - While Redis is unreachable every operation fails with `engine_unavailable` (after waiting up
 *   to `connectWaitMs` for a reconnect); nothing is queued to be replayed later, so a publish is
 *   never stored after its caller was told it failed — except a command already sent when the
 *   connection broke, whose fate is unknown: retry it with the same idempotency key.
 *
 * Not for Redis Cluster: one script touches the topic's keys and the shared topic index.
 *
 * The parts: `client.ts` (the two connections and the probe), `keys.ts` (key and channel names),
 * `scripts.ts` (the Lua scripts), `codec.ts` (decoding replies and messages), `watch.ts` (live
 * feeds and their gap repair).
 */
/** KEYS lease, fence counter; ARGV owner, ttl ms. Returns the token, or nil when held by another. */
const ACQUIRE_LEASE = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  if string.sub(cur, sp + 1) ~= ARGV[1] then return false end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(cur, 1, sp - 1))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'NX', 'PX', ARGV[2])
return token`;

/** KEYS lease; ARGV owner. Deletes the lease when `owner` holds it. */
const RELEASE_LEASE = `
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, string.find(cur, ' ', 1, true) + 1) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0`;

/** KEYS record; ARGV fence, value. 1 when written, 0 when a greater fence wrote it last. */
const PUT_STATE = `
local f = redis.call('HGET', KEYS[1], 'f')
if f and tonumber(f) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'f', ARGV[1], 'v', ARGV[2])
return 1`;

export class RedisEngine
  implements Engine, HealthCheck, StorageReport, NodeDirectory, Coordination
{
  private readonly prefix: string;
  readonly name = 'redis';

  private readonly life = new Lifecycle(this.name);
  private readonly feed = new Feed();
  private readonly clients: RedisClients;
  private readonly keys: RedisKeys;
  private readonly live: RedisWatch;
  private readonly retention: RetentionResolver;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly inlineBytes: number;
  private sweepAfter: string | undefined;
  private sweeping = false;

  constructor(options: RedisEngineOptions = {}) {
    const prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    if (!PREFIX_RE.test(prefix)) {
      throw new RillError(
        'invalid_parameter',
        `Invalid redis key prefix ${JSON.stringify(prefix)}: use 1-64 characters of [A-Za-z0-9_.:-]`,
      );
    }
    this.retention = new RetentionResolver(options.retention ?? DEFAULT_RETENTION);
    this.windowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    this.now = options.now ?? Date.now;
    this.inlineBytes = options.inlineBytes ?? DEFAULT_INLINE_BYTES;
    this.keys = new RedisKeys(prefix);
    this.prefix = prefix;
    this.clients = new RedisClients(
      {
        url: options.url ?? DEFAULT_REDIS_URL,
        commandTimeoutMs: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
        connectWaitMs: options.connectWaitMs ?? DEFAULT_CONNECT_WAIT_MS,
        probeTimeoutMs: options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
        log: options.log,
      },
      this.life,
    );
    this.live = new RedisWatch(this.clients, this.keys, this.feed, this.life, (t, a, l) =>
      this.read(t, a, l),
    );
    this.life.every(options.sweepIntervalMs ?? DEFAULT_REDIS_SWEEP_INTERVAL_MS, () => this.sweep());
    this.life.every(options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS, () =>
      this.clients.probe(),
    );
  }

  /** Resolves once both connections are ready (or rejects after `timeoutMs`). */
  ready(timeoutMs = 10_000): Promise<void> {
    return this.clients.ready(timeoutMs);
  }

  async health(): Promise<{ ok: boolean; detail?: string }> {
    if (this.life.closed) return { ok: false, detail: 'The redis engine is closed' };
    return this.clients.health();
  }

  /** Redis' `used_memory` against its `maxmemory` (null when it has none). */
  async storageUsage(): Promise<StorageUsage> {
    const info = await this.clients.run(() => this.clients.cmd.info('memory'));
    const field = (name: string): number | null => {
      const m = new RegExp(`^${name}:(\\d+)`, 'm').exec(info);
      return m ? Number(m[1]) : null;
    };
    const max = field('maxmemory');
    return { usedBytes: field('used_memory'), maxBytes: max === null || max === 0 ? null : max };
  }

  /**
   * The node directory: one key per node with a time to live, and a set of their ids (both under
   * one hash tag, so a Redis Cluster keeps them in one slot). Ids whose key expired are dropped
   * from the set by the next listing.
   */
  async putNode(id: string, json: string, ttlMs: number): Promise<void> {
    const { set, node } = this.nodeKeys(id);
    await this.clients.run(() =>
      this.clients.cmd.multi().set(node, json, 'PX', ttlMs).sadd(set, id).exec(),
    );
  }

  async listNodes(): Promise<string[]> {
    const { set } = this.nodeKeys('');
    const ids = await this.clients.run(() => this.clients.cmd.smembers(set));
    if (ids.length === 0) return [];
    const values = await this.clients.run(() =>
      this.clients.cmd.mget(ids.map((id) => this.nodeKeys(id).node)),
    );
    const gone = ids.filter((_, i) => values[i] === null);
    if (gone.length > 0) await this.clients.run(() => this.clients.cmd.srem(set, ...gone));
    return values.filter((v): v is string => v !== null);
  }

  // ---- Coordination ----
  // A lease is `<prefix>:{:coord}:l:<name>` = `<token> <owner>` with a PX expiry, taken with
  // SET NX PX; its tokens come from `<prefix>:{:coord}:f:<name>` (INCR), which never expires. A
  // state record is the hash `<prefix>:{:coord}:s:<key>` {f: fence, v: value}. Each operation is one
  // script, atomic in Redis, so the check and the write cannot be split by another node's.

  async acquireLease(name: string, owner: string, ttlMs: number): Promise<number | null> {
    this.life.assertOpen();
    checkCoordinationKey(name);
    const base = `${this.prefix}:{:coord}`;
    const token = await this.clients.run(() =>
      this.clients.cmd.eval(
        ACQUIRE_LEASE,
        2,
        `${base}:l:${name}`,
        `${base}:f:${name}`,
        owner,
        String(Math.max(1, Math.ceil(ttlMs))),
      ),
    );
    return token === null ? null : Number(token);
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    this.life.assertOpen();
    await this.clients.run(() =>
      this.clients.cmd.eval(RELEASE_LEASE, 1, `${this.prefix}:{:coord}:l:${name}`, owner),
    );
  }

  async getState(key: string): Promise<string | null> {
    this.life.assertOpen();
    checkCoordinationKey(key);
    return this.clients.run(() => this.clients.cmd.hget(`${this.prefix}:{:coord}:s:${key}`, 'v'));
  }

  async putState(key: string, value: string, fence: number): Promise<boolean> {
    this.life.assertOpen();
    checkCoordinationKey(key, value);
    const ok = await this.clients.run(() =>
      this.clients.cmd.eval(PUT_STATE, 1, `${this.prefix}:{:coord}:s:${key}`, String(fence), value),
    );
    return ok === 1;
  }

  private nodeKeys(id: string): { set: string; node: string } {
    const base = `${this.prefix}:{nodes}`;
    return { set: `${base}:ids`, node: `${base}:n:${id}` };
  }

  async append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    this.life.assertOpen();
    assertTopic(topic);
    const args: string[] = [];
    for (const input of inputs) {
      if (
        input.key !== undefined &&
        (input.key.length === 0 || input.key.length > MAX_KEY_LENGTH)
      ) {
        throw new RillError('invalid_event', `Event key must be 1-${MAX_KEY_LENGTH} characters`);
      }
      if (input.type === '') throw new RillError('invalid_event', 'Event type must not be empty');
      args.push(
        input.type ?? '',
        input.key ?? '',
        input.data,
        input.trace === undefined ? '' : encodeTrace(input.trace),
      );
    }
    if (inputs.length === 0) return [];
    const k = this.keys.topic(topic);
    const r = this.retention.for(topic);
    const now = this.now();
    const reply: AppendReply = await this.life.track(
      this.clients.write(() =>
        this.clients.cmd.rillAppend(
          k.meta,
          k.stream,
          k.keys,
          k.expiry,
          this.keys.topics,
          this.keys.created,
          topic,
          String(now),
          String(this.windowMs),
          String(r.maxEvents),
          String(r.maxAgeMs),
          newEpoch(),
          this.keys.channel(topic),
          this.keys.createdChannel,
          String(this.inlineBytes),
          String(r.maxBytes),
          String(inputs.length),
          ...args,
        ),
      ),
    );
    const epoch = reply[0];
    const results: AppendResult[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const [seq, time, dup, fields] = reply[i + 2] as [number, number, number, string[] | null];
      const input = inputs[i] as EventInput;
      if (dup === 1 && fields !== null) {
        results.push({ event: fromFields(topic, epoch, seq, fields), duplicate: true });
      } else {
        // A fresh event, or a duplicate whose original retention already dropped: a retry
        // carries the same event, so its own fields stand in for the stored ones.
        results.push({ event: makeEvent(topic, epoch, seq, time, input), duplicate: dup === 1 });
      }
    }
    return results;
  }

  async read(topic: string, afterSeq: number, limit: number): Promise<ReadResult> {
    this.life.assertOpen();
    const n = clampLimit(limit, MAX_READ_LIMIT);
    let from = Math.floor(afterSeq) + 1;
    if (!(from >= 1)) from = 1;
    const k = this.keys.topic(topic);
    // One script: the head and the entries come from the same moment.
    const [meta, entries] = await this.clients.run(() =>
      this.clients.cmd.rillRead(k.meta, k.stream, String(from), String(n)),
    );
    const head = toHead(topic, meta);
    if (head === null) return { events: [], head: null };
    return { events: entries.map((e) => fromEntry(topic, head.epoch, e)), head };
  }

  async head(topic: string): Promise<TopicHead | null> {
    this.life.assertOpen();
    const m = await this.clients.run(() =>
      this.clients.cmd.hmget(this.keys.topic(topic).meta, 'e', 'c', 'f', 'l', 't'),
    );
    return toHead(topic, m);
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    this.life.assertOpen();
    const k = this.keys.topic(topic);
    const seq = await this.clients.run(() =>
      this.clients.cmd.rillSeqAtTime(k.meta, k.stream, String(ms)),
    );
    return seq ?? null;
  }

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    return this.live.watch(topic, listener, signals);
  }

  /** One PUBLISH on the topic's channel (`~` and the events' JSON); nothing is stored. */
  async broadcast(topic: string, events: readonly EphemeralEvent[]): Promise<void> {
    this.life.assertOpen();
    assertTopic(topic);
    if (events.length === 0) return;
    const body = JSON.stringify(
      events.map((e) => [e.time, e.type ?? null, e.data, e.trace ?? null]),
    );
    await this.clients.run(() => this.clients.cmd.publish(this.keys.channel(topic), `~${body}`));
  }

  async deleteTopic(topic: string): Promise<boolean> {
    this.life.assertOpen();
    const k = this.keys.topic(topic);
    const epoch = await this.life.track(
      this.clients.write(() =>
        this.clients.cmd.rillDelete(
          k.meta,
          k.stream,
          k.keys,
          k.expiry,
          this.keys.topics,
          topic,
          this.keys.channel(topic),
        ),
      ),
    );
    return epoch !== null;
  }

  async purge(topic: string, beforeSeq: number): Promise<TopicHead | null> {
    this.life.assertOpen();
    const k = this.keys.topic(topic);
    const cut = await this.life.track(
      this.clients.write(() =>
        this.clients.cmd.rillPurge(k.meta, k.stream, String(Math.max(0, Math.floor(beforeSeq)))),
      ),
    );
    return cut === null ? null : this.head(topic);
  }

  async setRetention(
    topic: string,
    override: RetentionOverride | null,
  ): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const o = cleanOverride(override);
    const k = this.keys.topic(topic);
    const field = (n: number | undefined): string => (n === undefined ? '' : String(n));
    const ok = await this.life.track(
      this.clients.write(() =>
        this.clients.cmd.rillSetRetention(
          k.meta,
          field(o?.maxEvents),
          field(o?.maxAgeMs),
          field(o?.maxBytes),
        ),
      ),
    );
    if (ok === null) return null;
    const r = this.retention.for(topic);
    await this.life.track(
      this.clients.write(() =>
        this.clients.cmd.rillTrim(
          k.meta,
          k.stream,
          String(this.now()),
          String(r.maxEvents),
          String(r.maxAgeMs),
          String(r.maxBytes),
          '0',
        ),
      ),
    );
    return retentionInfo(r, o);
  }

  async getRetention(topic: string): Promise<TopicRetentionInfo | null> {
    this.life.assertOpen();
    const m = await this.clients.run(() =>
      this.clients.cmd.hmget(this.keys.topic(topic).meta, 'e', 'rm', 'ra', 'rb'),
    );
    if (m[0] === null || m[0] === undefined) return null;
    const o: RetentionOverride = {};
    if (m[1] != null) o.maxEvents = Number(m[1]);
    if (m[2] != null) o.maxAgeMs = Number(m[2]);
    if (m[3] != null) o.maxBytes = Number(m[3]);
    return retentionInfo(this.retention.for(topic), o);
  }

  watchTopics(listener: (topic: string) => void): () => void {
    return this.live.watchTopics(listener);
  }

  async listTopics(
    options: { prefix?: string; after?: string; limit?: number } = {},
  ): Promise<TopicHead[]> {
    this.life.assertOpen();
    const limit = clampLimit(options.limit, MAX_LIST_LIMIT, DEFAULT_LIST_LIMIT);
    const prefix = options.prefix ?? '';
    const after = options.after;
    if (limit === 0) return [];
    const start = after !== undefined && after >= prefix ? `(${after}` : `[${prefix}`;
    // Topic names are ASCII below DEL, so every name starting with `prefix` sorts before this.
    const end = prefix === '' ? '+' : `(${prefix}\x7f`;
    const out: TopicHead[] = [];
    let cursor = start;
    while (out.length < limit) {
      const want = limit - out.length;
      const names = await this.clients.run(() =>
        this.clients.cmd.zrangebylex(this.keys.topics, cursor, end, 'LIMIT', 0, want),
      );
      if (names.length === 0) break;
      const metas = await this.clients.run(() =>
        Promise.all(
          names.map((t) =>
            this.clients.cmd.hmget(this.keys.topic(t).meta, 'e', 'c', 'f', 'l', 't'),
          ),
        ),
      );
      for (const [i, name] of names.entries()) {
        // A name whose log was wiped (FLUSHDB of the meta only) is not a topic any more.
        const head = toHead(name, metas[i] as (string | null)[]);
        if (head !== null) out.push(head);
      }
      if (names.length < want) break;
      cursor = `(${names.at(-1) as string}`;
    }
    return out;
  }

  /** Waits for pending appends and a running sweep, then closes both connections. */
  close(): Promise<void> {
    return this.life.close({
      release: async () => {
        this.live.stop();
        this.feed.clear();
        await this.clients.close();
      },
    });
  }

  /** Age retention for topics without appends: a page of topics per tick, pipelined. */
  private sweep(): void {
    const cmd = this.clients.cmd;
    if (this.sweeping || this.life.closed || cmd.status !== 'ready') return;
    this.sweeping = true;
    const run = async (): Promise<void> => {
      const start = this.sweepAfter === undefined ? '-' : `(${this.sweepAfter}`;
      const names = await cmd.zrangebylex(this.keys.topics, start, '+', 'LIMIT', 0, SWEEP_PAGE);
      this.sweepAfter = names.length < SWEEP_PAGE ? undefined : names.at(-1);
      const now = String(this.now());
      await Promise.all(
        names.map((t) => {
          const r = this.retention.for(t);
          const k = this.keys.topic(t);
          // Every topic: its own override may set an age limit the configuration does not.
          return cmd.rillTrim(
            k.meta,
            k.stream,
            now,
            String(r.maxEvents),
            String(r.maxAgeMs),
            String(r.maxBytes),
            '1',
          );
        }),
      );
    };
    void this.life.track(
      run()
        .catch(() => undefined) // the next tick retries
        .finally(() => {
          this.sweeping = false;
        }),
    );
  }
}
