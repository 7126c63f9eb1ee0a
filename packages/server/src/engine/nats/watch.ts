import { DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream';
import type { Subscription } from '@nats-io/transport-node';
import type { EphemeralEvent, RillEvent } from '../../model/event.js';
import type { Feed } from '../common.js';
import type { SignalListener, TopicSignal, WatchListener } from '../engine.js';
import { quietly, type Lifecycle } from '../lifecycle.js';
import { Watchers, type TopicWatch } from '../watchers.js';
import type { NatsClient } from './client.js';
import { parseDescription, parseJsMsg, toEvent } from './codec.js';
import type { Streams } from './streams.js';

/** How far before the head a new watch starts, in messages ("shortly before" of the contract). */
const WATCH_BACKLOG = 8;
/**
 * Pull expiry of the feeds' consumers, ms: heartbeats come at half of it, so a consumer the
 * server lost is noticed within about this long.
 */
const CONSUME_EXPIRES_MS = 5_000;

/** One watched topic's consumer and how far it has delivered. */
interface Watched extends TopicWatch {
  epoch: string | null;
  pos: number;
  lastMsg: number;
  messages: ConsumerMessages | undefined;
  /** Ends the current pause of the topic's loop (set while one runs). */
  wake: (() => void) | undefined;
  /** The core subscription to the topic's signals, once connected. */
  signals: Subscription | undefined;
}

/**
 * The live side of the NATS engine: an ordered consumer per watched topic (it recreates itself on
 * a gap or after a reconnect, resuming after the last message it delivered; a new epoch restarts
 * it from seq 1), and one on the topic registry for topic creations.
 */
export class NatsWatch {
  private readonly watchers: Watchers<Watched>;
  private registry: { messages: ConsumerMessages | undefined; active: boolean } | undefined;

  constructor(
    private readonly client: NatsClient,
    private readonly streams: Streams,
    private readonly feed: Feed,
    private readonly life: Lifecycle,
  ) {
    this.watchers = new Watchers<Watched>(
      feed,
      {
        create: (topic) => ({
          topic,
          active: true,
          epoch: null,
          pos: 0,
          lastMsg: 0,
          messages: undefined,
          wake: undefined,
          signals: undefined,
        }),
        start: (w) => {
          this.startRegistry();
          void this.watchLoop(w);
        },
        stop: (w) => {
          w.signals?.unsubscribe();
          w.wake?.();
          void quietly(w.messages?.close());
        },
      },
      () => life.closed,
    );
  }

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    return this.watchers.watch(topic, listener, signals);
  }

  /**
   * Subscribes a watched topic to its signal subject (core NATS: the client subscribes again by
   * itself after a reconnect). Messages: `{"k":"e","e":[[time, type, data, trace], …]}` for
   * ephemeral events, `{"k":"d","epoch":…}` for a deletion.
   */
  private subscribeSignals(w: Watched): void {
    const nc = this.client.connection;
    if (w.signals !== undefined || nc === undefined || !w.active) return;
    w.signals = nc.subscribe(this.streams.signalSubject(w.topic), {
      callback: (err, msg) => {
        if (err !== null || !w.active) return;
        const signal = parseSignal(w.topic, msg.string());
        if (signal === null) return;
        if (signal.kind === 'deleted' && w.epoch === signal.epoch) {
          // Its consumer ends with the stream; the loop then waits for a new epoch.
          w.epoch = null;
          w.pos = 0;
          w.lastMsg = 0;
        }
        this.feed.signal(w.topic, signal);
      },
    });
  }

  watchTopics(listener: (topic: string) => void): () => void {
    if (this.life.closed) return () => {};
    this.startRegistry();
    return this.feed.watchTopics(listener);
  }

  /**
   * After a reconnect: consumers do not outlive a server restart, so start each feed again after
   * what it delivered, rather than wait for its missed heartbeats to say so.
   */
  restart(): void {
    for (const w of this.watchers.values()) void quietly(w.messages?.close());
    void quietly(this.registry?.messages?.close());
  }

  /** Stops every consumer, for `close`. */
  async stop(): Promise<void> {
    this.watchers.stopAll();
    if (this.registry) {
      this.registry.active = false;
      await quietly(this.registry.messages?.close());
    }
  }

  /**
   * One topic's live feed: an ordered consumer from just before the head, delivering each
   * event once and in order. When the stream disappears or is recreated, the loop starts over
   * on the new epoch.
   */
  private async watchLoop(w: Watched): Promise<void> {
    let first = true;
    while (w.active && !this.life.closed) {
      try {
        const jsm = await this.client.api();
        this.subscribeSignals(w);
        const info = await this.streams.info(jsm, w.topic);
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
        const consumer = await this.client.js.consumers.get(info.config.name, {
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
      while (reg.active && !this.life.closed) {
        try {
          const jsm = await this.client.api();
          if (lastMsg === 0) {
            const info = await jsm.streams.info(this.streams.registryStream);
            lastMsg = Math.max(0, info.state.last_seq - WATCH_BACKLOG);
          }
          const consumer = await this.client.js.consumers.get(this.streams.registryStream, {
            deliver_policy: DeliverPolicy.StartSequence,
            opt_start_seq: lastMsg + 1,
          });
          const messages = await consumer.consume({ expires: CONSUME_EXPIRES_MS });
          reg.messages = messages;
          for await (const m of messages) {
            lastMsg = m.seq;
            const topic = m.string();
            this.feed.topicCreated(topic);
            this.watchers.get(topic)?.wake?.();
          }
        } catch {
          await new Promise((r) => setTimeout(r, 250).unref());
        }
      }
    };
    void loop();
  }
}

/** Encodes a signal for the topic's signal subject. */
export function encodeSignal(signal: TopicSignal): string {
  if (signal.kind === 'deleted') return JSON.stringify({ k: 'd', epoch: signal.epoch });
  return JSON.stringify({
    k: 'e',
    e: signal.events.map((e) => [e.time, e.type ?? null, e.data, e.trace ?? null]),
  });
}

function parseSignal(topic: string, text: string): TopicSignal | null {
  let raw: { k?: unknown; epoch?: unknown; e?: unknown };
  try {
    raw = JSON.parse(text) as typeof raw;
  } catch {
    return null;
  }
  if (raw === null || typeof raw !== 'object') return null;
  if (raw.k === 'd' && typeof raw.epoch === 'string') return { kind: 'deleted', epoch: raw.epoch };
  if (raw.k !== 'e' || !Array.isArray(raw.e)) return null;
  const events: EphemeralEvent[] = [];
  for (const item of raw.e as unknown[]) {
    if (!Array.isArray(item)) continue;
    const [time, type, data, trace] = item as [unknown, unknown, unknown, unknown];
    if (typeof time !== 'number' || typeof data !== 'string') continue;
    const ev: { -readonly [K in keyof EphemeralEvent]: EphemeralEvent[K] } = { topic, time, data };
    if (typeof type === 'string') ev.type = type;
    if (trace !== null && typeof trace === 'object')
      ev.trace = trace as EphemeralEvent['trace'] & object;
    events.push(ev);
  }
  return events.length === 0 ? null : { kind: 'ephemeral', events };
}
