import { createHash, randomBytes } from 'node:crypto';
import {
  NoRespondersError,
  connect,
  headers as natsHeaders,
  nanos,
  type MsgHdrs,
  type NatsConnection,
} from '@nats-io/transport-node';
import {
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type StoredMsg,
  type StreamInfo,
} from '@nats-io/jetstream';
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
  makeEvent,
  ReachabilityLog,
} from './common.js';
import { newEpoch, RetentionResolver } from './retention.js';

/** Default NATS address. */
export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
/** Default prefix of every stream and subject the engine uses. */
export const DEFAULT_NATS_PREFIX = 'rill';
/** How often age retention runs over idle topics by default, ms (every node sweeps). */
export const DEFAULT_NATS_SWEEP_INTERVAL_MS = 10_000;
/** Default time an operation waits for a (re)connecting NATS before failing, ms. */
export const DEFAULT_NATS_CONNECT_WAIT_MS = 1_000;
/** Pause between connection attempts, ms. */
const RECONNECT_WAIT_MS = 250;
/** Default time a JetStream request may take, ms. */
export const DEFAULT_NATS_REQUEST_TIMEOUT_MS = 5_000;

/** Most appends of one topic merged into one JetStream message (group commit). */
const GROUP_MAX = 256;
/** Times an append retries after losing the optimistic-concurrency race to another node. */
const CONFLICT_RETRIES = 50;
/** Count retention purges once this share over the limit is physically kept (hysteresis). */
const PURGE_SLACK = 0.1;
/** How far before the head a new watch starts, in messages ("shortly before" of the contract). */
const WATCH_BACKLOG = 8;
const PREFIX_RE = /^[A-Za-z0-9_-]{1,32}$/;
/**
 * Pull expiry of the feeds' consumers, ms: heartbeats come at half of it, so a consumer the
 * server lost is noticed within about this long.
 */
const CONSUME_EXPIRES_MS = 5_000;

const H_SEQ = 'Rill-Seq';
const H_TIME = 'Rill-Time';
const H_COUNT = 'Rill-N';

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

/** A batch message: one append group, consecutive seqs. */
interface Batch {
  msgSeq: number;
  first: number;
  count: number;
  time: number;
  events: [string | null, string | null, string][];
}

interface KeyEntry {
  seq: number;
  time: number;
  exp: number;
}

interface Pending {
  inputs: readonly EventInput[];
  resolve: (r: AppendResult[]) => void;
  reject: (err: unknown) => void;
}

/** What this node knows of a topic's log, kept exact by optimistic concurrency on appends. */
interface Log {
  readonly topic: string;
  readonly stream: string;
  readonly subject: string;
  epoch: string;
  created: number;
  /** Stream sequence of the newest message; every append expects it. */
  lastMsg: number;
  lastSeq: number;
  lastTime: number;
  /** Seq of the first event physically kept, and its message's time. */
  physFirst: number;
  firstTime: number;
  keys: Map<string, KeyEntry>;
  queue: Pending[];
  busy: boolean;
  valid: boolean;
}

interface Watched {
  readonly topic: string;
  active: boolean;
  epoch: string | null;
  pos: number;
  lastMsg: number;
  messages: ConsumerMessages | undefined;
  wake: (() => void) | undefined;
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
 * **Retention**: count and age, applied by purging whole messages from the start (`purge` with a
 * sequence); a message partly under the count limit stays stored but hidden (`firstSeq` is
 * computed). `duplicate_window` is the idempotency window.
 */
export class NatsEngine implements Engine, HealthCheck {
  readonly name = 'nats';

  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private readonly connecting: Promise<void>;
  private connectError: unknown;
  private connected = false;
  private readonly reconnectWaiters = new Set<() => void>();
  private readonly prefix: string;
  private readonly url: string;
  private readonly feed = new Feed();
  private readonly retention: RetentionResolver;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly connectWaitMs: number;
  private readonly requestTimeoutMs: number;
  private readonly replicas: number;
  private readonly logs = new Map<string, Log>();
  private readonly watched = new Map<string, Watched>();
  private readonly registryStream: string;
  private readonly registrySubject: string;
  private registry: { messages: ConsumerMessages | undefined; active: boolean } | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly sweepTimer: NodeJS.Timeout;
  private sweeping = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly reach: ReachabilityLog;
  /** Cuts short the pause between first-connect attempts (set while one runs). */
  private wakeConnect: (() => void) | undefined;

