/**
 * The wire shapes a Rill server sends (docs/protocol.md), as the SDK hands them to applications.
 */

/** One event of a topic's log. `data` is typed by the subscriber through generics. */
export interface RillEvent<T = unknown> {
  topic: string;
  /** Position in the topic's log: contiguous (1, 2, 3 …) within an epoch. */
  seq: number;
  /** The event's cursor, `topic:epoch:seq`. */
  id: string;
  type?: string;
  /** Server receive time, ms since the Unix epoch. */
  time: number;
  key?: string;
  /**
   * The publisher's W3C trace context, when it sent one: join the producer's trace (e.g. as the
   * parent or a link of the span that handles the event).
   */
  trace?: TraceContext;
  /**
   * True for an ephemeral event: delivered live only, never stored. The server sends it without
   * `seq`, `id` or `key`, and it never moves the subscription's cursor.
   */
  ephemeral?: true;
  data: T;
}

/** W3C Trace Context as an event carries it (`traceparent` is a version-00 header value). */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

/** The server could not resume exactly and says what happened (protocol "Reset notice"). */
export interface ResetNotice {
  kind: 'reset';
  topic: string;
  reason: 'retention' | 'epoch' | 'ahead' | 'deleted';
  epoch: string;
  /** The stream continues after this seq. */
  seq: number;
  missing?: { from: number; to: number };
  cursorEpoch?: string;
  cursorSeq?: number;
}

/**
 * The SDK saw a `seq` jump and the history no longer holds the missing events (retention dropped
 * them while the subscriber was away): `missing` lists them. Nothing is ever skipped silently.
 */
export interface GapNotice {
  kind: 'gap';
  topic: string;
  epoch: string;
  missing: { from: number; to: number };
}

export type RillNotice = ResetNotice | GapNotice;

/**
 * Someone came to a topic (`join`) or went (`leave`, after the server's grace period: a reconnect
 * is neither). Sent to subscriptions that asked (`presence: true` or `onPresence`), over SSE and
 * WebSocket; they are no events (no seq) and do not move the cursor.
 */
export interface PresenceChange {
  kind: 'join' | 'leave';
  topic: string;
  /** The subscriber's token `sub`. */
  sub: string;
  /** Its token's `rill.info`, when it has one. */
  info?: Record<string, unknown>;
}

/** One subscriber of a topic, over every node of the server. */
export interface PresenceMember {
  sub: string;
  info?: Record<string, unknown>;
  /** Its open streams on the topic (0 during the grace period after its last one closed). */
  connections: number;
  /** When its earliest counted stream opened, ms since the Unix epoch. */
  since: number;
}

/** A page of a topic's members, in `sub` order. */
export interface PresencePage {
  topic: string;
  members: PresenceMember[];
  /** Members in all. */
  count: number;
  /** Streams of anonymous subscribers (no `sub`: API keys, a server without auth): counted only. */
  anonymous: number;
  /** The `after` of the next page, or null on the last one. */
  next: string | null;
}

/** `connecting` (first attempt), `open`, `reconnecting` (after a drop), `closed` (final). */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Where a subscription starts: `now` (default), `earliest`, or a seq (inclusive). */
export type StartFrom = 'now' | 'earliest' | number;

/** The result of one stored (or deduplicated) publish. */
export interface PublishResult {
  topic: string;
  epoch: string;
  seq: number;
  id: string;
  time: number;
  /** True when the key was already used within the idempotency window: `seq` is the original's. */
  duplicate: boolean;
}

/** One event to publish. */
export interface EventInput<T = unknown> {
  data: T;
  type?: string;
  key?: string;
  /** The trace context to store with the event (an invalid one is ignored by the server). */
  trace?: TraceContext;
}
