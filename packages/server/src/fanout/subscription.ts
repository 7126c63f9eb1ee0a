import type { Cursor } from '../model/cursor.js';
import { encodePosition } from '../model/cursor.js';
import type { Engine } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import type { Meters } from '../model/meters.js';
import { compilePattern } from '../model/topic.js';
import type { Channel, ChannelMember } from './channel.js';
import type { Flushable } from './flush-scheduler.js';
import { WATERMARK_MARGIN_MS, type StartSpec } from './resume.js';

export type { StartSpec } from './resume.js';
import type { ResetNotice, Sink } from './sink.js';

/** First delay before a catch-up that failed on an unreachable engine is retried, ms. */
const CATCH_UP_RETRY_MS = 100;
/** Longest delay between catch-up retries while the engine stays unreachable, ms. */
const CATCH_UP_RETRY_MAX_MS = 2_000;

/** A subscription's bounds; see `limits` in config.ts for their meaning and defaults. */
export interface SubscriptionLimits {
  maxSubscriberBufferBytes: number;
  replayBatch: number;
  maxTopicsPerSubscription: number;
  maxCursorTopics: number;
}

/**
 * What a subscription needs from whoever runs it (the hub): the log, the bounds, the channels by
 * topic, and the flush pacing. Narrow on purpose, so a subscription can be driven without a hub.
 */
export interface SubscriptionHost {
  readonly engine: Engine;
  readonly limits: SubscriptionLimits;
  /** Queues a subscription for the next coalesced flush (see FlushScheduler). */
  readonly flushes: { markDirty(sub: Flushable): void };
  /** The channel of `topic`, opened if there is none yet. */
  openChannel(topic: string): Channel;
  /** The subscription no longer uses `channel` (it has removed itself from it). */
  releaseChannel(channel: Channel): void;
  /** The subscription ended itself (an error was sent); the host forgets it. */
  ended(sub: Subscription): void;
  /** Where a subscription says, at debug level, that it fell behind (the `fanout` logger). */
  readonly log?: FanoutLog;
  /** The server's counters (resets, catch-up durations), when it keeps them. */
  readonly meters?: Meters | null;
}

/** What the fan-out logs through (a pino logger). */
export interface FanoutLog {
  isLevelEnabled(level: string): boolean;
  debug(obj: object, msg: string): void;
}

/**
 * One subscriber's position in one topic, and whether it is on the live path.
 *
 * Invariant: every event with seq <= `pos` (in `epoch`) has been handed to the sink, in order,
 * and none after it. On the live path (`live`), the channel hands it the next event directly; off
 * it, the subscription reads the log after `pos` until it reaches the channel's `lastSeq`, then
 * rejoins synchronously — no await between the check and the switch, so no event can slip between
 * (the pitfall of Mercure's bolt.go and centrifuge's recovery sync).
 */
export class TopicState implements ChannelMember {
  pos = 0;
  epoch: string | null = null;
  lastTime = 0;
  live = false;
  resolved = false;
  /** Monotonic counter of the last advance, to drop the stalest topics from a long cursor. */
  touched = 0;

  constructor(
    readonly topic: string,
    readonly sub: Subscription,
    readonly channel: Channel,
    public start: StartSpec | { kind: 'cursor'; epoch: string; seq: number },
  ) {}

  deliver(ev: RillEvent): void {
    this.sub.deliver(this, ev);
  }

  fallBehind(): void {
    this.sub.fallBehind(this);
  }

  ephemeral(ev: EphemeralEvent): void {
    this.sub.deliverEphemeral(ev);
  }

  deleted(epoch: string): void {
    this.sub.topicDeleted(this, epoch);
  }

  /** Only a topic not started in any log (a `now` start on a topic that did not exist) takes it. */
  adoptEpoch(epoch: string): boolean {
    if (this.epoch !== null || this.pos !== 0) return false;
    this.epoch = epoch;
    return true;
  }
}

