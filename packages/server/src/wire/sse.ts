import type { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import { ephemeralJson, eventId, eventJson } from '../model/event.js';
import type { ResetNotice } from '../fanout/sink.js';
import { FrameCache } from './frame-cache.js';
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
 * Everything after the `id:` line of an event's frame. Of the event JSON's parts only `data` can
 * hold a raw line break (topic and id exclude them by grammar, type and key are JSON strings with
 * control characters escaped), so only `data` is searched: the whole JSON is not scanned (nor
 * flattened) per event on the replay path.
 */
function buildBody(ev: RillEvent): string {
  const d = ev.data;
  const json = eventJson(ev);
  const data = d.indexOf('\n') === -1 && d.indexOf('\r') === -1 ? `data: ${json}\n` : sseData(json);
  return (ev.type === undefined ? '' : `event: ${ev.type}\n`) + data + '\n';
}

/**
 * An event's frame, shared through a {@link FrameCache} by the subscribers one flush hands it
 * to: with `id === null` (single-topic streams) the whole frame, otherwise (a multi-topic cursor
 * per subscriber) the part after the `id:` line.
 *
 * A miss builds the frame straight from the event, without filling the body or event-JSON caches
 * on the way: on the replay path every event is a miss (each subscriber reads its own pages), and
 * three cache fills per event cost it about a tenth of its framing time.
 */
export function sseEventFrame(ev: RillEvent, id: string | null): string {
  if (id !== null) return `id: ${id}\n${bodies.get(ev) ?? bodies.set(ev, buildBody(ev))}`;
  return frames.get(ev) ?? frames.set(ev, `id: ${eventId(ev)}\n${buildBody(ev)}`);
}

/**
 * An ephemeral event's frame: no `id:` line, so a browser's Last-Event-ID (and the cursor it
 * resumes from) stays at the last stored event.
 */
export function sseEphemeralFrame(ev: EphemeralEvent): string {
  return (ev.type === undefined ? '' : `event: ${ev.type}\n`) + sseData(ephemeralJson(ev)) + '\n';
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
    ephemeral: sseEphemeralFrame,
    error: sseErrorFrame,
    heartbeat: ':\n\n',
  };
}
