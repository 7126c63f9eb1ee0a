import { Redis, type RedisOptions } from 'ioredis';
import { MAX_KEY_LENGTH, type EventInput, type RillEvent } from '../model/event.js';
import { RillError, isRillError } from '../model/errors.js';
import { assertTopic } from '../model/topic.js';
import {
  DEFAULT_IDEMPOTENCY_WINDOW_MS,
  DEFAULT_RETENTION,
  type AppendResult,
  type Engine,
  type EngineOptions,
  type HealthCheck,
  type ReadResult,
  type TopicHead,
  type WatchListener,
} from './engine.js';
import {
  DEFAULT_LIST_LIMIT,
  Feed,
  MAX_LIST_LIMIT,
  MAX_READ_LIMIT,
  clampLimit,
  closedError,
  ReachabilityLog,
  makeEvent,
} from './common.js';
import { APPEND, SEQ_AT_TIME, TRIM } from './redis-scripts.js';
import { newEpoch, RetentionResolver } from './retention.js';

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
/** Events one gap-repair read fetches. */
const REPAIR_PAGE = 1_000;
/** Delay before a failed gap repair is retried, ms. */
const REPAIR_RETRY_MS = 250;
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

interface Keys {
  meta: string;
  stream: string;
  keys: string;
  expiry: string;
}

/** One watched topic's live feed: the last seq handed to the feed and how far the log is known. */
interface Watched {
  readonly topic: string;
  readonly channel: string;
  active: boolean;
  /** Position known: `pos` and `epoch` describe what the feed has delivered. */
  ready: boolean;
  epoch: string | null;
  pos: number;
  /** Highest seq a message announced in `epoch`. */
  target: number;
  /** A message from another epoch arrived: re-read the head. */
  stale: boolean;
  repairing: boolean;
  retry: NodeJS.Timeout | undefined;
}

type StreamEntry = [id: string, fields: string[]];

type AppendReply = [string, number, ...[number, number, number, string[] | null][]];

interface ScriptCommands {
  rillAppend(...args: string[]): Promise<AppendReply>;
  rillTrim(...args: string[]): Promise<number | null>;
  rillSeqAtTime(...args: string[]): Promise<number | null>;
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
 * - While Redis is unreachable every operation fails with `engine_unavailable` (after waiting up
 *   to `connectWaitMs` for a reconnect); nothing is queued to be replayed later, so a publish is
 *   never stored after its caller was told it failed — except a command already sent when the
 *   connection broke, whose fate is unknown: retry it with the same idempotency key.
 *
 * Not for Redis Cluster: one script touches the topic's keys and the shared topic index.
 */
export class RedisEngine implements Engine, HealthCheck {
  readonly name = 'redis';

  private readonly cmd: Redis & ScriptCommands;
  private readonly sub: Redis;
  private readonly prefix: string;
  private readonly feed = new Feed();
  private readonly retention: RetentionResolver;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly connectWaitMs: number;
  private readonly probeTimeoutMs: number;
  private readonly inlineBytes: number;
  private readonly watched = new Map<string, Watched>();
  private readonly byChannel = new Map<string, Watched>();
  private readonly newChannel: string;
  private readonly topicsKey: string;
  private readonly newKey: string;
  private topicWatch: { lastId: string | null; active: boolean } | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly probeTimer: NodeJS.Timeout;
  private sweepAfter: string | undefined;
  private sweeping = false;
  private probing = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: RedisEngineOptions = {}) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    if (!PREFIX_RE.test(this.prefix)) {
      throw new RillError(
        'invalid_parameter',
        `Invalid redis key prefix ${JSON.stringify(this.prefix)}: use 1-64 characters of [A-Za-z0-9_.:-]`,
      );
    }
    this.retention = new RetentionResolver(options.retention ?? DEFAULT_RETENTION);
    this.windowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    this.now = options.now ?? Date.now;
    this.connectWaitMs = options.connectWaitMs ?? DEFAULT_CONNECT_WAIT_MS;
    this.probeTimeoutMs = options.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
    this.inlineBytes = options.inlineBytes ?? DEFAULT_INLINE_BYTES;
    this.newChannel = `${this.prefix}:new`;
    this.topicsKey = `${this.prefix}:topics`;
    this.newKey = `${this.prefix}:new`;

