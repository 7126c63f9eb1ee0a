import type { ResetNotice } from '../fanout/sink.js';
import type { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import { ephemeralJson } from '../model/event.js';
import { FrameCache, sharedEventJson } from './frame-cache.js';

/**
 * WebSocket message framing (protocol `rill.v1`, docs/protocol.md § WebSocket): every message is
 * one JSON object with an `op`. An event travels as `{"op":"event","sub":"s1","event":<event
 * JSON>}` (plus `"cursor"` on multi-topic subscriptions), built by concatenation around the
 * event's shared JSON text, so fan-out never parses or re-serializes an event. The socket side
 * (one message per frame, one write per batch) is net/ws-sink.ts.
 */

/** A client-chosen request id, echoed in the reply. */
export type RequestId = string | number;

/**
 * Ends each frame inside the hub's coalesced chunk so the sink can send one WebSocket message per
 * frame. NUL can never occur in JSON text (raw control characters are invalid in strings and are
 * not whitespace), unlike `\n`, which a pretty-printed `data` would contain.
 */
export const FRAME_END = '\u0000';

/** The prefixes made so far, by sub id: at most {@link MAX_PREFIXES}. */
const prefixes = new Map<string, string>();
const MAX_PREFIXES = 1024;

/**
 * What every event message of subscription `sub` starts with; made once per subscription. The
 * same string object for every subscription with that id (`s1` on most connections), so the
 * shared-frame check in {@link wsEventFrame} compares pointers, not characters, per delivery.
 */
export function wsEventPrefix(sub: string): string {
  let prefix = prefixes.get(sub);
  if (prefix === undefined) {
    // `sub` ids are server-made (`s` + digits): nothing to escape.
    prefix = `{"op":"event","sub":"${sub}",`;
    if (prefixes.size < MAX_PREFIXES) prefixes.set(sub, prefix);
  }
  return prefix;
}

const frames = new FrameCache();

/**
 * An event message, FRAME_END-terminated, for the subscription whose {@link wsEventPrefix} is
 * `prefix`. With `id === null` (single-topic subscriptions) the message is shared whenever the sub
 * ids match, which is the common case (`s1` on every connection holding one subscription), so a
 * fan-out to N sockets builds it once instead of N times; a multi-topic cursor is per subscriber.
 */
export function wsEventFrame(prefix: string, ev: RillEvent, id: string | null): string {
  if (id !== null) return `${prefix}"cursor":"${id}","event":${sharedEventJson(ev)}}${FRAME_END}`;
  return (
    frames.get(ev, prefix) ??
    frames.set(ev, `${prefix}"event":${sharedEventJson(ev)}}${FRAME_END}`, prefix)
  );
}

/** An ephemeral event message, FRAME_END-terminated: `"ephemeral":true` in the event, no cursor. */
export function wsEphemeralFrame(prefix: string, ev: EphemeralEvent): string {
  return `${prefix}"event":${ephemeralJson(ev)}}${FRAME_END}`;
}

export function wsResetFrame(sub: string, n: ResetNotice, cursor: string): string {
  return JSON.stringify({ op: 'reset', sub, ...n, cursor });
}

/** A WebSocket `error` message: the error's one encoding ({@link RillError.body}). */
export function wsErrorFrame(err: RillError, ref: { id?: RequestId; sub?: string } = {}): string {
  return JSON.stringify({
    op: 'error',
    ...(ref.id === undefined ? {} : { id: ref.id }),
    ...(ref.sub === undefined ? {} : { sub: ref.sub }),
    error: err.body(),
  });
}
