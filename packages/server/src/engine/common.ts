import type { EventInput, RillEvent } from '../model/event.js';
import { RillError } from '../model/errors.js';
import { redactUrl } from '../model/redact.js';
import { encodeTrace, type TraceContext } from '../model/trace.js';
import type { EngineLog, SignalListener, TopicSignal, WatchListener } from './engine.js';

/** Most events one `read` returns, whatever `limit` asks for. */
export const MAX_READ_LIMIT = 10_000;
/** Most topics one `listTopics` returns, and how many when no limit is given. */
export const MAX_LIST_LIMIT = 10_000;
export const DEFAULT_LIST_LIMIT = 1_000;

/** `limit` as a whole number in `0..max`; `fallback` when it is not a number. */
export function clampLimit(limit: number | undefined, max: number, fallback = max): number {
  if (limit === undefined || Number.isNaN(limit)) return fallback;
  return Math.max(0, Math.min(max, Math.floor(limit)));
}

/** The error every engine method gives once the engine is closed. */
export function closedError(name: string): RillError {
  return new RillError('engine_unavailable', `The ${name} engine is closed`);
}

/** What went wrong with a connection, in a few words (`connect ECONNREFUSED 127.0.0.1:6399`). */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.message !== '') return err.message;
  // Node's AggregateError of a connect to several addresses (`localhost`) has no message.
  const inner = (err as Partial<AggregateError>).errors?.[0] as unknown;
  if (inner !== undefined) return describeError(inner);
  return (err as NodeJS.ErrnoException).code ?? err.name;
}

/**
 * Logs a broker connection going and coming back, once per change: a warning naming the URL
 * (password redacted) and the cause when it cannot be reached, at start-up or later, and a line
 * when it is back.
 */
export class ReachabilityLog {
  private down = false;
  private readonly url: string;

  constructor(
    private readonly log: EngineLog | undefined,
    private readonly broker: string,
    url: string,
  ) {
    this.url = redactUrl(url);
  }

  unreachable(err: unknown): void {
    if (this.down) return;
    this.down = true;
    const cause = describeError(err);
    this.log?.warn(
      { url: this.url, cause },
      `${this.broker} at ${this.url} is unreachable (${cause}); retrying`,
    );
  }

  reachable(): void {
    if (!this.down) return;
    this.down = false;
    this.log?.info({ url: this.url }, `${this.broker} at ${this.url} is reachable again`);
  }
}

interface Subscription<T> {
  fn: (value: T) => void;
  active: boolean;
  signals?: SignalListener;
}

type Delivery =
  | { kind: 'events'; topic: string; events: readonly RillEvent[] }
  | { kind: 'signal'; topic: string; signal: TopicSignal }
  | { kind: 'topic'; topic: string };

/**
 * The in-process side of `watch` and `watchTopics`, shared by the engines: listeners per topic,
 * delivered strictly in the order the engine publishes, each listener call isolated from the
 * others.
 */
export class Feed {
  private readonly watchers = new Map<string, Set<Subscription<readonly RillEvent[]>>>();
  private readonly topicWatchers = new Set<Subscription<string>>();
  private readonly queue: Delivery[] = [];
  private draining = false;

  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    const sub: Subscription<readonly RillEvent[]> = { fn: listener, active: true };
    if (signals !== undefined) sub.signals = signals;
    let set = this.watchers.get(topic);
    if (set === undefined) {
      set = new Set();
      this.watchers.set(topic, set);
    }
    set.add(sub);
    return () => {
      if (!sub.active) return;
      sub.active = false;
      const current = this.watchers.get(topic);
      if (current === undefined) return;
      current.delete(sub);
      if (current.size === 0) this.watchers.delete(topic);
    };
  }

  watchTopics(listener: (topic: string) => void): () => void {
    const sub: Subscription<string> = { fn: listener, active: true };
    this.topicWatchers.add(sub);
    return () => {
      sub.active = false;
      this.topicWatchers.delete(sub);
    };
  }

  hasWatchers(topic: string): boolean {
    return this.watchers.has(topic);
  }

  /** Delivers newly committed events of one topic; calls must come in seq order. */
  events(topic: string, events: readonly RillEvent[]): void {
    if (events.length === 0 || !this.watchers.has(topic)) return;
    this.queue.push({ kind: 'events', topic, events });
    this.drain();
  }

  /** Delivers a signal (an ephemeral batch, a deletion) of one topic, in order with its events. */
  signal(topic: string, signal: TopicSignal): void {
    if (!this.watchers.has(topic)) return;
    this.queue.push({ kind: 'signal', topic, signal });
    this.drain();
  }

  topicCreated(topic: string): void {
    if (this.topicWatchers.size === 0) return;
    this.queue.push({ kind: 'topic', topic });
    this.drain();
  }

  /** Drops every listener: nothing is delivered after this. */
  clear(): void {
    for (const set of this.watchers.values()) for (const sub of set) sub.active = false;
    for (const sub of this.topicWatchers) sub.active = false;
    this.watchers.clear();
    this.topicWatchers.clear();
    this.queue.length = 0;
  }

  // A listener may append (or publish) synchronously from inside its call. Queueing instead of
  // recursing keeps every listener's view in seq order: the nested batch waits for the outer one.
  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      for (let i = 0; i < this.queue.length; i++) {
        const d = this.queue[i] as Delivery;
        if (d.kind === 'events') {
          const set = this.watchers.get(d.topic);
          if (set !== undefined) for (const sub of set) call(sub, d.events);
        } else if (d.kind === 'signal') {
          const set = this.watchers.get(d.topic);
          if (set !== undefined) {
            for (const sub of set) {
              if (sub.signals !== undefined) call({ ...sub, fn: sub.signals }, d.signal);
            }
          }
        } else {
          for (const sub of this.topicWatchers) call(sub, d.topic);
        }
      }
    } finally {
      this.queue.length = 0;
      this.draining = false;
    }
  }
}