export interface SubscribeOptions {
  /** The connection's id (its `reqId` in the log); `""` when it has none. */
  id?: string;
  /** Topic names and patterns. */
  patterns: string[];
  /** Start for topics the cursor does not list. */
  start: StartSpec;
  cursor?: Cursor;
  /** Most events one replay step reads; defaults to the hub's `replayBatch`. */
  replayBatch?: number;
  /** Called each time every topic has caught up and is on the live path. */
  onCaughtUp?: () => void;
  /**
   * Called when reading the log failed because the engine is unreachable (the subscription keeps
   * retrying by itself). A long-poll answers 503 instead of an empty page.
   */
  onEngineError?: (err: RillError) => void;
}

let touchCounter = 0;

/**
 * A subscription: one connection's set of topics, its outbound queue (coalesced per tick, bounded
 * by `maxSubscriberBufferBytes`), and its live ⇄ catch-up state machine.
 *
 * Events flow one way: channel → subscription (`deliver`, queued) → flush pacing → `flush` →
 * sink. The sink only receives calls; when it takes nothing more (`write` returned false, a
 * long-poll page) the subscription stops, and its owner ends it.
 */
export class Subscription implements Flushable {
  readonly states = new Map<string, TopicState>();
  /** Single plain topic: frames carry the event's own id and are shared between subscribers. */
  readonly single: boolean;
  readonly isPatternSub: boolean;
  private readonly matchers: ((t: string) => boolean)[];
  private pending: string[] = [];
  private pendingBytes = 0;
  /** Events among `pending` (reset notices are not events). */
  private pendingEvents = 0;
  private catchingUp = false;
  /** Delay before the next catch-up attempt after the engine failed; 0 after a success. */
  private retryMs = 0;
  closed = false;
  /** False once any reset notice was sent: the resume was not exact. */
  exact = true;
  lastWrite = Date.now();
  /** When the subscription started: the floor of a `now` start no head has been read for. */
  readonly startedAt = Date.now();
  /** The connection's id, as its log lines carry it. */
  readonly id: string;
  /** Events handed to the sink; counted per flush, not per event. */
  sentEvents = 0;
  /** Times it fell behind its socket and left the live path (a slow consumer). */
  fellBehind = 0;
  /** Why the server ended it (an error code), when it did. */
  endReason: string | undefined;
  /** Bytes the sink has written for this subscription (its own count; see `Sink.bytesWritten`). */
  get sentBytes(): number {
    return this.sink.bytesWritten;
  }
  /** Reset notices among `pending`: frames that are not events. */
  private pendingNotices = 0;
  private readonly engine: Engine;
  private readonly limits: SubscriptionLimits;
  private readonly flushes: SubscriptionHost['flushes'];

  constructor(
    private readonly host: SubscriptionHost,
    readonly sink: Sink,
    readonly options: SubscribeOptions,
  ) {
    this.engine = host.engine;
    this.id = options.id ?? '';
    this.limits = host.limits;
    this.flushes = host.flushes;
    this.matchers = options.patterns.map(compilePattern);
    this.isPatternSub = options.patterns.some((p) => p.includes('*') || p.includes('>'));
    this.single = !this.isPatternSub && options.patterns.length === 1;
  }

  matches(topic: string): boolean {
    return this.matchers.some((m) => m(topic));
  }

  /** Adds a topic to this subscription, starting from the cursor or the start spec. */
  addTopic(topic: string, start?: StartSpec): void {
    if (this.closed || this.states.has(topic)) return;
    if (this.states.size >= this.limits.maxTopicsPerSubscription) {
      this.fail(
        new RillError(
          'too_many_topics',
          `Subscription would exceed ${this.limits.maxTopicsPerSubscription} topics`,
        ),
      );
      return;
    }
    const fromCursor = this.options.cursor?.positions.get(topic);
    let spec: TopicState['start'];
    if (fromCursor) spec = { kind: 'cursor', epoch: fromCursor.epoch, seq: fromCursor.seq };
    else if (start) spec = start;
    else if (this.options.cursor?.watermark !== undefined)
      spec = { kind: 'time', time: this.options.cursor.watermark };
    else spec = this.options.start;
    const ch = this.host.openChannel(topic);
    const st = new TopicState(topic, this, ch, spec);
    this.states.set(topic, st);
    ch.addSubscriber(st);
    this.kick();
  }

  // ---- live path (called through the channel for every event; keep it lean) ----

