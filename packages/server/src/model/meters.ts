import { isRillError, type RillError } from './errors.js';

/**
 * The server's own counters: plain numbers the fan-out, the transports and the routes add to, and
 * that `/metrics` and `/v1/stats` read when asked (docs/observability.md). Nothing here allocates
 * or looks anything up on the delivery path: a flush adds to its transport's meter, a scrape reads
 * the sums. One instance per server (tests run several servers in one process).
 */

/** The transports a subscriber reads events over. */
export const TRANSPORTS = ['sse', 'ndjson', 'ws', 'poll'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** What a publish arrived over. */
export const PUBLISH_TRANSPORTS = ['http', 'ws'] as const;
export type PublishTransport = (typeof PUBLISH_TRANSPORTS)[number];

/** Where an error was answered: an HTTP response, or a stream's error frame or close. */
export type ErrorTransport = 'http' | Transport;

/** The counters of one transport. Hot-path fields are plain numbers, added to in place. */
export class TransportMeter {
  /** Events handed to sockets (counted per flush). */
  events = 0;
  /** Bytes handed to sockets: frames with their HTTP chunk or WebSocket headers. */
  bytes = 0;
  /** Socket writes (flushes): each carries every event queued since the last. */
  writes = 0;
  opened = 0;
  closed = 0;
  /** Closed connections by reason (`client`, `server`, or the catalogue code it ended with). */
  readonly closedBy = new Map<string, number>();

  constructor(
    readonly transport: Transport,
    private readonly onError: (transport: Transport, err: RillError) => void = () => undefined,
  ) {}

  /** An error told to a client of this transport (an error frame, a stream's last words). */
  failed(err: RillError): void {
    this.onError(this.transport, err);
  }

  /** Connections of this transport open now. */
  get open(): number {
    return this.opened - this.closed;
  }

  close(reason: string): void {
    this.closed++;
    bump(this.closedBy, reason);
  }
}

/** One topic's series, kept only for topics matching `metrics.topics`. */
export class TopicMeter {
  published = 0;
  delivered = 0;
  constructor(readonly topic: string) {}
}

/** Error codes that mean "a limit refused this" (counted again as limit refusals). */
const LIMIT_CODES = new Set<string>([
  'rate_limited',
  'overloaded',
  'too_many_connections',
  'too_many_subscriptions',
  'too_many_topics',
  'batch_too_large',
  'payload_too_large',
  'event_too_large',
  'insufficient_storage',
]);

/** Error codes that are authentication or authorization failures. */
const AUTH_CODES = new Set<string>([
  'unauthorized',
  'token_expired',
  'forbidden',
  'forbidden_origin',
]);

/** A label value taken from an error's details: short and plain, or `other`. */
const LABEL_RE = /^[A-Za-z0-9_.:-]{1,48}$/;

/** A recent-latency window: samples (ms) with their time, for percentiles over the last seconds. */
export class LatencyWindow {
  private readonly times: Float64Array;
  private readonly values: Float64Array;
  private next = 0;
  private filled = 0;

  constructor(
    private readonly capacity = 4096,
    private readonly windowMs = 10_000,
  ) {
    this.times = new Float64Array(capacity);
    this.values = new Float64Array(capacity);
  }

  add(ms: number, now: number): void {
    this.times[this.next] = now;
    this.values[this.next] = ms;
    this.next = (this.next + 1) % this.capacity;
    if (this.filled < this.capacity) this.filled++;
  }

  /** The samples (ms) of the last `windowMs`, in no particular order. */
  recent(now: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.filled; i++) {
      if (now - this.times[i]! <= this.windowMs) out.push(this.values[i]!);
    }
    return out;
  }

  /** Percentiles (0..1) of the samples of the last `windowMs`; null each when there are none. */
  percentiles(qs: readonly number[], now: number): (number | null)[] {
    return percentilesOf(this.recent(now), qs);
  }
}

/**
 * Percentiles (0..1) of `samples` (nearest rank; sorts them in place); null each when there are
 * none. Samples of several windows (the workers of one node) are merged by concatenating them.
 */
export function percentilesOf(samples: number[], qs: readonly number[]): (number | null)[] {
  if (samples.length === 0) return qs.map(() => null);
  samples.sort((a, b) => a - b);
  return qs.map((q) => samples[Math.min(samples.length - 1, Math.ceil(q * samples.length) - 1)]!);
}