    const common: RedisOptions = {
      lazyConnect: false,
      connectTimeout: 5_000,
      // A connection we drop as dead (silent probe, timed-out command) may never answer a FIN:
      // destroy it soon instead of waiting ioredis' default 2 s before reconnecting.
      disconnectTimeout: 250,
      // Reconnect forever, backing off to 1 s: the engine is useless without Redis.
      retryStrategy: (times) => Math.min(50 * times, 1_000),
    };
    const url = options.url ?? DEFAULT_REDIS_URL;
    // A command in flight when the connection drops fails instead of being re-sent on reconnect:
    // the caller is told "unknown" (503) rather than the append running twice behind its back.
    this.cmd = new Redis(url, {
      ...common,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      enableAutoPipelining: true,
    }) as Redis & ScriptCommands;
    this.sub = new Redis(url, { ...common, maxRetriesPerRequest: null, autoResubscribe: false });
    // Connection errors surface through commands (503s); the log gets one line per outage.
    const reach = new ReachabilityLog(options.log, 'Redis', url);
    this.cmd.on('error', (err) => {
      if (!this.closed) reach.unreachable(err);
    });
    this.cmd.on('ready', () => reach.reachable());
    this.sub.on('error', () => undefined);
    this.cmd.defineCommand('rillAppend', { numberOfKeys: 6, lua: APPEND });
    this.cmd.defineCommand('rillTrim', { numberOfKeys: 2, lua: TRIM });
    this.cmd.defineCommand('rillSeqAtTime', { numberOfKeys: 2, lua: SEQ_AT_TIME });

    this.sub.on('message', (channel: string, message: string) => this.onMessage(channel, message));
    this.sub.on('ready', () => this.onSubscriberReady());