  constructor(options: NatsEngineOptions = {}) {
    this.prefix = options.prefix ?? DEFAULT_NATS_PREFIX;
    if (!PREFIX_RE.test(this.prefix)) {
      throw new RillError(
        'invalid_parameter',
        `Invalid NATS prefix ${JSON.stringify(this.prefix)}: use 1-32 characters of [A-Za-z0-9_-]`,
      );
    }
    this.url = options.url ?? DEFAULT_NATS_URL;
    this.reach = new ReachabilityLog(options.log, 'NATS', this.url);
    this.retention = new RetentionResolver(options.retention ?? DEFAULT_RETENTION);
    this.windowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    this.now = options.now ?? Date.now;
    this.connectWaitMs = options.connectWaitMs ?? DEFAULT_NATS_CONNECT_WAIT_MS;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_NATS_REQUEST_TIMEOUT_MS;
    this.replicas = options.replicas ?? 1;
    this.registryStream = `${this.prefix}_topics`;
    this.registrySubject = `${this.prefix}.topics`;
    this.connecting = this.start();
    this.connecting.catch(() => undefined);
    this.sweepTimer = setInterval(
      () => this.sweep(),
      options.sweepIntervalMs ?? DEFAULT_NATS_SWEEP_INTERVAL_MS,
    );
    this.sweepTimer.unref();
  }

  private async start(): Promise<void> {
    try {
      const nc = await this.connectFirst();
      this.nc = nc;
      this.connected = true;
      void this.watchStatus(nc);
      this.js = jetstream(nc, { timeout: this.requestTimeoutMs });
      this.jsm = await jetstreamManager(nc, { timeout: this.requestTimeoutMs });
      await this.ensureStream({
        name: this.registryStream,
        subjects: [this.registrySubject],
        description: 'rill topic registry',
      });
    } catch (err) {
      this.connectError = err;
      throw err;
    }
  }