export class Meters {
  private readonly onError = (t: Transport, err: RillError): void => this.error(t, err);
  readonly transports: Record<Transport, TransportMeter> = {
    sse: new TransportMeter('sse', this.onError),
    ndjson: new TransportMeter('ndjson', this.onError),
    ws: new TransportMeter('ws', this.onError),
    poll: new TransportMeter('poll', this.onError),
  };
  /** Events stored by publish requests (duplicates not counted), by transport. */
  readonly published: Record<PublishTransport, number> = { http: 0, ws: 0 };
  /** Subscriptions started, by start kind (`now`, `earliest`, `time`, `after`, `resume`). */
  readonly subscriptions = new Map<string, number>();
  /** Reset notices sent, by reason (`retention`, `epoch`, `ahead`). */
  readonly resets = new Map<string, number>();
  /** Errors answered, by `transport code`. */
  readonly errors = new Map<string, number>();
  /** Limit refusals, by `code limit` (the `limit` detail, when the error names one). */
  readonly limitRefusals = new Map<string, number>();
  /** Authentication and authorization failures, by catalogue code. */
  readonly authFailures = new Map<string, number>();
  /** WebSocket close codes sent. */
  readonly closeCodes = new Map<number, number>();
  /** Per-topic series for the topics `topicFilter` accepts (none by default). */
  readonly topics = new Map<string, TopicMeter>();
  /** Most topics with their own series, whatever the patterns match. */
  static readonly MAX_TOPICS = 1000;
  /** Live delivery delays (ms) of the last seconds, for `/v1/stats`. */
  readonly deliveryLatency = new LatencyWindow();
  /** Called with each live delivery delay (seconds): the histogram of `/metrics`, when on. */
  onDeliveryDelay: ((seconds: number) => void) | null = null;
  /** Called with each catch-up's duration (seconds). */
  onCatchUp: ((seconds: number) => void) | null = null;

  constructor(private readonly topicFilter: ((topic: string) => boolean) | null = null) {}

  /** The topic's own meter, or null when it is aggregated only (the default). */
  topic(topic: string): TopicMeter | null {
    if (this.topicFilter === null) return null;
    let m = this.topics.get(topic);
    if (m === undefined) {
      if (this.topics.size >= Meters.MAX_TOPICS || !this.topicFilter(topic)) return null;
      m = new TopicMeter(topic);
      this.topics.set(topic, m);
    }
    return m;
  }

  publishedEvents(transport: PublishTransport, topic: string, n: number): void {
    this.published[transport] += n;
    if (this.topicFilter !== null) {
      const m = this.topic(topic);
      if (m) m.published += n;
    }
  }

  subscriptionStarted(kind: string): void {
    bump(this.subscriptions, kind);
  }

  reset(reason: string): void {
    bump(this.resets, reason);
  }

  /** An error answered to a client: by code, and as a limit refusal or auth failure when it is one. */
  error(transport: ErrorTransport, err: RillError): void {
    bump(this.errors, `${transport} ${err.code}`);
    if (LIMIT_CODES.has(err.code)) {
      const limit = err.details?.limit;
      const name = typeof limit === 'string' ? (LABEL_RE.test(limit) ? limit : 'other') : '';
      bump(this.limitRefusals, `${err.code} ${name}`);
    }
    if (AUTH_CODES.has(err.code)) bump(this.authFailures, err.code);
  }

  closeCode(code: number): void {
    bump(this.closeCodes, code);
  }

  /** Totals over every transport. */
  totals(): {
    published: number;
    delivered: number;
    bytes: number;
    opened: number;
    closed: number;
    errors: number;
    limitRefusals: number;
  } {
    let delivered = 0;
    let bytes = 0;
    let opened = 0;
    let closed = 0;
    for (const t of TRANSPORTS) {
      const m = this.transports[t];
      delivered += m.events;
      bytes += m.bytes;
      opened += m.opened;
      closed += m.closed;
    }
    return {
      published: this.published.http + this.published.ws,
      delivered,
      bytes,
      opened,
      closed,
      errors: sum(this.errors),
      limitRefusals: sum(this.limitRefusals),
    };
  }
}

function bump<K>(map: Map<K, number>, key: K, n = 1): void {
  map.set(key, (map.get(key) ?? 0) + n);
}

function sum(map: Map<unknown, number>): number {
  let n = 0;
  for (const v of map.values()) n += v;
  return n;
}

/** What the instrumented engine (`engine/instrumented.ts`) counts. */
export class EngineMeter {
  /** Appends called and not settled yet. */
  pendingAppends = 0;
  /** Failed operations, by `operation code` (`append engine_unavailable`, …). */
  readonly errors = new Map<string, number>();
  /** Called with each append's duration (seconds) and whether it stored. */
  onAppend: ((seconds: number, ok: boolean) => void) | null = null;
  /** Called with each read's duration (seconds) and whether it succeeded. */
  onRead: ((seconds: number, ok: boolean) => void) | null = null;

  failed(op: string, err: unknown): void {
    const key = `${op} ${isRillError(err) ? err.code : 'internal'}`;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }
}
