import type { RillEvent } from '../../model/event.js';
import type { Feed } from '../common.js';
import type { ReadResult, SignalListener, WatchListener } from '../engine.js';
import type { EphemeralEvent } from '../../model/event.js';
import type { TraceContext } from '../../model/trace.js';
import type { Lifecycle } from '../lifecycle.js';
import { Watchers, type TopicWatch } from '../watchers.js';
import type { RedisClients } from './client.js';
import { compareIds, messageEvents, parseMessage, type StreamEntry } from './codec.js';
import type { RedisKeys } from './keys.js';

/** Events one gap-repair read fetches. */
const REPAIR_PAGE = 1_000;
/** Delay before a failed gap repair is retried, ms. */
const REPAIR_RETRY_MS = 250;

/** One watched topic's live feed: the last seq handed to the feed and how far the log is known. */
interface Watched extends TopicWatch {
  readonly channel: string;
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

/**
 * The live side of the redis engine. A watched topic is subscribed on its channel; messages carry
 * the seq range (and small batches themselves); a message whose first seq is not the next
 * expected one — a lost message, a reconnect, a batch too big to inline — makes the feed read the
 * gap from the stream before delivering anything later, so it never skips. After every reconnect
 * of the pub/sub connection every watched topic is re-read from its last delivered seq, and the
 * topic creations missed meanwhile are replayed.
 */
export class RedisWatch {
  private readonly watchers: Watchers<Watched>;
  private readonly byChannel = new Map<string, Watched>();
  private topicWatch: { lastId: string | null; active: boolean } | undefined;

  /** @param read the engine's `read`, which repairs read the stream with */
  constructor(
    private readonly clients: RedisClients,
    private readonly keys: RedisKeys,
    private readonly feed: Feed,
    private readonly life: Lifecycle,
    private readonly read: (topic: string, afterSeq: number, limit: number) => Promise<ReadResult>,
  ) {
    this.watchers = new Watchers<Watched>(
      feed,
      {
        create: (topic) => ({
          topic,
          channel: this.keys.channel(topic),
          active: true,
          ready: false,
          epoch: null,
          pos: 0,
          target: 0,
          stale: false,
          repairing: false,
          retry: undefined,
        }),
        start: (w) => this.subscribe(w),
        stop: (w, closing) => {
          clearTimeout(w.retry);
          this.byChannel.delete(w.channel);
          // Closing: the pub/sub connection is dropped whole right after.
          if (!closing) this.clients.sub.unsubscribe(w.channel).catch(() => undefined);
        },
      },
      () => life.closed,
    );
    clients.sub.on('message', (channel: string, message: string) =>
      this.onMessage(channel, message),
    );
    clients.sub.on('ready', () => this.onSubscriberReady());
  }

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    return this.watchers.watch(topic, listener, signals);
  }

  watchTopics(listener: (topic: string) => void): () => void {
    if (this.life.closed) return () => {};
    if (this.topicWatch === undefined) {
      const tw = { lastId: null as string | null, active: true };
      this.topicWatch = tw;
      // Queued on the command connection now, so it reflects the log no earlier than this call.
      this.clients.cmd.xrevrange(this.keys.created, '+', '-', 'COUNT', 1).then(
        (last) => {
          const id = last[0]?.[0] ?? '0-0';
          if (tw.lastId === null || compareIds(id, tw.lastId) > 0) tw.lastId = id;
        },
        () => undefined,
      );
      this.clients.sub.subscribe(this.keys.createdChannel).catch(() => undefined);
    }
    return this.feed.watchTopics(listener);
  }

  /** Stops every watch, for `close` (the pub/sub connection is dropped next). */
  stop(): void {
    this.watchers.stopAll();
  }

  private subscribe(w: Watched): void {
    this.byChannel.set(w.channel, w);
    // The head is read on the command connection right away, so this process's later appends
    // (same connection, same order) are all after it; anything between it and the subscription
    // taking effect is read from the stream once the subscription is confirmed.
    const head = this.clients.cmd.hmget(this.keys.topic(w.topic).meta, 'e', 'l');
    const subscribed = this.clients.sub.subscribe(w.channel);
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

  private onMessage(channel: string, message: string): void {
    if (channel === this.keys.createdChannel) {
      this.onTopicCreated(message);
      return;
    }
    const w = this.byChannel.get(channel);
    if (w === undefined || !w.active) return;
    // Epochs are alphanumeric, so these two markers never start a batch message.
    if (message.startsWith('~')) {
      const events = parseEphemeral(w.topic, message.slice(1));
      if (events.length > 0) this.feed.signal(w.topic, { kind: 'ephemeral', events });
      return;
    }
    if (message.startsWith('!')) {
      const epoch = message.slice(1);
      if (w.epoch === epoch) {
        // The log is gone: the next epoch starts from scratch.
        w.epoch = null;
        w.pos = 0;
        w.target = 0;
      }
      this.feed.signal(w.topic, { kind: 'deleted', epoch });
      return;
    }
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
      const events = messageEvents(w.topic, m);
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
    if (w.repairing || !w.active || this.life.closed) return;
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
      if (!w.active || this.life.closed) return;
      if (!w.ready) {
        const m = await this.clients.run(() =>
          this.clients.cmd.hmget(this.keys.topic(w.topic).meta, 'e', 'l'),
        );
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
    if (!w.active || this.life.closed || w.retry !== undefined) return;
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
    if (this.life.closed) return;
    const channels = [...this.byChannel.keys()];
    if (this.topicWatch !== undefined) channels.push(this.keys.createdChannel);
    if (channels.length === 0) return;
    this.clients.sub
      .subscribe(...channels)
      .then(() => this.clients.sub.ping())
      .then(
        () => {
          for (const w of this.watchers.values()) {
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
        const entries = (await this.clients.run(() =>
          this.clients.cmd.xrange(this.keys.created, `(${after}`, '+', 'COUNT', REPAIR_PAGE),
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
}

/** The events of an ephemeral message (`broadcast`): `[time, type, data, trace]` each. */
function parseEphemeral(topic: string, body: string): EphemeralEvent[] {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    return [];
  }
  if (!Array.isArray(raw)) return [];
  const out: EphemeralEvent[] = [];
  for (const item of raw as unknown[]) {
    if (!Array.isArray(item)) continue;
    const [time, type, data, trace] = item as [number, string | null, string, TraceContext | null];
    if (typeof time !== 'number' || typeof data !== 'string') continue;
    const ev: { -readonly [K in keyof EphemeralEvent]: EphemeralEvent[K] } = { topic, time, data };
    if (typeof type === 'string') ev.type = type;
    if (trace !== null && typeof trace === 'object') ev.trace = trace;
    out.push(ev);
  }
  return out;
}