  /**
   * The first connection. Not there yet at start-up is like a later outage: keep trying (logging
   * it once), answer 503 meanwhile. The retries are ours rather than the client's
   * `waitOnFirstConnect`, which nothing can stop: `close()` ends them.
   */
  private async connectFirst(): Promise<NatsConnection> {
    for (;;) {
      let nc: NatsConnection;
      try {
        nc = await connect({
          servers: this.url.split(','),
          name: 'rill',
          maxReconnectAttempts: -1,
          reconnectTimeWait: RECONNECT_WAIT_MS,
          // The client's own PING/PONG is the liveness probe: a silent connection is replaced.
          pingInterval: 5_000,
          maxPingOut: 2,
          timeout: this.requestTimeoutMs,
        });
      } catch (err) {
        if (this.closed) throw closedError(this.name);
        this.connectError = err;
        this.reach.unreachable(err);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, RECONNECT_WAIT_MS);
          function done(): void {
            clearTimeout(timer);
            resolve();
          }
          this.wakeConnect = done;
        });
        this.wakeConnect = undefined;
        if (this.closed) throw closedError(this.name);
        continue;
      }
      if (this.closed) {
        await nc.close().catch(() => undefined);
        throw closedError(this.name);
      }
      this.reach.reachable();
      return nc;
    }
  }

  /**
   * Tracks the connection: while it is down, operations fail fast with `engine_unavailable`
   * instead of queuing a publish in the client's reconnect buffer until its timeout.
   */
  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'staleConnection') {
        this.connected = false;
        const why = s.type === 'disconnect' ? 'connection lost' : 'connection went silent';
        if (!this.closed) this.reach.unreachable(new Error(why));
      } else if (s.type === 'reconnect') {
        this.connected = true;
        this.reach.reachable();
        for (const w of [...this.reconnectWaiters]) w();
        // Consumers do not outlive a server restart: start each feed again after what it
        // delivered, rather than wait for its missed heartbeats to say so.
        for (const w of this.watched.values()) void w.messages?.close().catch(() => undefined);
        void this.registry?.messages?.close().catch(() => undefined);
      }
    }
  }

  /** Resolves once connected and JetStream answers. */
  async ready(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('NATS not ready in time')), timeoutMs);
    });
    try {
      await Promise.race([this.connecting, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async health(): Promise<{ ok: boolean; detail?: string }> {
    if (this.closed) return { ok: false, detail: 'The nats engine is closed' };
    try {
      const jsm = await this.api();
      await jsm.getAccountInfo();
      return { ok: true };
    } catch {
      return { ok: false, detail: 'NATS JetStream is unreachable' };
    }
  }

  async append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    if (this.closed) throw closedError(this.name);
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
    let log = this.logs.get(topic);
    if (log === undefined) {
      log = this.emptyLog(topic);
      this.logs.set(topic, log);
    }
    const done = new Promise<AppendResult[]>((resolve, reject) => {
      (log as Log).queue.push({ inputs, resolve, reject });
    });
    this.inflight.add(done);
    void done.finally(() => this.inflight.delete(done)).catch(() => undefined);
    this.drain(log);
    return done;
  }

  async read(topic: string, afterSeq: number, limit: number): Promise<ReadResult> {
    if (this.closed) throw closedError(this.name);
    const n = clampLimit(limit, MAX_READ_LIMIT);
    const jsm = await this.api();
    const state = await this.guard(() => this.headState(jsm, topic));
    if (state === null) return { events: [], head: null };
    const { head, info } = state;
    const events: RillEvent[] = [];
    let from = Math.floor(afterSeq) + 1;
    if (!(from >= head.firstSeq)) from = head.firstSeq;
    if (n === 0 || from > head.lastSeq) return { events, head };
    const stream = info.config.name;
    let msgSeq = await this.guard(() => this.locate(jsm, stream, info, from));
    while (events.length < n && msgSeq <= info.state.last_seq) {
      const msg = await this.guard(() => getMsg(jsm, stream, msgSeq));
      msgSeq++;
      if (msg === null) continue;
      const b = parseBatch(msg);
      if (b === null) continue;
      for (let i = 0; i < b.count && events.length < n; i++) {
        const seq = b.first + i;
        if (seq < from || seq > head.lastSeq) continue;
        events.push(toEvent(topic, head.epoch, seq, b.time, b.events[i]!));
      }
    }
    return { events, head };
  }

  async head(topic: string): Promise<TopicHead | null> {
    if (this.closed) throw closedError(this.name);
    const jsm = await this.api();
    const state = await this.guard(() => this.headState(jsm, topic));
    return state?.head ?? null;
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    if (this.closed) throw closedError(this.name);
    const jsm = await this.api();
    const state = await this.guard(() => this.headState(jsm, topic));
    if (state === null) return null;
    const { head, info } = state;
    if (head.firstSeq > head.lastSeq) return head.lastSeq + 1;
    // Binary search over messages: time never decreases within a topic.
    const stream = info.config.name;
    let lo = await this.guard(() => this.locate(jsm, stream, info, head.firstSeq));
    let hi = info.state.last_seq + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const msg = await this.guard(() => getMsg(jsm, stream, mid));
      const b = msg === null ? null : parseBatch(msg);
      if (b !== null && b.time < ms) lo = mid + 1;
      else hi = mid;
    }
    if (lo > info.state.last_seq) return head.lastSeq + 1;
    const msg = await this.guard(() => getMsg(jsm, stream, lo));
    const b = msg === null ? null : parseBatch(msg);
    return b === null ? head.lastSeq + 1 : Math.max(b.first, head.firstSeq);
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
    this.startRegistry();
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
    const jsm = await this.api();
    const subjectPrefix = `${this.prefix}.t.`;
    // JetStream lists streams in no useful order: collect the names, sort, page here.
    const infos = await this.guard(async () => {
      const out: StreamInfo[] = [];
      for await (const si of jsm.streams.list(`${subjectPrefix}>`)) out.push(si);
      return out;
    });
    const names = infos
      .map((si) => si.config.subjects?.[0]?.slice(subjectPrefix.length) ?? '')
      .filter((t) => t !== '' && t.startsWith(prefix) && (after === undefined || t > after))
      .sort()
      .slice(0, limit);
    const heads = await Promise.all(names.map((t) => this.head(t)));
    return heads.filter((h): h is TopicHead => h !== null);
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.wakeConnect?.();
    clearInterval(this.sweepTimer);
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    for (const w of this.watched.values()) this.stopWatch(w.topic);
    if (this.registry) {
      this.registry.active = false;
      await this.registry.messages?.close().catch(() => undefined);
    }
    this.feed.clear();
    await this.connecting.catch(() => undefined);
    await this.nc?.close().catch(() => undefined);
  }

  // ---- plumbing ----

  /** The JetStream manager, once connected; `engine_unavailable` when not reachable in time. */
  private async api(): Promise<JetStreamManager> {
    if (this.jsm === undefined) {
      try {
        await this.ready(this.connectWaitMs);
      } catch (err) {
        throw new RillError('engine_unavailable', 'NATS is unreachable', {
          cause: this.connectError ?? err,
        });
      }
    }
    if (this.nc?.isClosed()) throw new RillError('engine_unavailable', 'NATS connection closed');
    if (!this.connected) {
      const back = await new Promise<boolean>((resolve) => {
        const done = (ok: boolean): void => {
          clearTimeout(timer);
          this.reconnectWaiters.delete(onBack);
          resolve(ok);
        };
        const onBack = (): void => done(true);
        const timer = setTimeout(() => done(false), this.connectWaitMs);
        this.reconnectWaiters.add(onBack);
      });
      if (!back) throw new RillError('engine_unavailable', 'NATS is unreachable');
    }
    return this.jsm as JetStreamManager;
  }

  /** Maps failures to `engine_unavailable`. */
  private async guard<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (isRillError(err)) throw err;
      throw new RillError('engine_unavailable', 'NATS did not complete the operation', {
        cause: err,
      });
    }
  }

  private streamName(topic: string): string {
    const enc = topic.replace(/~/g, '~~').replace(/\./g, '~d');
    // Stream names become file names: keep them short.
    if (enc.length <= 180) return `${this.prefix}_T_${enc}`;
    return `${this.prefix}_H_${createHash('sha256').update(topic).digest('hex').slice(0, 40)}`;
  }

  private subjectOf(topic: string): string {
    return `${this.prefix}.t.${topic}`;
  }

  private async ensureStream(cfg: {
    name: string;
    subjects: string[];
    description: string;
  }): Promise<StreamInfo> {
    const jsm = this.jsm as JetStreamManager;
    try {
      return await jsm.streams.info(cfg.name);
    } catch (err) {
      if (!isCode(err, JetStreamApiCodes.StreamNotFound)) throw err;
    }
    try {
      return await jsm.streams.add({
        ...cfg,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        num_replicas: this.replicas,
        duplicate_window: nanos(Math.max(1_000, this.windowMs)),
        max_msgs: cfg.name === this.registryStream ? 1_000_000 : -1,
      });
    } catch (err) {
      // Another node created it first, with its own epoch: theirs stands.
      return await jsm.streams.info(cfg.name).catch(() => {
        throw err;
      });
    }
  }

  /** Stream info of a topic, or null. */
  private async info(jsm: JetStreamManager, topic: string): Promise<StreamInfo | null> {
    try {
      return await jsm.streams.info(this.streamName(topic));
    } catch (err) {
      if (isCode(err, JetStreamApiCodes.StreamNotFound)) return null;
      throw err;
    }
  }

  /** The head as any node computes it: from the stream and the newest and oldest messages. */
  private async headState(
    jsm: JetStreamManager,
    topic: string,
  ): Promise<{ head: TopicHead; info: StreamInfo } | null> {
    const info = await this.info(jsm, topic);
    if (info === null) return null;
    const meta = parseDescription(info.config.description);
    if (meta === null) return null;
    const stream = info.config.name;
    const s = info.state;
    let lastSeq = 0;
    let lastTime = 0;
    let physFirst = 1;
    if (s.messages > 0) {
      const [last, first] = await Promise.all([
        getMsg(jsm, stream, s.last_seq),
        getMsg(jsm, stream, s.first_seq),
      ]);
      const lb = last === null ? null : parseBatch(last);
      if (lb !== null) {
        lastSeq = lb.first + lb.count - 1;
        lastTime = lb.time;
      }
      const fb = first === null ? null : parseBatch(first);
      if (fb !== null) physFirst = fb.first;
    }
    const head: TopicHead = {
      topic,
      epoch: meta.epoch,
      firstSeq: this.firstSeqOf(topic, physFirst, lastSeq, lastTime),
      lastSeq,
      created: meta.created,
      lastTime,
    };
    return { head, info };
  }

  /** The first retained seq: what is physically kept, minus what the limits already hide. */
  private firstSeqOf(topic: string, physFirst: number, lastSeq: number, lastTime: number): number {
    const r = this.retention.for(topic);
    let first = physFirst;
    if (r.maxEvents > 0) first = Math.max(first, lastSeq - r.maxEvents + 1);
    // The newest message is never purged (it anchors lastSeq); expired, it is only hidden.
    if (r.maxAgeMs > 0 && lastSeq > 0 && lastTime < this.now() - r.maxAgeMs) first = lastSeq + 1;
    return Math.min(first, lastSeq + 1);
  }

  /** Stream sequence of the message holding `seq` (binary search over the batches' first seqs). */
  private async locate(
    jsm: JetStreamManager,
    stream: string,
    info: StreamInfo,
    seq: number,
  ): Promise<number> {
    let lo = info.state.first_seq;
    let hi = info.state.last_seq;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      const msg = await getMsg(jsm, stream, mid);
      const b = msg === null ? null : parseBatch(msg);
      if (b === null || b.first <= seq) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  // ---- appends ----

  private emptyLog(topic: string): Log {
    return {
      topic,
      stream: this.streamName(topic),
      subject: this.subjectOf(topic),
      epoch: '',
      created: 0,
      lastMsg: 0,
      lastSeq: 0,
      lastTime: 0,
      physFirst: 1,
      firstTime: 0,
      keys: new Map(),
      queue: [],
      busy: false,
      valid: false,
    };
  }

  private drain(log: Log): void {
    if (log.busy) return;
    log.busy = true;
    const run = async (): Promise<void> => {
      while (log.queue.length > 0) {
        const group = log.queue.splice(0, GROUP_MAX);
        try {
          const results = await this.commit(log, group);
          group.forEach((p, i) => p.resolve(results[i]!));
        } catch (err) {
          log.valid = false;
          const e = isRillError(err)
            ? err
            : new RillError('engine_unavailable', 'NATS did not store the events', { cause: err });
          for (const p of group) p.reject(e);
        }
      }
    };
    void run().finally(() => {
      log.busy = false;
      if (log.queue.length > 0) this.drain(log);
    });
  }

  /** Loads (or creates) the topic's stream and this node's view of its tail and keys. */
  private async load(log: Log): Promise<void> {
    const jsm = await this.api();
    const now = this.now();
    const info = await this.ensureStream({
      name: log.stream,
      subjects: [log.subject],
      description: `rill:${newEpoch()}:${now}`,
    });
    const meta = parseDescription(info.config.description);
    if (meta === null) {
      throw new RillError('engine_unavailable', `Stream ${log.stream} is not a Rill log`);
    }
    log.epoch = meta.epoch;
    log.created = meta.created;
    log.keys.clear();
    log.lastSeq = 0;
    log.lastTime = 0;
    log.physFirst = 1;
    log.firstTime = 0;
    let last = info.state.last_seq;
    if (last === 0) {
      // Genesis: gives every append a last sequence to expect. Deduplicated, so racing nodes
      // store one.
      const ack = await (this.js as JetStreamClient).publish(log.subject, new Uint8Array(0), {
        msgID: `genesis:${meta.epoch}`,
        headers: batchHeaders(0, 0, 0),
      });
      last = ack.seq;
      await (this.js as JetStreamClient).publish(
        this.registrySubject,
        new TextEncoder().encode(log.topic),
        { msgID: `new:${log.stream}:${meta.epoch}` },
      );
    }
    log.lastMsg = last;
    if (info.state.messages > 0) {
      const [lastMsg, firstMsg] = await Promise.all([
        getMsg(jsm, log.stream, last),
        getMsg(jsm, log.stream, info.state.first_seq),
      ]);
      const lb = lastMsg === null ? null : parseBatch(lastMsg);
      if (lb !== null) {
        log.lastSeq = lb.first + lb.count - 1;
        log.lastTime = lb.time;
      }
      const fb = firstMsg === null ? null : parseBatch(firstMsg);
      if (fb !== null) {
        log.physFirst = fb.first;
        log.firstTime = fb.time;
      }
      // Keys of the window: only if its newest message is still inside it.
      if (lb !== null && lb.time + this.windowMs > now) await this.loadKeys(log, last, now);
    }
    log.valid = true;
  }

  /**
   * Reads the idempotency keys of the window with one ordered consumer from the window's start
   * (stored time; a clock behind the server's only makes it read more), up to `last`.
   */
  private async loadKeys(log: Log, last: number, now: number): Promise<void> {
    const since = Math.min(now, Date.now()) - this.windowMs - 1_000;
    const consumer = await (this.js as JetStreamClient).consumers.get(log.stream, {
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: new Date(Math.max(0, since)).toISOString(),
    });
    for (;;) {
      const page = await consumer.fetch({ max_messages: 1_000, expires: 2_000 });
      let seen = 0;
      let count = 0;
      for await (const m of page) {
        count++;
        seen = m.seq;
        const b = parseJsMsg(m.headers, m.data, m.seq);
        if (b !== null && b.time + this.windowMs > now) {
          for (let i = 0; i < b.events.length; i++) {
            const key = b.events[i]![1];
            if (key === null) continue;
            log.keys.delete(key);
            log.keys.set(key, { seq: b.first + i, time: b.time, exp: b.time + this.windowMs });
          }
        }
        if (m.seq >= last) break;
      }
      if (seen >= last || count === 0) return;
    }
  }

  /** Reads the messages another node appended since this node's view. */
  private async catchUp(log: Log): Promise<void> {
    const jsm = await this.api();
    const info = await jsm.streams.info(log.stream);
    for (let seq = log.lastMsg + 1; seq <= info.state.last_seq; seq++) {
      const msg = await getMsg(jsm, log.stream, seq);
      log.lastMsg = seq;
      const b = msg === null ? null : parseBatch(msg);
      if (b === null) continue;
      this.applyBatch(log, b);
    }
  }

  private applyBatch(log: Log, b: Batch): void {
    log.lastSeq = b.first + b.count - 1;
    log.lastTime = b.time;
    for (let i = 0; i < b.events.length; i++) {
      const key = b.events[i]![1];
      if (key !== null) {
        log.keys.delete(key);
        log.keys.set(key, { seq: b.first + i, time: b.time, exp: b.time + this.windowMs });
      }
    }
  }

  private async commit(log: Log, group: Pending[]): Promise<AppendResult[][]> {
    for (let attempt = 0; attempt < CONFLICT_RETRIES; attempt++) {
      await this.api();
      if (!log.valid) await this.load(log);
      const now = this.now();
      for (const [key, e] of log.keys) {
        if (e.exp > now) break;
        log.keys.delete(key);
      }
      const time = Math.max(now, log.lastTime);
      const results: AppendResult[][] = [];
      const fresh: [string | null, string | null, string][] = [];
      const seen = new Map<string, RillEvent>();
      let next = log.lastSeq + 1;
      for (const p of group) {
        const out: AppendResult[] = [];
        for (const input of p.inputs) {
          if (input.key !== undefined) {
            const mine = seen.get(input.key);
            if (mine !== undefined) {
              out.push({ event: mine, duplicate: true });
              continue;
            }
            const known = log.keys.get(input.key);
            if (known !== undefined && known.exp > now) {
              // The stored original's fields equal a retry's: the retry stands in for it.
              out.push({
                event: toEvent(log.topic, log.epoch, known.seq, known.time, [
                  input.type ?? null,
                  input.key,
                  input.data,
                ]),
                duplicate: true,
              });
              continue;
            }
          }
          const triple: [string | null, string | null, string] = [
            input.type ?? null,
            input.key ?? null,
            input.data,
          ];
          const event = toEvent(log.topic, log.epoch, next++, time, triple);
          fresh.push(triple);
          if (input.key !== undefined) seen.set(input.key, event);
          out.push({ event, duplicate: false });
        }
        results.push(out);
      }
      if (fresh.length === 0) return results;
      const first = log.lastSeq + 1;
      try {
        const ack = await (this.js as JetStreamClient).publish(
          log.subject,
          new TextEncoder().encode(JSON.stringify(fresh)),
          {
            msgID: randomBytes(12).toString('base64url'),
            expect: { lastSequence: log.lastMsg, streamName: log.stream },
            headers: batchHeaders(first, fresh.length, time),
          },
        );
        log.lastMsg = ack.seq;
        this.applyBatch(log, { msgSeq: ack.seq, first, count: fresh.length, time, events: fresh });
        await this.trim(log).catch(() => undefined);
        return results;
      } catch (err) {
        if (isCode(err, JetStreamApiCodes.StreamWrongLastSequence)) {
          await this.catchUp(log);
          continue;
        }
        if (
          isCode(err, JetStreamApiCodes.StreamNotFound) ||
          isNoStream(err) ||
          hasNoResponders(err)
        ) {
          // The stream was deleted: the next attempt creates a new log (a new epoch).
          log.valid = false;
          continue;
        }
        throw err;
      }
    }
    throw new RillError('engine_unavailable', 'Too much contention appending to this topic');
  }

  /** Purges whole messages before the retained range. */
  private async trim(log: Log): Promise<void> {
    const r = this.retention.for(log.topic);
    const now = this.now();
    const jsm = await this.api();
    let purgeBefore = 0;
    if (r.maxAgeMs > 0 && log.firstTime < now - r.maxAgeMs) {
      const info = await jsm.streams.info(log.stream);
      const oldest = now - r.maxAgeMs;
      // Messages are in time order: walk from the oldest to the first one young enough.
      for (let seq = info.state.first_seq; seq < log.lastMsg; seq++) {
        const msg = await getMsg(jsm, log.stream, seq);
        const b = msg === null ? null : parseBatch(msg);
        if (b === null) continue;
        if (b.time >= oldest) {
          // Nothing older to drop before it: remember so the next append need not look again.
          if (purgeBefore === 0) log.firstTime = b.time;
          break;
        }
        purgeBefore = seq + 1;
      }
    }
    if (r.maxEvents > 0) {
      const keep = Math.ceil(r.maxEvents * (1 + PURGE_SLACK));
      if (log.lastSeq - log.physFirst + 1 > keep) {
        const info = await jsm.streams.info(log.stream);
        const at = await this.locate(jsm, log.stream, info, log.lastSeq - r.maxEvents + 1);
        purgeBefore = Math.max(purgeBefore, at);
      }
    }
    if (purgeBefore <= 0) return;
    // The newest message stays: it carries lastSeq.
    purgeBefore = Math.min(purgeBefore, log.lastMsg);
    await jsm.streams.purge(log.stream, { seq: purgeBefore });
    const first = await getMsg(jsm, log.stream, purgeBefore);
    const b = first === null ? null : parseBatch(first);
    if (b !== null) {
      log.physFirst = b.first;
      log.firstTime = b.time;
    }
  }

  /** Age retention for topics without appends. */
  private sweep(): void {
    if (this.sweeping || this.closed || this.jsm === undefined) return;
    this.sweeping = true;
    const run = async (): Promise<void> => {
      for (const log of [...this.logs.values()]) {
        if (this.closed) return;
        if (log.valid && !log.busy && this.retention.for(log.topic).maxAgeMs > 0) {
          await this.trim(log);
        }
      }
    };
    const done = run()
      .catch(() => undefined)
      .finally(() => {
        this.sweeping = false;
        this.inflight.delete(done);
      });
    this.inflight.add(done);
  }

  // ---- live feed ----

  private startWatch(topic: string): void {
    const w: Watched = {
      topic,
      active: true,
      epoch: null,
      pos: 0,
      lastMsg: 0,
      messages: undefined,
      wake: undefined,
    };
    this.watched.set(topic, w);
    this.startRegistry();
    void this.watchLoop(w);
  }

  private stopWatch(topic: string): void {
    const w = this.watched.get(topic);
    if (w === undefined) return;
    w.active = false;
    this.watched.delete(topic);
    w.wake?.();
    void w.messages?.close().catch(() => undefined);
  }

  /**
   * One topic's live feed: an ordered consumer from just before the head, delivering each
   * event once and in order. When the stream disappears or is recreated, the loop starts over
   * on the new epoch.
   */
  private async watchLoop(w: Watched): Promise<void> {
    let first = true;
    while (w.active && !this.closed) {
      try {
        const jsm = await this.api();
        const info = await this.info(jsm, w.topic);
        const meta = info === null ? null : parseDescription(info.config.description);
        if (info === null || meta === null) {
          if (w.epoch !== null) {
            w.epoch = null;
            w.pos = 0;
            w.lastMsg = 0;
          }
          first = false;
          await this.sleepUntilCreated(w, 2_000);
          continue;
        }
        let start: number;
        if (w.epoch !== meta.epoch) {
          const fresh = w.epoch !== null || !first;
          w.epoch = meta.epoch;
          w.pos = 0;
          w.lastMsg = 0;
          // A log seen for the first time now: from just before its head. A new epoch: whole.
          start = fresh
            ? info.state.first_seq
            : Math.max(info.state.first_seq, info.state.last_seq - WATCH_BACKLOG);
        } else {
          start = Math.max(info.state.first_seq, w.lastMsg + 1);
        }
        first = false;
        const consumer = await (this.js as JetStreamClient).consumers.get(info.config.name, {
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: Math.max(1, start),
        });
        const messages = await consumer.consume({ expires: CONSUME_EXPIRES_MS });
        w.messages = messages;
        if (!w.active) {
          await messages.close();
          return;
        }
        void (async () => {
          for await (const s of messages.status()) {
            if (s.type === 'stream_not_found' || s.type === 'consumer_deleted') {
              void messages.close();
              return;
            }
          }
        })().catch(() => undefined);
        for await (const m of messages) {
          if (!w.active) break;
          w.lastMsg = m.seq;
          const b = parseJsMsg(m.headers, m.data, m.seq);
          if (b === null) continue;
          const events: RillEvent[] = [];
          for (let i = 0; i < b.count; i++) {
            const seq = b.first + i;
            if (seq <= w.pos) continue;
            events.push(toEvent(w.topic, meta.epoch, seq, b.time, b.events[i]!));
          }
          if (events.length > 0) {
            w.pos = events.at(-1)!.seq;
            this.feed.events(w.topic, events);
          }
        }
      } catch {
        // Unreachable or the stream went away: look again shortly.
        await this.sleepUntilCreated(w, 250);
      }
    }
  }

  private sleepUntilCreated(w: Watched, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        w.wake = undefined;
        resolve();
      }
      w.wake = done;
    });
  }

  /** The ordered consumer on the topic registry: topic creations, for watchTopics and watches. */
  private startRegistry(): void {
    if (this.registry !== undefined) return;
    const reg = { messages: undefined as ConsumerMessages | undefined, active: true };
    this.registry = reg;
    const loop = async (): Promise<void> => {
      let lastMsg = 0;
      while (reg.active && !this.closed) {
        try {
          const jsm = await this.api();
          if (lastMsg === 0) {
            const info = await jsm.streams.info(this.registryStream);
            lastMsg = Math.max(0, info.state.last_seq - WATCH_BACKLOG);
          }
          const consumer = await (this.js as JetStreamClient).consumers.get(this.registryStream, {
            deliver_policy: DeliverPolicy.StartSequence,
            opt_start_seq: lastMsg + 1,
          });
          const messages = await consumer.consume({ expires: CONSUME_EXPIRES_MS });
          reg.messages = messages;
          for await (const m of messages) {
            lastMsg = m.seq;
            const topic = m.string();
            this.feed.topicCreated(topic);
            this.watched.get(topic)?.wake?.();
          }
        } catch {
          await new Promise((r) => setTimeout(r, 250).unref());
        }
      }
    };
    void loop();
  }
}