  /** Hands one event to the queue. The caller checked `ev.seq === st.pos + 1`. */
  deliver(st: TopicState, ev: RillEvent): void {
    st.pos = ev.seq;
    st.lastTime = ev.time;
    st.touched = ++touchCounter;
    // Only topics selected by `metrics.topics` have a meter: the rest pay a null check.
    const tm = st.channel.meter;
    if (tm !== null) tm.delivered++;
    const chunk = this.sink.frameEvent(ev, this.single ? null : this.cursorFor(ev.time));
    this.pendingEvents++;
    this.enqueue(chunk);
  }

  /**
   * Hands an ephemeral event to the queue, unless the socket is already as full as the bound
   * allows: it is dropped then, rather than push the subscription off the live path for an event
   * no log holds.
   */
  deliverEphemeral(ev: EphemeralEvent): void {
    if (this.closed || this.sink.frameEphemeral === undefined) return;
    const chunk = this.sink.frameEphemeral(ev);
    if (
      this.pendingBytes + chunk.length + this.sink.bufferedBytes() >
      this.limits.maxSubscriberBufferBytes
    ) {
      return;
    }
    this.enqueue(chunk);
  }

  /**
   * The topic's log was deleted: a `deleted` notice right away, at the position handed over so
   * far, so a cursor taken from it resumes into the next epoch with an `epoch` notice.
   */
  topicDeleted(st: TopicState, epoch: string): void {
    if (this.closed || !st.resolved || st.epoch !== epoch) return;
    this.notice(st, { topic: st.topic, reason: 'deleted', epoch, seq: st.pos });
  }

  /**
   * Queues a frame that is no log event (a presence notice): it carries no position, so the
   * cursor does not move, and it counts against the queue's bound like any frame.
   */
  notify(chunk: string): void {
    if (this.closed) return;
    this.pendingNotices++;
    this.enqueue(chunk);
  }

  /** Takes a topic off the live path; the catch-up loop will bring it back. */
  fallBehind(st: TopicState): void {
    if (st.live) {
      st.live = false;
      st.channel.leaveLive(st);
    }
    this.kick();
  }