    this.sweepTimer = setInterval(
      () => this.sweep(),
      options.sweepIntervalMs ?? DEFAULT_REDIS_SWEEP_INTERVAL_MS,
    );
    this.sweepTimer.unref();
    this.probeTimer = setInterval(
      () => this.probe(),
      options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS,
    );
    this.probeTimer.unref();
  }

  /** Resolves once both connections are ready (or rejects after `timeoutMs`). */
  async ready(timeoutMs = 10_000): Promise<void> {
    await Promise.all([waitReady(this.cmd, timeoutMs), waitReady(this.sub, timeoutMs)]);
  }

  async health(): Promise<{ ok: boolean; detail?: string }> {
    if (this.closed) return { ok: false, detail: 'The redis engine is closed' };
    if (this.cmd.status !== 'ready' || this.sub.status !== 'ready') {
      return { ok: false, detail: 'Redis is unreachable' };
    }
    try {
      await this.cmd.ping();
      return { ok: true };
    } catch {
      return { ok: false, detail: 'Redis does not answer' };
    }
  }

  async append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    if (this.closed) throw closedError(this.name);
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
      args.push(input.type ?? '', input.key ?? '', input.data);
    }
    if (inputs.length === 0) return [];
    const k = this.keys(topic);
    const r = this.retention.for(topic);
    const now = this.now();
    const done = this.run(() =>
      this.cmd.rillAppend(
        k.meta,
        k.stream,
        k.keys,
        k.expiry,
        this.topicsKey,
        this.newKey,
        topic,
        String(now),
        String(this.windowMs),
        String(r.maxEvents),
        String(r.maxAgeMs),
        newEpoch(),
        this.channelOf(topic),
        this.newChannel,
        String(this.inlineBytes),
        String(inputs.length),
        ...args,
      ),
    );
    this.inflight.add(done);
    let reply: AppendReply;
    try {
      reply = await done;
    } finally {
      this.inflight.delete(done);
    }
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
    if (this.closed) throw closedError(this.name);
    const n = clampLimit(limit, MAX_READ_LIMIT);
    let from = Math.floor(afterSeq) + 1;
    if (!(from >= 1)) from = 1;
    const k = this.keys(topic);
    // One MULTI: the head and the entries come from the same moment.
    const replies = await this.run(async () => {
      const m = this.cmd.multi().hmget(k.meta, 'e', 'c', 'f', 'l', 't');
      if (n > 0) m.xrange(k.stream, `${from}-0`, '+', 'COUNT', n);
      const out = await m.exec();
      if (out === null) throw new Error('MULTI aborted');
      for (const [err] of out) if (err) throw err;
      return out.map(([, v]) => v);
    });
    const head = toHead(topic, replies[0] as (string | null)[]);
    if (head === null) return { events: [], head: null };
    const entries = (replies[1] ?? []) as StreamEntry[];
    return { events: entries.map((e) => fromEntry(topic, head.epoch, e)), head };
  }

  async head(topic: string): Promise<TopicHead | null> {
    if (this.closed) throw closedError(this.name);
    const m = await this.run(() => this.cmd.hmget(this.keys(topic).meta, 'e', 'c', 'f', 'l', 't'));
    return toHead(topic, m);
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    if (this.closed) throw closedError(this.name);
    const k = this.keys(topic);
    const seq = await this.run(() => this.cmd.rillSeqAtTime(k.meta, k.stream, String(ms)));
    return seq ?? null;
  }

  watch(topic: string, listener: WatchListener): () => void {
    if (this.closed) return () => {};
    const unwatch = this.feed.watch(topic, listener);
    if (!this.watched.has(topic)) this.startWatch(topic);
    return () => {
      unwatch();
      if (!this.feed.hasWatchers(topic)) this.stopWatch(topic);
    };
  }

  watchTopics(listener: (topic: string) => void): () => void {
    if (this.closed) return () => {};
    if (this.topicWatch === undefined) {
      const tw = { lastId: null as string | null, active: true };
      this.topicWatch = tw;
      // Queued on the command connection now, so it reflects the log no earlier than this call.
      this.cmd.xrevrange(this.newKey, '+', '-', 'COUNT', 1).then(
        (last) => {
          const id = last[0]?.[0] ?? '0-0';
          if (tw.lastId === null || compareIds(id, tw.lastId) > 0) tw.lastId = id;
        },
        () => undefined,
      );
      this.sub.subscribe(this.newChannel).catch(() => undefined);
    }
    return this.feed.watchTopics(listener);
  }

  async listTopics(
    options: { prefix?: string; after?: string; limit?: number } = {},
  ): Promise<TopicHead[]> {
    if (this.closed) throw closedError(this.name);
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
      const names = await this.run(() =>
        this.cmd.zrangebylex(this.topicsKey, cursor, end, 'LIMIT', 0, want),
      );
      if (names.length === 0) break;
      const metas = await this.run(() =>
        Promise.all(names.map((t) => this.cmd.hmget(this.keys(t).meta, 'e', 'c', 'f', 'l', 't'))),
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

  /** Waits for pending appends, then closes both connections. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweepTimer);
    clearInterval(this.probeTimer);
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    for (const w of this.watched.values()) {
      w.active = false;
      clearTimeout(w.retry);
    }
    this.watched.clear();
    this.byChannel.clear();
    this.feed.clear();
    this.sub.disconnect();
    if (this.cmd.status === 'ready') await this.cmd.quit().catch(() => undefined);
    this.cmd.disconnect();
  }

  /**
   * Runs a command, mapping every failure to `engine_unavailable`. A command is not sent while
   * the connection is down (it would sit in a queue and maybe run long after its caller gave up):
   * it waits up to `connectWaitMs` for the connection instead.
   */
  private async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.cmd.status !== 'ready') {
      try {
        await waitReady(this.cmd, this.connectWaitMs);
      } catch (err) {
        throw new RillError('engine_unavailable', 'Redis is unreachable', { cause: err });
      }
    }
    try {
      return await op();
    } catch (err) {
      if (isRillError(err)) throw err;
      if (err instanceof Error && /timed out/i.test(err.message)) {
        // No answer in time: the connection may be half-open. Replace it rather than wait on it.
        this.cmd.disconnect(true);
      }
      throw new RillError('engine_unavailable', 'Redis did not complete the operation', {
        cause: err,
      });
    }
  }

  private keys(topic: string): Keys {
    const base = `${this.prefix}:{${topic}}`;
    return { meta: `${base}:m`, stream: `${base}:s`, keys: `${base}:k`, expiry: `${base}:x` };
  }

  private channelOf(topic: string): string {
    return `${this.prefix}:e:${topic}`;
  }

  // ---- live feed ----

  private startWatch(topic: string): void {
    const w: Watched = {
      topic,
      channel: this.channelOf(topic),
      active: true,
      ready: false,
      epoch: null,
      pos: 0,
      target: 0,
      stale: false,
      repairing: false,
      retry: undefined,
    };
    this.watched.set(topic, w);
    this.byChannel.set(w.channel, w);
    // The head is read on the command connection right away, so this process's later appends
    // (same connection, same order) are all after it; anything between it and the subscription
    // taking effect is read from the stream once the subscription is confirmed.
    const head = this.cmd.hmget(this.keys(topic).meta, 'e', 'l');
    const subscribed = this.sub.subscribe(w.channel);
    Promise.all([head, subscribed]).then(
      ([m]) => {
        if (!w.active || w.ready) return;
        if (m[0] !== null && m[0] !== undefined) {
          w.epoch = m[0];
          w.pos = Number(m[1]);
        }
        w.ready = true;
        this.repair(w);
      },
      () => {
        // Redis is down: the subscriber's next 'ready' re-subscribes and re-reads every topic.
        head.catch(() => undefined);
        subscribed.catch(() => undefined);
        this.scheduleRepair(w);
      },
    );
  }

  private stopWatch(topic: string): void {
    const w = this.watched.get(topic);
    if (w === undefined) return;
    w.active = false;
    clearTimeout(w.retry);
    this.watched.delete(topic);
    this.byChannel.delete(w.channel);
    this.sub.unsubscribe(w.channel).catch(() => undefined);
  }

  private onMessage(channel: string, message: string): void {
    if (channel === this.newChannel) {
      this.onTopicCreated(message);
      return;
    }
    const w = this.byChannel.get(channel);
    if (w === undefined || !w.active) return;
    const m = parseMessage(message);
    if (m === null) return;
    if (w.epoch !== null && m.epoch !== w.epoch) {
      w.stale = true;
      this.repair(w);
      return;
    }
    if (!w.ready || w.repairing || (w.epoch === null && m.from !== 1)) {
      if (w.epoch === null) w.stale = true;
      else if (m.to > w.target) w.target = m.to;
      if (w.ready) this.repair(w);
      return;
    }
    if (m.to <= w.pos) return;
    if (m.from === w.pos + 1 && m.events !== null) {
      const events = m.events.map(([type, key, data], i) => {
        const input: EventInput = { data };
        if (type !== false) input.type = type;
        if (key !== false) input.key = key;
        return makeEvent(w.topic, m.epoch, m.from + i, m.time, input);
      });
      w.epoch = m.epoch;
      w.pos = m.to;
      this.feed.events(w.topic, events);
      return;
    }
    // A hole before this message, or a batch too large to inline: read it from the stream.
    if (m.to > w.target) w.target = m.to;
    this.repair(w);
  }

  /** Reads the stream after `pos` until the feed has caught up with every announced seq. */
  private repair(w: Watched): void {
    if (w.repairing || !w.active || this.closed) return;
    w.repairing = true;
    this.repairLoop(w).then(
      () => {
        w.repairing = false;
      },
      () => {
        w.repairing = false;
        this.scheduleRepair(w);
      },
    );
  }

  private async repairLoop(w: Watched): Promise<void> {
    for (;;) {
      if (!w.active || this.closed) return;
      if (!w.ready) {
        const m = await this.run(() => this.cmd.hmget(this.keys(w.topic).meta, 'e', 'l'));
        if (m[0] !== null && m[0] !== undefined) {
          w.epoch = m[0];
          w.pos = Number(m[1]);
        }
        w.ready = true;
      }
      w.stale = false;
      const announced = w.target;
      const r = await this.read(w.topic, w.pos, REPAIR_PAGE);
      if (!w.active) return;
      if (r.head === null) {
        // The log is gone (wiped) and not recreated yet: its next epoch starts from scratch.
        w.epoch = null;
        w.pos = 0;
        w.target = 0;
        if (w.stale) continue;
        return;
      }
      if (w.epoch !== r.head.epoch) {
        w.epoch = r.head.epoch;
        w.pos = 0;
        w.target = 0;
        continue;
      }
      const fresh = r.events.filter((e) => e.seq > w.pos);
      if (fresh.length > 0) {
        w.pos = (fresh.at(-1) as RillEvent).seq;
        this.feed.events(w.topic, fresh);
      }
      if (announced > r.head.lastSeq && w.target === announced) {
        // Announced before this read yet beyond its head: not of this log (it cannot shrink).
        w.target = r.head.lastSeq;
      }
      if (r.events.length < REPAIR_PAGE && w.pos >= w.target && !w.stale) return;
    }
  }

  private scheduleRepair(w: Watched): void {
    if (!w.active || this.closed || w.retry !== undefined) return;
    w.retry = setTimeout(() => {
      w.retry = undefined;
      this.repair(w);
    }, REPAIR_RETRY_MS);
    w.retry.unref();
  }

  /**
   * After every (re)connect of the pub/sub connection: subscribe again, make sure Redis applied
   * the subscriptions (a PING answers after them), then re-read every watched topic from its last
   * delivered seq. Whatever was published while the connection was down is in the streams.
   */
  private onSubscriberReady(): void {
    if (this.closed) return;
    const channels = [...this.byChannel.keys()];
    if (this.topicWatch !== undefined) channels.push(this.newChannel);
    if (channels.length === 0) return;
    this.sub
      .subscribe(...channels)
      .then(() => this.sub.ping())
      .then(
        () => {
          for (const w of this.watched.values()) {
            w.stale = true;
            this.repair(w);
          }
          this.repairTopics();
        },
        () => undefined, // dropped again: the next 'ready' retries
      );
  }

  private onTopicCreated(message: string): void {
    const tw = this.topicWatch;
    if (tw === undefined) return;
    const space = message.indexOf(' ');
    if (space < 0) return;
    const id = message.slice(0, space);
    if (tw.lastId !== null && compareIds(id, tw.lastId) <= 0) return;
    tw.lastId = id;
    this.feed.topicCreated(message.slice(space + 1));
  }

  /** Replays topic creations missed while the pub/sub connection was down. */
  private repairTopics(): void {
    const tw = this.topicWatch;
    if (tw === undefined || tw.lastId === null) return;
    const run = async (): Promise<void> => {
      for (;;) {
        const after = tw.lastId as string;
        const entries = (await this.run(() =>
          this.cmd.xrange(this.newKey, `(${after}`, '+', 'COUNT', REPAIR_PAGE),
        )) as StreamEntry[];
        for (const [id, fields] of entries) {
          if (tw.lastId !== null && compareIds(id, tw.lastId) <= 0) continue;
          tw.lastId = id;
          const name = fields[1];
          if (name !== undefined) this.feed.topicCreated(name);
        }
        if (entries.length < REPAIR_PAGE) return;
      }
    };
    run().catch(() => undefined);
  }

  /**
   * Liveness probe: a PING on the pub/sub connection must come back within `probeTimeoutMs`,
   * or the connection is dropped and reconnected (and every watched topic re-read).
   */
  private probe(): void {
    if (this.probing || this.closed || this.sub.status !== 'ready') return;
    this.probing = true;
    let answered = false;
    const timer = setTimeout(() => {
      if (answered || this.closed) return;
      this.probing = false;
      this.sub.disconnect(true);
    }, this.probeTimeoutMs);
    timer.unref();
    this.sub.ping().then(
      () => {
        answered = true;
        clearTimeout(timer);
        this.probing = false;
      },
      () => {
        answered = true;
        clearTimeout(timer);
        this.probing = false;
      },
    );
  }

  // ---- retention sweep ----

  /** Age retention for topics without appends: a page of topics per tick, pipelined. */
  private sweep(): void {
    if (this.sweeping || this.closed || this.cmd.status !== 'ready') return;
    this.sweeping = true;
    const run = async (): Promise<void> => {
      const start = this.sweepAfter === undefined ? '-' : `(${this.sweepAfter}`;
      const names = await this.cmd.zrangebylex(this.topicsKey, start, '+', 'LIMIT', 0, SWEEP_PAGE);
      this.sweepAfter = names.length < SWEEP_PAGE ? undefined : names.at(-1);
      const now = String(this.now());
      await Promise.all(
        names.map((t) => {
          const r = this.retention.for(t);
          if (r.maxAgeMs <= 0) return null;
          const k = this.keys(t);
          return this.cmd.rillTrim(k.meta, k.stream, now, String(r.maxEvents), String(r.maxAgeMs));
        }),
      );
    };
    const done = run()
      .catch(() => undefined) // the next tick retries
      .finally(() => {
        this.sweeping = false;
        this.inflight.delete(done);
      });
    this.inflight.add(done);
  }
}