function call<T>(sub: Subscription<T>, value: T): void {
  if (!sub.active) return;
  try {
    sub.fn(value);
  } catch (err) {
    // A throwing listener is a bug in the caller; it must not cost the other listeners their
    // events or fail an append that is already stored, so it surfaces as an uncaught error instead.
    queueMicrotask(() => {
      throw err;
    });
  }
}

/**
 * The size of an event as retention (`maxBytes`) and the store budget (`maxStoreBytes`) count it:
 * the UTF-8 bytes of its data, type and key, and of its trace context as stored ({@link encodeTrace}).
 * Every engine counts the same way (the redis engine in its scripts, where strings are bytes).
 */
export function eventBytes(event: {
  data: string;
  type?: string;
  key?: string;
  trace?: TraceContext;
}): number {
  let n = Buffer.byteLength(event.data);
  if (event.type !== undefined) n += Buffer.byteLength(event.type);
  if (event.key !== undefined) n += Buffer.byteLength(event.key);
  // ASCII by its grammar: characters are bytes.
  if (event.trace !== undefined) n += encodeTrace(event.trace).length;
  return n;
}

/** The error of an append refused because the store is full: nothing of it was stored. */
export function storageFull(engine: string, why: string, cause?: unknown): RillError {
  return new RillError(
    'insufficient_storage',
    `The ${engine} store is full (${why}); nothing was stored`,
    cause === undefined ? {} : { cause },
  );
}

/** Least time between two "storage is full" warnings, ms. */
const STORAGE_WARN_INTERVAL_MS = 60_000;

/**
 * Logs the store becoming full and accepting writes again, once per change: a full store refuses
 * every publish, and one line per refusal would drown the log it is meant to show up in. A store
 * at its limit may also take one publish and refuse the next (Redis' memory use moves on its
 * own): it is warned about at most once a minute, and "room again" follows only a warning.
 */
export class StorageLog {
  private full = false;
  private warned = false;
  private lastWarning = -Infinity;

  constructor(
    private readonly log: EngineLog | undefined,
    private readonly engine: string,
  ) {}

  /** An append was refused for lack of space. */
  refused(err: RillError): void {
    if (this.full) return;
    this.full = true;
    const now = Date.now();
    if (now - this.lastWarning < STORAGE_WARN_INTERVAL_MS) return;
    this.lastWarning = now;
    this.warned = true;
    this.log?.warn(
      { engine: this.engine, cause: err.message },
      `Storage is full: publishes get 507 insufficient_storage until space is freed (${err.message})`,
    );
  }

  /** An append was stored. */
  stored(): void {
    if (!this.full) return;
    this.full = false;
    if (!this.warned) return;
    this.warned = false;
    this.log?.info({ engine: this.engine }, 'Storage has room again: publishes are stored');
  }
}

/** The stored event for `input` at `seq`: optional fields only when present. */
export function makeEvent(
  topic: string,
  epoch: string,
  seq: number,
  time: number,
  input: EventInput,
): RillEvent {
  const event: { -readonly [K in keyof RillEvent]: RillEvent[K] } = {
    topic,
    seq,
    epoch,
    time,
    data: input.data,
  };
  if (input.type !== undefined) event.type = input.type;
  if (input.key !== undefined) event.key = input.key;
  if (input.trace !== undefined) event.trace = input.trace;
  return event;
}