function isCode(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** No stream listens on the subject (the client reports it as "JetStream not enabled"). */
function hasNoResponders(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof NoRespondersError) return true;
  }
  return false;
}

function isNoStream(err: unknown): boolean {
  return err instanceof Error && /no stream|stream not found/i.test(err.message);
}

async function getMsg(
  jsm: JetStreamManager,
  stream: string,
  seq: number,
): Promise<StoredMsg | null> {
  try {
    return await jsm.streams.getMessage(stream, { seq });
  } catch (err) {
    if (isCode(err, JetStreamApiCodes.NoMessageFound)) return null;
    throw err;
  }
}

function batchHeaders(first: number, count: number, time: number): MsgHdrs {
  const h = natsHeaders();
  h.set(H_SEQ, String(first));
  h.set(H_COUNT, String(count));
  h.set(H_TIME, String(time));
  return h;
}

function parseBatch(msg: StoredMsg): Batch | null {
  return parseJsMsg(msg.header, msg.data, msg.seq);
}

function parseJsMsg(h: MsgHdrs | undefined, data: Uint8Array, msgSeq: number): Batch | null {
  if (h === undefined) return null;
  const first = Number(h.get(H_SEQ));
  const count = Number(h.get(H_COUNT));
  const time = Number(h.get(H_TIME));
  if (!(first >= 1) || !(count >= 1)) return null;
  let events: Batch['events'];
  try {
    events = JSON.parse(new TextDecoder().decode(data)) as Batch['events'];
  } catch {
    return null;
  }
  if (!Array.isArray(events) || events.length !== count) return null;
  return { msgSeq, first, count, time, events };
}

function parseDescription(d: string | undefined): { epoch: string; created: number } | null {
  const m = d === undefined ? null : /^rill:([A-Za-z0-9]+):(\d+)$/.exec(d);
  return m === null ? null : { epoch: m[1]!, created: Number(m[2]) };
}

/** A stored `[type, key, data]` triple as the event at `seq`. */
function toEvent(
  topic: string,
  epoch: string,
  seq: number,
  time: number,
  [type, key, data]: [string | null, string | null, string],
): RillEvent {
  const input: EventInput = { data };
  if (type !== null) input.type = type;
  if (key !== null) input.key = key;
  return makeEvent(topic, epoch, seq, time, input);
}