interface Message {
  epoch: string;
  from: number;
  to: number;
  time: number;
  events: [string | false, string | false, string][] | null;
}

/** `epoch|from|to|time|json-or-empty`, as the append script publishes it. */
function parseMessage(message: string): Message | null {
  const parts: string[] = [];
  let at = 0;
  for (let i = 0; i < 4; i++) {
    const bar = message.indexOf('|', at);
    if (bar < 0) return null;
    parts.push(message.slice(at, bar));
    at = bar + 1;
  }
  const body = message.slice(at);
  const [epoch, from, to, time] = parts as [string, string, string, string];
  let events: Message['events'] = null;
  if (body !== '') {
    try {
      events = JSON.parse(body) as Message['events'];
    } catch {
      events = null;
    }
    if (!Array.isArray(events) || events.length !== Number(to) - Number(from) + 1) events = null;
  }
  return { epoch, from: Number(from), to: Number(to), time: Number(time), events };
}

function fromFields(topic: string, epoch: string, seq: number, fields: string[]): RillEvent {
  const input: EventInput = { data: 'null' };
  let time = 0;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const v = fields[i + 1] as string;
    switch (fields[i]) {
      case 't':
        time = Number(v);
        break;
      case 'd':
        input.data = v;
        break;
      case 'y':
        input.type = v;
        break;
      case 'k':
        input.key = v;
        break;
    }
  }
  return makeEvent(topic, epoch, seq, time, input);
}

function fromEntry(topic: string, epoch: string, [id, fields]: StreamEntry): RillEvent {
  return fromFields(topic, epoch, parseInt(id, 10), fields);
}

function toHead(topic: string, m: (string | null)[]): TopicHead | null {
  const [epoch, created, first, last, lastTime] = m;
  if (epoch === null || epoch === undefined) return null;
  return {
    topic,
    epoch,
    firstSeq: Number(first),
    lastSeq: Number(last),
    created: Number(created),
    lastTime: Number(lastTime),
  };
}

/** Orders two stream ids `ms-seq`. */
function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am !== bm ? am - bm : as - bs;
}

function waitReady(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  if (client.status === 'end') return Promise.reject(new Error('connection closed'));
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('end', onEnd);
      if (err) reject(err);
      else resolve();
    };
    const onReady = (): void => done();
    const onEnd = (): void => done(new Error('connection closed'));
    const timer = setTimeout(() => done(new Error('not connected')), timeoutMs);
    client.once('ready', onReady);
    client.once('end', onEnd);
  });
}