  private enqueue(chunk: string): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pending.length === 1) this.flushes.markDirty(this);
    if (this.pendingBytes + this.sink.bufferedBytes() > this.limits.maxSubscriberBufferBytes) {
      this.overflow();
    }
  }

  /** Too much waiting for this socket: every topic leaves the live path and replays later. */
  private overflow(): void {
    let left = 0;
    for (const st of this.states.values()) {
      if (st.live) {
        st.live = false;
        st.channel.leaveLive(st);
        left++;
      }
    }
    if (left > 0) {
      this.fellBehind++;
      const log = this.host.log;
      if (log?.isLevelEnabled('debug')) {
        log.debug(
          { reqId: this.id, topics: left, buffered: this.sink.bufferedBytes() },
          'slow consumer: catching up from the log',
        );
      }
    }
    this.kick();
  }

  /**
   * One write per tick with everything queued since the last. A sink that takes nothing more
   * (`write` returned false) stops the subscription here, in the same tick, so its positions — and
   * so its cursor — cover exactly what the sink took; the owner ends it. Returns the frames
   * written.
   */
  flush(): number {
    const frames = this.pending.length;
    if (frames === 0 || this.closed) return 0;
    const pending = this.pending;
    this.sentEvents += frames - this.pendingNotices;
    const meter = this.sink.meter;
    if (meter) {
      // Counted per flush, not per event (docs/observability.md); the sink counts the bytes.
      meter.events += this.pendingEvents;
      meter.writes++;
    }
    this.pending = [];
    this.pendingBytes = 0;
    this.pendingNotices = 0;
    this.pendingEvents = 0;
    this.lastWrite = Date.now();
    const sink = this.sink;
    const taken = sink.write(frames === 1 ? pending[0]! : pending.join(''));
    if (taken === false) this.detach();
    return frames;
  }

  /** Sends the sink a heartbeat when nothing was written since `idleSince` (the hub's sweep). */
  heartbeatIfIdle(idleSince: number, now: number): void {
    if (this.lastWrite > idleSince) return;
    this.lastWrite = now;
    this.sink.heartbeat();
  }

  // ---- catch-up path ----

  /** True while some topic is off the live path (catching up from the log). */
  get behind(): boolean {
    if (this.catchingUp) return true;
    for (const st of this.states.values()) if (!st.live) return true;
    return false;
  }

  /**
   * Events this subscription is behind its channels' last seq over the topics off the live path,
   * and the bytes it has waiting (queue and socket buffer): for the slow-consumer gauges.
   */
  backlog(): { events: number; bufferedBytes: number } {
    let events = 0;
    for (const st of this.states.values()) {
      if (!st.live && st.resolved) events += Math.max(0, st.channel.lastSeq - st.pos);
    }
    return { events, bufferedBytes: this.pendingBytes + this.sink.bufferedBytes() };
  }

  /** Bytes queued for the next flush plus what the sink holds (the subscriber buffer gauge). */
  bufferedBytes(): number {
    return this.closed ? 0 : this.pendingBytes + this.sink.bufferedBytes();
  }

  private kick(): void {
    if (this.catchingUp || this.closed) return;
    this.catchingUp = true;
    const started = performance.now();
    this.catchUp().then(
      () => {
        this.catchingUp = false;
        this.retryMs = 0;
        const onCatchUp = this.host.meters?.onCatchUp;
        if (onCatchUp && !this.closed) onCatchUp((performance.now() - started) / 1000);
        // A topic may have fallen behind after the loop's last look.
        if (!this.closed && [...this.states.values()].some((s) => !s.live)) this.kick();
      },
      (err: unknown) => {
        this.catchingUp = false;
        const e =
          err instanceof RillError
            ? err
            : new RillError('engine_unavailable', 'Reading the log failed', { cause: err });
        if (e.code !== 'engine_unavailable' || this.closed) {
          this.fail(e);
          return;
        }
        // The engine is away (a broker restart): keep the stream open — heartbeats go on — and
        // read again later; the log, not this process, holds what the subscriber is missing.
        this.options.onEngineError?.(e);
        if (this.closed) return;
        this.retryMs = Math.min(CATCH_UP_RETRY_MAX_MS, this.retryMs * 2 || CATCH_UP_RETRY_MS);
        setTimeout(() => this.kick(), this.retryMs).unref();
      },
    );
  }

  private async catchUp(): Promise<void> {
    const limit = this.limits.maxSubscriberBufferBytes;
    for (;;) {
      if (this.closed) return;
      const behind = [...this.states.values()].filter((s) => !s.live);
      if (behind.length === 0) {
        this.options.onCaughtUp?.();
        return;
      }
      for (const st of behind) {
        if (this.closed) return;
        this.flush();
        // Replay only into a socket with room: the log, not memory, holds what it cannot take.
        while (!this.closed && this.sink.bufferedBytes() > limit / 2) await this.sink.waitDrain();
        if (this.closed) return;
        await this.step(st);
      }
    }
  }

  /** One bounded replay step for one topic: resolve its start, read a page, maybe go live. */
  private async step(st: TopicState): Promise<void> {
    const ch = st.channel;
    await ch.ready;
    if (this.closed || st.live) return;
    if (!st.resolved) await this.resolveStart(st);
    if (this.closed) return;

    const batch = this.options.replayBatch ?? this.limits.replayBatch;
    const r = await this.engine.read(st.topic, st.pos, batch);
    if (this.closed || st.live) return;
    const head = r.head;
    if (head) {
      if (st.epoch === null) st.epoch = head.epoch;
      if (st.epoch !== head.epoch) {
        this.notice(st, {
          topic: st.topic,
          reason: 'epoch',
          epoch: head.epoch,
          seq: head.firstSeq - 1,
          cursorEpoch: st.epoch,
        });
        st.epoch = head.epoch;
        st.pos = head.firstSeq - 1;
        return;
      }
      if (st.pos > head.lastSeq) {
        this.notice(st, {
          topic: st.topic,
          reason: 'ahead',
          epoch: head.epoch,
          seq: head.lastSeq,
          cursorSeq: st.pos,
        });
        st.pos = head.lastSeq;
        return;
      }
    } else if (st.pos > 0 && st.epoch !== null) {
      // The topic is gone (a wiped log): whatever comes next is a new epoch.
      st.pos = 0;
      st.epoch = null;
    }
    // Stop at the byte limit even inside a page: the log keeps the rest for the next step, and
    // `pos` only covers what was handed over. The drain wait before each step leaves room for at
    // least one event, so this always progresses.
    const room = this.limits.maxSubscriberBufferBytes;
    let full = false;
    for (const ev of r.events) {
      if (ev.seq <= st.pos) continue;
      if (this.pendingBytes + this.sink.bufferedBytes() > room) {
        full = true;
        break;
      }
      if (ev.seq !== st.pos + 1) {
        this.notice(st, {
          topic: st.topic,
          reason: 'retention',
          epoch: ev.epoch,
          seq: ev.seq - 1,
          missing: { from: st.pos + 1, to: ev.seq - 1 },
        });
        st.pos = ev.seq - 1;
      }
      this.deliver(st, ev);
    }
    if (
      head &&
      r.events.length === 0 &&
      st.pos < head.firstSeq - 1 &&
      head.firstSeq - 1 === head.lastSeq
    ) {
      // Everything it needed expired and nothing is retained.
      this.notice(st, {
        topic: st.topic,
        reason: 'retention',
        epoch: head.epoch,
        seq: head.lastSeq,
        missing: { from: st.pos + 1, to: head.lastSeq },
      });
      st.pos = head.lastSeq;
    }
    // Rejoin live only when the log has nothing the live feed has not also shown us; checked and
    // switched in the same tick as the channel's bookkeeping, so nothing lands in between.
    if (
      !full &&
      r.events.length < batch &&
      st.pos >= ch.lastSeq &&
      (ch.epoch === null || st.epoch === null || ch.epoch === st.epoch)
    ) {
      st.live = true;
      ch.goLive(st);
    } else if (r.events.length === 0 && st.pos < ch.lastSeq) {
      // The live feed is ahead of what the log lets us read yet (a shared engine's replica lag):
      // try again shortly rather than spin.
      await new Promise<void>((resolve) => setTimeout(resolve, 5).unref());
    }
  }

  private async resolveStart(st: TopicState): Promise<void> {
    const ch = st.channel;
    const s = st.start;
    switch (s.kind) {
      case 'now':
        // After the channel's watch is up, lastSeq is a point no later event can be missed from.
        st.pos = ch.lastSeq;
        st.epoch = ch.epoch;
        break;
      case 'earliest': {
        const head = await this.engine.head(st.topic);
        st.pos = head ? head.firstSeq - 1 : 0;
        st.epoch = head?.epoch ?? null;
        break;
      }
      case 'after':
        st.pos = s.seq;
        st.epoch = ch.epoch;
        break;
      case 'time': {
        const seq = await this.engine.seqAtTime(st.topic, s.time);
        const head = await this.engine.head(st.topic);
        st.pos = seq === null ? 0 : seq - 1;
        st.epoch = head?.epoch ?? null;
        break;
      }
      case 'cursor':
        st.pos = s.seq;
        st.epoch = s.epoch;
        break;
    }
    st.resolved = true;
  }

  private notice(st: TopicState, n: ResetNotice): void {
    this.exact = false;
    this.host.meters?.reset(n.reason);
    st.epoch = n.epoch;
    st.pos = n.seq;
    this.pendingNotices++;
    this.enqueue(
      this.sink.frameReset(
        n,
        this.single ? encodePosition(st.topic, n.epoch, n.seq) : this.cursorFor(Date.now()),
      ),
    );
  }

  /**
   * The multi-topic cursor as of now: every topic with a known position, the most recently
   * advanced first when there are more than the cursor may list, and a watermark for the rest.
   *
   * Invariant: resuming from it never skips an event this subscription has not handed over. A
   * topic whose start is not resolved yet (its head not read) is listed by its start when that is
   * a position, and otherwise pulls the watermark down to where its start lies (`earliest` to 0),
   * so a cursor taken early — a long-poll answering with one topic's page before the others were
   * read — claims nothing about them.
   */
  cursorFor(time: number, maxLength?: number): string {
    let watermark = this.isPatternSub ? time - WATERMARK_MARGIN_MS : Infinity;
    const parts: string[] = [];
    let states = [...this.states.values()];
    const max = maxLength === undefined ? this.limits.maxCursorTopics : fitting(states, maxLength);
    if (states.length > max) {
      // Keep the topics only a listing can place (no event handed over, so no time to resume
      // from), then the most recently advanced; the rest resume from the oldest time among them.
      states.sort(byListingPriority);
      for (let i = max; i < states.length; i++) {
        const st = states[i]!;
        const floor = st.lastTime > 0 ? st.lastTime : this.startFloor(st);
        if (floor < watermark) watermark = floor;
      }
      states = states.slice(0, max);
    }
    for (const st of states) {
      const p = listedPosition(st);
      if (p) parts.push(encodePosition(st.topic, p.epoch, p.seq));
      else {
        const floor = this.startFloor(st);
        if (floor < watermark) watermark = floor;
      }
    }
    if (watermark !== Infinity) parts.push(`@${Math.max(0, Math.floor(watermark))}`);
    return parts.join(',');
  }

  /**
   * The earliest event time a topic without a listed position may still owe the client: where
   * its start lies, or — a topic that did not exist when it was resolved — where it was resolved.
   */
  private startFloor(st: TopicState): number {
    const s = st.start;
    switch (s.kind) {
      case 'time':
        return s.time;
      case 'now':
        return this.startedAt - WATERMARK_MARGIN_MS;
      default:
        // earliest, after, or a cursor position in a log that no longer exists: from the start.
        return 0;
    }
  }

  /**
   * The current cursor of the subscription (the WebSocket `subscribed` reply, a long-poll page).
   * `maxLength` lists every topic that fits in that many characters instead of `maxCursorTopics`:
   * a cursor sent once per response, not with every event, should resume exactly wherever it can
   * (a long-poll resuming topics by time gets their last events again on every page).
   */
  cursor(maxLength?: number): string {
    if (this.single) {
      const st = this.states.values().next().value;
      const p = st && listedPosition(st);
      if (p) return encodePosition(st.topic, p.epoch, p.seq);
    }
    return this.cursorFor(Date.now(), maxLength);
  }

  /** Ends the subscription with an error the client sees. */
  fail(err: RillError): void {
    if (this.closed) return;
    this.endReason ??= err.code;
    this.flush();
    // The flush may have stopped it (a sink that took its last write): that sink still hears why.
    this.sink.end(err);
    this.detach();
    this.host.ended(this);
  }

  /**
   * Stops taking events and leaves every channel; positions (and so `cursor()`) stay as they are.
   * The host calls it when the owner unsubscribes.
   */
  detach(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending = [];
    this.pendingBytes = 0;
    this.pendingNotices = 0;
    this.pendingEvents = 0;
    for (const st of this.states.values()) {
      st.channel.removeSubscriber(st);
      this.host.releaseChannel(st.channel);
    }
  }
}

