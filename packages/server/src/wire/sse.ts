import type { RillError } from '../model/errors.js';
import type { RillEvent } from '../model/event.js';
import { eventId } from '../model/event.js';
import type { ResetNotice } from '../fanout/sink.js';
import { FrameCache, sharedEventJson } from './frame-cache.js';
import type { Framing } from './framing.js';

/**
 * Server-Sent Events framing (WHATWG HTML §9.2). Each event is
 * `id: <cursor>` / `event: <type>` (when typed) / `data: <event JSON>`, blank line. The data is the
 * whole event object (topic, seq, id, type, time, key, data), the same bytes NDJSON and WebSocket
 * carry, so one serialization serves every transport.
 *
 * `id` and `event` can never break a frame: topic, epoch and seq have no line breaks by their
 * grammar, and `type` with CR, LF or NUL is rejected at publish.
 */

/** `data:` lines for arbitrary text: one field per line, whatever the line ending. */
export function sseData(text: string): string {
  if (text.indexOf('\n') === -1 && text.indexOf('\r') === -1) return `data: ${text}\n`;
  return text
    .split(/\r\n|\r|\n/)
    .map((line) => `data: ${line}\n`)
    .join('');
}

const bodies = new FrameCache();
const frames = new FrameCache();

/**
 * Everything after the `id:` line of an event's frame; shared through a {@link FrameCache}. Of
 * the event JSON's parts only `data` can hold a raw line break (topic and id exclude them by
 * grammar, type and key are JSON strings with control characters escaped), so only `data` is
 * searched: the whole JSON is not scanned (nor flattened) per event on the replay path.
 */
function body(ev: RillEvent): string {
  const cached = bodies.get(ev);
  if (cached !== undefined) return cached;
  const d = ev.data;
  const json = sharedEventJson(ev);
  const data = d.indexOf('\n') === -1 && d.indexOf('\r') === -1 ? `data: ${json}\n` : sseData(json);
  return bodies.set(ev, (ev.type === undefined ? '' : `event: ${ev.type}\n`) + data + '\n');
}

/**
 * An event's frame. With `id === null` (single-topic streams) the frame is the same for every
 * subscriber and shared through a {@link FrameCache}; a multi-topic cursor is per subscriber.
 */
export function sseEventFrame(ev: RillEvent, id: string | null): string {
  if (id !== null) return `id: ${id}\n${body(ev)}`;
  return frames.get(ev) ?? frames.set(ev, `id: ${eventId(ev)}\n${body(ev)}`);
}

export function sseResetFrame(n: ResetNotice, id: string): string {
  return `id: ${id}\nevent: reset\n${sseData(JSON.stringify(n))}\n`;
}

/** The error body shared by the streaming transports' error frames. */
export function errorPayload(err: RillError): string {
  return JSON.stringify(err.body());
}

export function sseErrorFrame(err: RillError): string {
  return `event: error\n${sseData(errorPayload(err))}\n`;
}

export function sseFraming(retryMs: number): Framing {
  return {
    contentType: 'text/event-stream; charset=utf-8',
    preamble: `retry: ${retryMs}\n\n`,
    event: sseEventFrame,
    reset: sseResetFrame,
    error: sseErrorFrame,
    heartbeat: ':\n\n',
  };
}
