import type { RillError } from '../model/errors.js';
import type { RillEvent } from '../model/event.js';
import type { Subscription } from './subscription.js';

/**
 * What the hub needs from a transport: framing and a byte pipe with backpressure. SSE, NDJSON
 * and WebSocket each implement it; the hub never knows which one it feeds.
 */
export interface Sink {
  /**
   * One event as wire bytes. `id` is the cursor to attach: `null` means the event's own id
   * (single-topic streams, where the frame can be shared by every subscriber and cached on the
   * event); a string is a multi-topic cursor that differs per subscriber.
   */
  frameEvent(ev: RillEvent, id: string | null): string;
  /** A reset notice (docs/protocol.md § Reset notice) with the cursor to resume from after it. */
  frameReset(notice: ResetNotice, id: string): string;
  /** Writes bytes; the hub coalesces frames so this is called at most once per tick. */
  write(chunk: string): void;
  /** Bytes accepted by `write` that the kernel has not taken yet. */
  bufferedBytes(): number;
  /** Resolves when the buffer has drained, or the connection closed. */
  waitDrain(): Promise<void>;
  /** Keeps an idle connection alive through proxies (an SSE comment, an NDJSON blank line). */
  heartbeat(): void;
  /** Ends the stream, telling the client why when `error` is given. */
  end(error?: RillError): void;
  /** Optional: told which subscription it feeds, when the subscription is created. */
  attached?(sub: Subscription): void;
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
  reason: 'retention' | 'epoch' | 'ahead';
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