/**
 * The position a cursor can list for a topic: where it stands once resolved in a known log, or
 * the cursor it starts from before that; null when only a time can place it.
 */
function listedPosition(st: TopicState): { epoch: string; seq: number } | null {
  if (st.resolved) return st.epoch === null ? null : { epoch: st.epoch, seq: st.pos };
  return st.start.kind === 'cursor' ? { epoch: st.start.epoch, seq: st.start.seq } : null;
}

/** Topics only a listing can place first, then the most recently advanced. */
function byListingPriority(a: TopicState, b: TopicState): number {
  return needsListing(b) - needsListing(a) || b.touched - a.touched;
}

/** Room kept in a length-bounded cursor for the watermark part (`,@` and 13 digits). */
const WATERMARK_CHARS = 16;

/** How many of `states`, listed in priority order, fit in a cursor of `maxLength` characters. */
function fitting(states: TopicState[], maxLength: number): number {
  const lengths = (list: TopicState[]): number[] =>
    list.map((st) => {
      const p = listedPosition(st);
      return p ? encodePosition(st.topic, p.epoch, p.seq).length + 1 : 0;
    });
  let total = WATERMARK_CHARS;
  for (const n of lengths(states)) total += n;
  if (total <= maxLength) return states.length;
  let n = 0;
  total = WATERMARK_CHARS;
  for (const len of lengths([...states].sort(byListingPriority))) {
    if (total + len > maxLength) break;
    total += len;
    n++;
  }
  return n;
}

/** 1 when a topic can only be placed by listing it (nothing handed over yet, a position start). */
function needsListing(st: TopicState): number {
  return st.lastTime === 0 && listedPosition(st) !== null ? 1 : 0;
}
