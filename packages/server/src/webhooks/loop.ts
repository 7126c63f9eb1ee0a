import { createHash, randomUUID } from 'node:crypto';
import type { WebhookConfig } from '../config.js';
import type { Coordination, Engine, TopicHead } from '../engine/engine.js';
import type { Position } from '../model/cursor.js';
import { isEpoch } from '../model/cursor.js';
import { eventJson, type EventInput, type RillEvent } from '../model/event.js';
import { signatureHeader } from '../model/signature.js';
import { compilePattern, patternPrefix } from '../model/topic.js';
import type { WebhookMetrics } from './metrics.js';
import { post, type PostResult } from './post.js';

/** Where the webhooks log. */
export interface WebhookLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What a delivery loop needs from the leadership that runs it. */
export interface Leadership {
  /** The fencing token of the lease, for the state writes. */
  readonly fence: number;
  /** Until when (ms since the epoch) this node may act as the leader. */
  readonly validUntil: number;
  /** A state write was refused: another node holds the lease now. */
  deposed(): void;
}

/** The type of the events a dead-letter topic gets (under `rill.`: no publisher can send it). */
export const DEAD_LETTER_TYPE = 'rill.webhook.failed';

/** How often the loop lists its topics again (creations it missed, heads it did not hear of), ms. */
const RESCAN_MS = 5_000;
/** Most topics listed per page. */
const LIST_PAGE = 1000;
/** Most dead-letter events per append. */
const DEAD_LETTER_CHUNK = 500;

/** The state keys of one webhook. */
export function stateKeys(name: string): {
  lease: string;
  since: string;
  topic: (t: string) => string;
} {
  return {
    lease: `webhook:${name}`,
    since: `webhook:${name}:since`,
    topic: (t) => `webhook:${name}:t:${t}`,
  };
}

interface Batch {
  events: RillEvent[];
  parts: string[];
  bytes: number;
  /** Per topic, the position after the batch (its last event). */
  ends: Map<string, Position>;
}

type Known = Pick<TopicHead, 'epoch' | 'firstSeq' | 'lastSeq'>;

/**
 * One webhook's delivery loop, run by the node holding its lease (docs/webhooks.md): it follows
 * the topics its patterns match, POSTs batches of their stored events in seq order per topic with
 * one batch in flight, retries with exponential backoff and jitter, moves a batch that failed
 * `maxAttempts` times to the dead-letter topic, and stores each topic's position (epoch and last
 * seq delivered) under the lease's fencing token once the batch is done. A restarted loop starts
 * from the stored positions, so it delivers at least once and skips nothing retention kept.
 */
export class DeliveryLoop {
  private readonly keys: ReturnType<typeof stateKeys>;
  private readonly matchers: ((t: string) => boolean)[];
  /** Positions delivered (stored, or being stored). */
  private readonly positions = new Map<string, Position>();
  /** What the loop knows of each topic's log. */
  private readonly heads = new Map<string, Known | null>();
  private readonly unwatch = new Map<string, () => void>();
  private stopTopics: (() => void) | undefined;
  private readonly abort = new AbortController();
  private wakeUp: (() => void) | null = null;
  private stopped = false;
  private since = 0;
  private rotate = 0;
  private firstPendingAt = 0;
  private lastScan = 0;
  /** Resolves when {@link run} returned. */
  done: Promise<void> = Promise.resolve();

  constructor(
    private readonly spec: WebhookConfig,
    private readonly engine: Engine & Coordination,
    private readonly lead: Leadership,
    private readonly secrets: () => string[],
    private readonly metrics: WebhookMetrics,
    private readonly log: WebhookLog,
    /** When this node's webhooks were set up, ms: the start of a webhook never started before. */
    private readonly startedAt: number,
  ) {
    this.keys = stateKeys(spec.name);
    this.matchers = spec.topics.map(compilePattern);
  }

  start(): void {
    this.done = this.run();
  }

