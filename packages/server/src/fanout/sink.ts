import type { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import type { TransportMeter } from '../model/meters.js';

/**
 * What the hub needs from a transport: framing and a byte pipe with backpressure. SSE, NDJSON
 * and WebSocket each implement it; the hub never knows which one it feeds.
 *
 * A sink only receives calls: it never calls back into its subscription or the hub. What it has
 * to say goes back as a return value (`write`) or to its owner (the route), which acts after the
 * call returned.
 */
export interface Sink {
  /**
   * The counters of the sink's transport: the subscription adds the events of each flush to it,
   * the sink the bytes it writes. Absent for sinks that are not counted.
   */
  readonly meter?: TransportMeter | null;
  /**
   * One event as wire bytes. `id` is the cursor to attach: `null` means the event's own id
   * (single-topic streams, where one frame serves every subscriber the event is handed to in a
   * row); a string is a multi-topic cursor that differs per subscriber. Never cache on `ev`: the
   * engine may keep that object for as long as retention keeps the event.
   */
  frameEvent(ev: RillEvent, id: string | null): string;
  /**
   * An ephemeral event as wire bytes: no id or cursor (it has no place in the log). A sink without
   * it (a long-poll page) drops ephemeral events.
   */
  frameEphemeral?(ev: EphemeralEvent): string;
  /** A reset notice (docs/protocol.md § Reset notice) with the cursor to resume from after it. */
  frameReset(notice: ResetNotice, id: string): string;
  /**
   * Writes bytes; the hub coalesces frames so this is called at most once per tick. Returns false
   * when the sink takes nothing more (a long-poll page is complete): the subscription stops at
   * once, keeping its cursor at what was written, and the sink's owner ends it.
   */
  write(chunk: string): boolean | void;
  /**
   * Bytes this sink has handed to its connection (its transport's framing included, before any
   * compression): what the transport meter and the stream's log line count, measured once.
   */
  readonly bytesWritten: number;
  /** Bytes accepted by `write` that the kernel has not taken yet. */
  bufferedBytes(): number;
  /** Resolves when the buffer has drained, or the connection closed. */
  waitDrain(): Promise<void>;
  /** Keeps an idle connection alive through proxies (an SSE comment, an NDJSON blank line). */
  heartbeat(): void;
  /** Ends the stream, telling the client why when `error` is given. */
  end(error?: RillError): void;
}

/**
 * Told to a subscriber when an exact resume is impossible, before the stream continues:
 * - `retention`: events `missing.from..missing.to` were dropped by retention before it read them;
 * - `epoch`: the topic's log was recreated; the old cursor means nothing in the new epoch, and the
 *   stream continues from the start of the new log;
 * - `ahead`: the cursor is past the topic's head (a cursor from elsewhere, or a log restored from
 *   an older copy); the stream continues after the current head.
 */
export interface ResetNotice {
  topic: string;
  reason: 'retention' | 'epoch' | 'ahead' | 'deleted';
  /** The epoch the stream continues in. */
  epoch: string;
  /** The stream continues with events after this seq. */
  seq: number;
  /** For `retention`: the seqs that are gone. */
  missing?: { from: number; to: number };
  /** For `epoch`: the epoch of the cursor. For `ahead`: the seq of the cursor. */
  cursorEpoch?: string;
  cursorSeq?: number;
}
