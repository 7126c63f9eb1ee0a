import type { JetStreamManager, StreamInfo } from '@nats-io/jetstream';
import type { RillEvent } from '../../model/event.js';
import type { ReadResult, TopicHead } from '../engine.js';
import { applyOverride, type RetentionResolver } from '../retention.js';
import type { RetentionOverride } from '../engine.js';
import type { NatsClient } from './client.js';
import { parseBatch, parseDescription, toEvent } from './codec.js';
import { getMsg, type Streams } from './streams.js';

/**
 * The read side of the NATS engine: heads, reads and time lookups as any node computes them, from
 * the stream's state and its messages (no node keeps state another could miss).
 */
export class Reader {
  constructor(
    private readonly client: NatsClient,
    private readonly streams: Streams,
    private readonly retention: RetentionResolver,
    private readonly now: () => number,
  ) {}

  /** `Engine.read`, with `n` already clamped. */
  async read(topic: string, afterSeq: number, n: number): Promise<ReadResult> {
    const jsm = await this.client.api();
    const state = await this.client.guard(() => this.headState(jsm, topic));
    if (state === null) return { events: [], head: null };
    const { head, info } = state;
    const events: RillEvent[] = [];
    let from = Math.floor(afterSeq) + 1;
    if (!(from >= head.firstSeq)) from = head.firstSeq;
    if (n === 0 || from > head.lastSeq) return { events, head };
    const stream = info.config.name;
    let msgSeq = await this.client.guard(() => locate(jsm, stream, info, from));
    while (events.length < n && msgSeq <= info.state.last_seq) {
      const msg = await this.client.guard(() => getMsg(jsm, stream, msgSeq));
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
    const jsm = await this.client.api();
    const state = await this.client.guard(() => this.headState(jsm, topic));
    return state?.head ?? null;
  }

  async seqAtTime(topic: string, ms: number): Promise<number | null> {
    const jsm = await this.client.api();
    const state = await this.client.guard(() => this.headState(jsm, topic));
    if (state === null) return null;
    const { head, info } = state;
    if (head.firstSeq > head.lastSeq) return head.lastSeq + 1;
    // Binary search over messages: time never decreases within a topic.
    const stream = info.config.name;
    let lo = await this.client.guard(() => locate(jsm, stream, info, head.firstSeq));
    let hi = info.state.last_seq + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const msg = await this.client.guard(() => getMsg(jsm, stream, mid));
      const b = msg === null ? null : parseBatch(msg);
      if (b !== null && b.time < ms) lo = mid + 1;
      else hi = mid;
    }
    if (lo > info.state.last_seq) return head.lastSeq + 1;
    const msg = await this.client.guard(() => getMsg(jsm, stream, lo));
    const b = msg === null ? null : parseBatch(msg);
    return b === null ? head.lastSeq + 1 : Math.max(b.first, head.firstSeq);
  }

  /** Names of the topics with a stream, in name order, `after` a name, at most `limit`. */
  async topicNames(prefix: string, after: string | undefined, limit: number): Promise<string[]> {
    const jsm = await this.client.api();
    const subjectPrefix = this.streams.topicSubjectPrefix;
    // JetStream lists streams in no useful order: collect the names, sort, page here.
    const infos = await this.client.guard(async () => {
      const out: StreamInfo[] = [];
      for await (const si of jsm.streams.list(`${subjectPrefix}>`)) out.push(si);
      return out;
    });
    return infos
      .map((si) => si.config.subjects?.[0]?.slice(subjectPrefix.length) ?? '')
      .filter((t) => t !== '' && t.startsWith(prefix) && (after === undefined || t > after))
      .sort()
      .slice(0, limit);
  }

  /** The head as any node computes it: from the stream and the newest and oldest messages. */
  async headState(
    jsm: JetStreamManager,
    topic: string,
  ): Promise<{ head: TopicHead; info: StreamInfo } | null> {
    const info = await this.streams.info(jsm, topic);
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
      firstSeq: Math.min(
        Math.max(
          this.firstSeqOf(topic, physFirst, lastSeq, lastTime, meta.retention),
          meta.floor ?? 0,
        ),
        lastSeq + 1,
      ),
      lastSeq,
      created: meta.created,
      lastTime,
    };
    return { head, info };
  }

  /** The first retained seq: what is physically kept, minus what the limits already hide. */
  private firstSeqOf(
    topic: string,
    physFirst: number,
    lastSeq: number,
    lastTime: number,
    override: RetentionOverride | undefined,
  ): number {
    const r = applyOverride(this.retention.for(topic), override);
    let first = physFirst;
    if (r.maxEvents > 0) first = Math.max(first, lastSeq - r.maxEvents + 1);
    // The newest message is never purged (it anchors lastSeq); expired, it is only hidden.
    if (r.maxAgeMs > 0 && lastSeq > 0 && lastTime < this.now() - r.maxAgeMs) first = lastSeq + 1;
    return Math.min(first, lastSeq + 1);
  }
}

/** Stream sequence of the message holding `seq` (binary search over the batches' first seqs). */
export async function locate(
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

/**
 * Stream sequence of the first message whose batch offset is at least `target` (binary search:
 * offsets never decrease); the stream's last sequence + 1 when there is none. A message that is
 * not a batch (the genesis) counts as offset 0.
 */
export async function locateOffset(
  jsm: JetStreamManager,
  stream: string,
  info: StreamInfo,
  target: number,
): Promise<number> {
  let lo = info.state.first_seq;
  let hi = info.state.last_seq + 1;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const msg = await getMsg(jsm, stream, mid);
    const b = msg === null ? null : parseBatch(msg);
    if ((b?.offset ?? 0) < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
