import { randomBytes } from 'node:crypto';
import { DeliverPolicy, JetStreamApiCodes } from '@nats-io/jetstream';
import type { EventInput, RillEvent } from '../../model/event.js';
import { RillError, isRillError } from '../../model/errors.js';
import type { AppendResult } from '../engine.js';
import { storageFull, type StorageLog } from '../common.js';
import type { Lifecycle } from '../lifecycle.js';
import { applyOverride, newEpoch, type RetentionResolver } from '../retention.js';
import type { NatsClient } from './client.js';
import {
  batchBytes,
  batchHeaders,
  describeLog,
  parseBatch,
  parseDescription,
  parseJsMsg,
  toEvent,
  toTriple,
  type Batch,
  type LogSettings,
  type Triple,
} from './codec.js';
import { locate, locateOffset } from './read.js';
import {
  getMsg,
  hasNoResponders,
  isCode,
  isNoStream,
  refusedForSpace,
  type Streams,
} from './streams.js';

/** Most appends of one topic merged into one JetStream message (group commit). */
const GROUP_MAX = 256;
/** Times an append retries after losing the optimistic-concurrency race to another node. */
const CONFLICT_RETRIES = 50;
/** Count retention purges once this share over the limit is physically kept (hysteresis). */
const PURGE_SLACK = 0.1;

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
  /** Byte offsets (see `Batch.offset`): after the newest event, before the first message kept. */
  lastOff: number;
  firstOff: number;
  keys: Map<string, KeyEntry>;
  /** The stream description's settings as this node last read them. */
  settings: LogSettings;
  queue: Pending[];
  busy: boolean;
  valid: boolean;
}

/**
 * The write side of the NATS engine: this node's view of each topic's log, the append queue of
 * every topic (group commit), the publish under optimistic concurrency, and retention (purging
 * whole messages from the start, after appends and on a sweep for idle topics).
 */
export class Appender {
  private readonly logs = new Map<string, Log>();
  private sweeping = false;

  constructor(
    private readonly client: NatsClient,
    private readonly streams: Streams,
    private readonly retention: RetentionResolver,
    private readonly windowMs: number,
    private readonly now: () => number,
    private readonly life: Lifecycle,
    private readonly storage: StorageLog,
  ) {}

  /** Queues a validated, non-empty append; it resolves once its group is stored. */
  append(topic: string, inputs: readonly EventInput[]): Promise<AppendResult[]> {
    let log = this.logs.get(topic);
    if (log === undefined) {
      log = this.emptyLog(topic);
      this.logs.set(topic, log);
    }
    const done = new Promise<AppendResult[]>((resolve, reject) => {
      (log as Log).queue.push({ inputs, resolve, reject });
    });
    void this.life.track(done);
    this.drain(log);
    return done;
  }

