import type { RillEvent } from '../model/event.js';
import { eventJson } from '../model/event.js';

/**
 * The last frame built for one event, keyed by the event object (and, for frames that depend on
 * it, one more string: a WebSocket subscription id).
 *
 * Why one entry is enough: a channel hands each event to all its live subscribers in a row before
 * the next event (fanout/channel.ts), so every subscriber after the first finds the frame here,
 * and the shared frame is the same string object for all of them, which is what lets the sockets'
 * one-entry chunk caches (net/http-sink.ts, net/ws-sink.ts) encode a chunk once for all. Replay
 * pages are read per subscriber, from engines that return new objects per read (all but the memory
 * engine), so a larger cache would rarely be hit there.
 *
 * Why not on the event: an engine may keep the very object for as long as retention keeps the
 * event (the memory engine does), and the frames of every format are several times its size.
 * Here each format holds one event's frame at a time, whatever the log holds.
 *
 * Hand-written (two fields compared by identity) because it sits on the fan-out hot path.
 */
export class FrameCache {
  private ev: RillEvent | null = null;
  private key = '';
  private frame = '';

  /** The frame stored for `ev` (and `key`), or undefined. */
  get(ev: RillEvent, key = ''): string | undefined {
    return ev === this.ev && key === this.key ? this.frame : undefined;
  }

  /** Stores `frame` as the one for `ev` (and `key`), replacing the previous entry; returns it. */
  set(ev: RillEvent, frame: string, key = ''): string {
    this.ev = ev;
    this.key = key;
    this.frame = frame;
    return frame;
  }
}

const json = new FrameCache();

/** {@link eventJson}, built once per event however many subscribers and formats it goes to. */
export function sharedEventJson(ev: RillEvent): string {
  return json.get(ev) ?? json.set(ev, eventJson(ev));
}