  /** Stops at once: the request in flight is aborted, nothing more is stored. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.wake();
    this.stopTopics?.();
    for (const u of this.unwatch.values()) u();
    this.unwatch.clear();
    await this.done;
  }

  private get leading(): boolean {
    return !this.stopped && Date.now() < this.lead.validUntil;
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  /** Waits `ms`, or less when stopped or, if `wakeable`, woken (new events). */
  private pause(ms: number, wakeable = true): Promise<void> {
    if (this.stopped) return Promise.resolve();
    const signal = this.abort.signal;
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal.addEventListener('abort', done, { once: true });
      if (wakeable) this.wakeUp = done;
    });
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (this.since === 0) await this.init();
        if (this.stopped) break;
        await this.step();
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        // The engine unreachable, most likely: nothing was lost, try again a little later.
        failures++;
        this.log.warn(
          { webhook: this.spec.name, err: (err as Error).message },
          'webhook loop: engine operation failed; retrying',
        );
        await this.pause(this.backoff(failures), false);
      }
    }
  }

  /** The start time (stored once) and the topics already there. */
  private async init(): Promise<void> {
    const stored = await this.engine.getState(this.keys.since);
    let since = stored === null ? NaN : Number(stored);
    if (!Number.isSafeInteger(since) || since <= 0) {
      // The first start of this webhook anywhere: it gets the events stored since this node
      // started, so none accepted by this node is older.
      since = this.startedAt;
      if (!(await this.engine.putState(this.keys.since, String(since), this.lead.fence))) {
        this.deposed();
        return;
      }
    }
    this.since = since;
    this.stopTopics ??= this.engine.watchTopics((t) => {
      if (this.matches(t)) void this.follow(t).catch(() => undefined);
    });
    await this.scan();
  }

  private matches(topic: string): boolean {
    return this.matchers.some((m) => m(topic));
  }

  /** Lists every topic the patterns match: follows new ones, refreshes the heads of the rest. */
  private async scan(): Promise<void> {
    this.lastScan = Date.now();
    for (const pattern of new Set(this.spec.topics.map(patternPrefix))) {
      let after: string | undefined;
      for (;;) {
        const page = await this.engine.listTopics({
          prefix: pattern,
          limit: LIST_PAGE,
          ...(after === undefined ? {} : { after }),
        });
        for (const head of page) {
          if (!this.matches(head.topic)) continue;
          if (this.heads.has(head.topic)) this.heads.set(head.topic, head);
          else await this.follow(head.topic);
        }
        if (page.length < LIST_PAGE || this.stopped) break;
        after = page[page.length - 1]!.topic;
      }
    }
  }

  /** Starts following a topic: its watch (to wake the loop) and its position. */
  private async follow(topic: string): Promise<void> {
    if (this.unwatch.has(topic) || this.stopped) return;
    this.unwatch.set(
      topic,
      this.engine.watch(
        topic,
        (events) => {
          const last = events[events.length - 1];
          if (last === undefined) return;
          const h = this.heads.get(topic);
          if (!h || h.epoch !== last.epoch) {
            this.heads.set(topic, { epoch: last.epoch, firstSeq: 1, lastSeq: last.seq });
          } else if (last.seq > h.lastSeq) h.lastSeq = last.seq;
          this.wake();
        },
        (signal) => {
          if (signal.kind !== 'deleted') return;
          this.heads.set(topic, null);
          this.wake();
        },
      ),
    );
    const head = await this.engine.head(topic);
    if (!this.positions.has(topic)) {
      const pos = await this.storedPosition(topic, head);
      if (pos) this.positions.set(topic, pos);
    }
    if (!this.heads.get(topic)) this.heads.set(topic, head);
    this.wake();
  }

  /**
   * The topic's stored position; for a topic the webhook never delivered from, the position before
   * its first event at or after the webhook's start.
   */
  private async storedPosition(topic: string, head: TopicHead | null): Promise<Position | null> {
    const text = await this.engine.getState(this.keys.topic(topic));
    if (text !== null) {
      try {
        const p = JSON.parse(text) as Position;
        if (typeof p.epoch === 'string' && isEpoch(p.epoch) && Number.isSafeInteger(p.seq)) {
          return { epoch: p.epoch, seq: p.seq };
        }
      } catch {
        // fall through: an unreadable record counts as none
      }
    }
    if (head === null) return null;
    const first = (await this.engine.seqAtTime(topic, this.since)) ?? head.firstSeq;
    return { epoch: head.epoch, seq: first - 1 };
  }

  /** Events stored and not delivered, as far as the loop knows. */
  private lag(): number {
    let n = 0;
    for (const [topic, h] of this.heads) {
      if (!h) continue;
      const p = this.positions.get(topic);
      if (!p || p.epoch !== h.epoch) n += Math.max(0, h.lastSeq - (h.firstSeq - 1));
      else n += Math.max(0, h.lastSeq - p.seq);
    }
    return n;
  }

  private async step(): Promise<void> {
    if (Date.now() - this.lastScan >= RESCAN_MS) await this.scan();
    const lag = this.lag();
    this.metrics.lag(this.spec.name, lag);
    if (lag === 0) {
      this.firstPendingAt = 0;
      await this.pause(RESCAN_MS - (Date.now() - this.lastScan));
      return;
    }
    const now = Date.now();
    if (this.firstPendingAt === 0) this.firstPendingAt = now;
    const { maxEvents, maxWait } = this.spec.batch;
    if (lag < maxEvents && now < this.firstPendingAt + maxWait) {
      await this.pause(this.firstPendingAt + maxWait - now);
      return;
    }
    const batch = await this.collect();
    if (batch.events.length === 0 || this.stopped) return;
    this.firstPendingAt = 0;
    const outcome = await this.deliver(batch);
    if (outcome === 'stopped') return;
    await this.commit(batch);
  }

  /** The next batch: up to `maxEvents` and `maxBytes`, topics taken in turn, seq order in each. */
  private async collect(): Promise<Batch> {
    const { maxEvents, maxBytes } = this.spec.batch;
    const batch: Batch = { events: [], parts: [], bytes: 0, ends: new Map() };
    const topics = [...this.heads.keys()];
    const start = this.rotate++ % Math.max(1, topics.length);
    for (let i = 0; i < topics.length && !this.stopped; i++) {
      const topic = topics[(start + i) % topics.length]!;
      const known = this.heads.get(topic);
      let pos = this.positions.get(topic);
      if (!known || (pos && pos.epoch === known.epoch && pos.seq >= known.lastSeq)) continue;
      const room = maxEvents - batch.events.length;
      const after = pos && pos.epoch === known.epoch ? pos.seq : 0;
      let r = await this.engine.read(topic, after, room);
      if (r.head === null) {
        this.heads.set(topic, null);
        continue;
      }
      if (!pos || r.head.epoch !== pos.epoch) {
        // A new log (the topic was deleted and written again): all of it is new to the webhook.
        if (pos) {
          this.log.info(
            { webhook: this.spec.name, topic, from: pos.epoch, to: r.head.epoch },
            'webhook: topic has a new epoch; delivering it from its start',
          );
        }
        pos = { epoch: r.head.epoch, seq: 0 };
        this.positions.set(topic, pos);
        if (after !== 0) {
          r = await this.engine.read(topic, 0, room);
          if (r.head === null || r.head.epoch !== pos.epoch) continue;
        }
      }
      this.heads.set(topic, r.head);
      const first = r.events[0]?.seq ?? r.head.lastSeq + 1;
      if (first > pos.seq + 1) {
        // Retention dropped events before they were delivered: say so, go on from what is left.
        const lost = first - pos.seq - 1;
        this.metrics.skipped(this.spec.name, lost);
        this.log.warn(
          { webhook: this.spec.name, topic, epoch: pos.epoch, after: pos.seq, lost },
          'webhook: events dropped by retention before delivery',
        );
        pos = { epoch: pos.epoch, seq: first - 1 };
        this.positions.set(topic, pos);
      }
      let full = false;
      for (const e of r.events) {
        if (e.seq <= pos.seq) continue;
        const json = eventJson(e);
        const size = Buffer.byteLength(json) + 1;
        if (batch.events.length > 0 && batch.bytes + size > maxBytes) {
          full = true;
          break;
        }
        batch.events.push(e);
        batch.parts.push(json);
        batch.bytes += size;
        batch.ends.set(topic, { epoch: e.epoch, seq: e.seq });
      }
      if (full || batch.events.length >= maxEvents) break;
    }
    return batch;
  }

  private backoff(attempt: number): number {
    const { initial, max } = this.spec.retry;
    const ceiling = Math.min(max, initial * 2 ** Math.min(attempt - 1, 30));
    // Full jitter over the upper half: nodes and webhooks failing together spread out.
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Sends the batch until it is answered with a 2xx, dead-lettered, or the loop stops. */
  private async deliver(batch: Batch): Promise<'delivered' | 'dead_lettered' | 'stopped'> {
    const { name } = this.spec;
    const delivery = randomUUID();
    const body = `{"webhook":${JSON.stringify(name)},"delivery":"${delivery}","events":[${batch.parts.join(',')}]}`;
    let secrets: string[] = this.secrets();
    for (let attempt = 1; ; attempt++) {
      if (!this.leading) return 'stopped';
      // A request never outlives the lease: past it another node may be delivering.
      const timeout = Math.min(this.spec.timeout, this.lead.validUntil - Date.now());
      const headers = {
        'content-type': 'application/json',
        'user-agent': 'rill-webhook',
        'rill-webhook': name,
        'rill-delivery': delivery,
        'rill-attempt': String(attempt),
        'rill-signature': signatureHeader(secrets, body),
      };
      const t0 = performance.now();
      const res = await post(this.spec.url, body, headers, timeout, this.abort.signal);
      if (this.stopped) return 'stopped';
      this.metrics.attempt(name, res.result, (performance.now() - t0) / 1000);
      if (res.result === 'success') {
        this.metrics.done(name, 'delivered', batch.events.length);
        return 'delivered';
      }
      this.log.warn(
        { webhook: name, delivery, attempt, events: batch.events.length, error: res.error },
        'webhook delivery failed',
      );
      if (this.spec.deadLetterTopic !== undefined && attempt >= this.spec.maxAttempts) {
        if (!(await this.deadLetter(batch, delivery, attempt, res))) return 'stopped';
        this.metrics.done(name, 'dead_lettered', batch.events.length);
        return 'dead_lettered';
      }
      await this.pause(this.backoff(attempt), false);
      secrets = this.secrets();
    }
  }

  /**
   * Appends one event per event of the batch to the dead-letter topic: the original event and the
   * failure. Keyed, so appending again after a failure within the idempotency window stores each
   * once. False when the loop stopped before they were stored.
   */
  private async deadLetter(
    batch: Batch,
    delivery: string,
    attempts: number,
    res: PostResult,
  ): Promise<boolean> {
    const topic = this.spec.deadLetterTopic!;
    const failure = JSON.stringify({
      ...(res.status === undefined ? {} : { status: res.status }),
      error: res.error ?? res.result,
      result: res.result,
    });
    const inputs: EventInput[] = batch.events.map((e, i) => ({
      type: DEAD_LETTER_TYPE,
      key: `wh-${createHash('sha256').update(`${this.spec.name}\n${e.topic}:${e.epoch}:${e.seq}`).digest('hex')}`,
      data: `{"webhook":${JSON.stringify(this.spec.name)},"delivery":"${delivery}","attempts":${attempts},"failure":${failure},"event":${batch.parts[i]}}`,
    }));
    for (let tries = 1; ; tries++) {
      if (!this.leading) return false;
      try {
        for (let i = 0; i < inputs.length; i += DEAD_LETTER_CHUNK) {
          await this.engine.append(topic, inputs.slice(i, i + DEAD_LETTER_CHUNK));
        }
        this.log.error(
          {
            webhook: this.spec.name,
            delivery,
            attempts,
            events: inputs.length,
            deadLetterTopic: topic,
          },
          'webhook batch dead-lettered',
        );
        return true;
      } catch (err) {
        this.log.warn(
          { webhook: this.spec.name, deadLetterTopic: topic, err: (err as Error).message },
          'webhook: could not store the dead-letter events; retrying',
        );
        await this.pause(this.backoff(tries), false);
      }
    }
  }

  /** Stores the positions after the batch, under the lease's fencing token. */
  private async commit(batch: Batch): Promise<void> {
    for (const [topic, pos] of batch.ends) {
      const cur = this.positions.get(topic);
      if (!cur || cur.epoch !== pos.epoch || cur.seq < pos.seq) this.positions.set(topic, pos);
    }
    for (let tries = 1; !this.stopped; tries++) {
      try {
        const written = await Promise.all(
          [...batch.ends].map(([topic, pos]) =>
            this.engine.putState(this.keys.topic(topic), JSON.stringify(pos), this.lead.fence),
          ),
        );
        if (written.some((ok) => !ok)) this.deposed();
        return;
      } catch (err) {
        this.log.warn(
          { webhook: this.spec.name, err: (err as Error).message },
          'webhook: could not store the positions; retrying',
        );
        await this.pause(this.backoff(tries), false);
      }
    }
  }

  private deposed(): void {
    this.log.warn({ webhook: this.spec.name }, 'webhook: another node took the lease; stopping');
    this.stopped = true;
    this.lead.deposed();
  }
}