  private emptyLog(topic: string): Log {
    return {
      topic,
      stream: this.streams.streamName(topic),
      subject: this.streams.subjectOf(topic),
      epoch: '',
      created: 0,
      lastMsg: 0,
      lastSeq: 0,
      lastTime: 0,
      physFirst: 1,
      firstTime: 0,
      lastOff: 0,
      firstOff: 0,
      keys: new Map(),
      settings: {},
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
          this.storage.stored();
          group.forEach((p, i) => p.resolve(results[i]!));
        } catch (err) {
          log.valid = false;
          const full = isRillError(err) ? undefined : refusedForSpace(err);
          const e = isRillError(err)
            ? err
            : full !== undefined
              ? storageFull('nats', full, err)
              : new RillError('engine_unavailable', 'NATS did not store the events', {
                  cause: err,
                });
          if (full !== undefined) this.storage.refused(e);
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
    const jsm = await this.client.api();
    const now = this.now();
    const info = await this.streams.ensureStream(jsm, {
      name: log.stream,
      subjects: [log.subject],
      description: describeLog(newEpoch(), now),
    });
    const meta = parseDescription(info.config.description);
    if (meta === null) {
      throw new RillError('engine_unavailable', `Stream ${log.stream} is not a Rill log`);
    }
    log.epoch = meta.epoch;
    log.created = meta.created;
    log.settings = settingsOf(meta);
    log.keys.clear();
    log.lastSeq = 0;
    log.lastTime = 0;
    log.physFirst = 1;
    log.firstTime = 0;
    log.lastOff = 0;
    log.firstOff = 0;
    let last = info.state.last_seq;
    if (last === 0) {
      // Genesis: gives every append a last sequence to expect. Deduplicated, so racing nodes
      // store one.
      const ack = await this.client.js.publish(log.subject, new Uint8Array(0), {
        msgID: `genesis:${meta.epoch}`,
        headers: batchHeaders(0, 0, 0),
      });
      last = ack.seq;
      await this.client.js.publish(
        this.streams.registrySubject,
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
        log.lastOff = lb.offset + batchBytes(lb.events);
      }
      const fb = firstMsg === null ? null : parseBatch(firstMsg);
      if (fb !== null) {
        log.physFirst = fb.first;
        log.firstTime = fb.time;
        log.firstOff = fb.offset;
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
    const consumer = await this.client.js.consumers.get(log.stream, {
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
    const jsm = await this.client.api();
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
    log.lastOff = b.offset + batchBytes(b.events);
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
      await this.client.api();
      if (!log.valid) await this.load(log);
      const now = this.now();
      for (const [key, e] of log.keys) {
        if (e.exp > now) break;
        log.keys.delete(key);
      }
      const time = Math.max(now, log.lastTime);
      const results: AppendResult[][] = [];
      const fresh: Triple[] = [];
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
                event: toEvent(log.topic, log.epoch, known.seq, known.time, toTriple(input)),
                duplicate: true,
              });
              continue;
            }
          }
          const triple = toTriple(input);
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
        const ack = await this.client.js.publish(
          log.subject,
          new TextEncoder().encode(JSON.stringify(fresh)),
          {
            msgID: randomBytes(12).toString('base64url'),
            expect: { lastSequence: log.lastMsg, streamName: log.stream },
            headers: batchHeaders(first, fresh.length, time, log.lastOff),
          },
        );
        log.lastMsg = ack.seq;
        this.applyBatch(log, {
          msgSeq: ack.seq,
          first,
          count: fresh.length,
          time,
          offset: log.lastOff,
          events: fresh,
        });
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

  /**
   * Makes the next append reload the topic's view (its stream was deleted or its settings
   * changed by this node).
   */
  invalidate(topic: string): void {
    const log = this.logs.get(topic);
    if (log !== undefined) log.valid = false;
  }

  /**
   * Purges whole messages before the retained range. The limits are this node's view of the
   * topic's override; before purging anything they are read again from the stream, so an
   * override another node loosened meanwhile never loses events it keeps.
   */
  private async trim(log: Log, fresh = false): Promise<void> {
    const r = applyOverride(this.retention.for(log.topic), log.settings.retention);
    const now = this.now();
    const jsm = await this.client.api();
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
        const at = await locate(jsm, log.stream, info, log.lastSeq - r.maxEvents + 1);
        purgeBefore = Math.max(purgeBefore, at);
      }
    }
    // Bytes: whole messages, once the kept ones hold a share over the limit (hysteresis, as above).
    if (r.maxBytes > 0 && log.lastOff - log.firstOff > r.maxBytes * (1 + PURGE_SLACK)) {
      const info = await jsm.streams.info(log.stream);
      const at = await locateOffset(jsm, log.stream, info, log.lastOff - r.maxBytes);
      purgeBefore = Math.max(purgeBefore, at);
    }
    if (purgeBefore <= 0) return;
    if (!fresh) {
      const info = await jsm.streams.info(log.stream);
      const meta = parseDescription(info.config.description);
      if (meta === null || meta.epoch !== log.epoch) return;
      const settings = settingsOf(meta);
      if (JSON.stringify(settings.retention) !== JSON.stringify(log.settings.retention)) {
        log.settings = settings;
        return this.trim(log, true);
      }
    }
    // The newest message stays: it carries lastSeq.
    purgeBefore = Math.min(purgeBefore, log.lastMsg);
    await jsm.streams.purge(log.stream, { seq: purgeBefore });
    const first = await getMsg(jsm, log.stream, purgeBefore);
    const b = first === null ? null : parseBatch(first);
    if (b !== null) {
      log.physFirst = b.first;
      log.firstTime = b.time;
      log.firstOff = b.offset;
    }
  }

  /** Age retention for topics without appends. */
  sweep(): void {
    if (this.sweeping || this.life.closed || this.client.manager === undefined) return;
    this.sweeping = true;
    const run = async (): Promise<void> => {
      for (const log of [...this.logs.values()]) {
        if (this.life.closed) return;
        const r = applyOverride(this.retention.for(log.topic), log.settings.retention);
        if (log.valid && !log.busy && r.maxAgeMs > 0) {
          await this.trim(log);
        }
      }
    };
    void this.life.track(
      run()
        .catch(() => undefined)
        .finally(() => {
          this.sweeping = false;
        }),
    );
  }
}

/** The settings part of a parsed description. */
function settingsOf(meta: LogSettings): LogSettings {
  const out: LogSettings = {};
  if (meta.floor !== undefined) out.floor = meta.floor;
  if (meta.retention !== undefined) out.retention = meta.retention;
  return out;
}
