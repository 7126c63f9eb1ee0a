import type { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import { ephemeralJson, escapeLineSeparators, eventId } from '../model/event.js';
import type { ResetNotice } from '../fanout/sink.js';
import { FrameCache, sharedEventJson } from './frame-cache.js';
import type { Framing } from './framing.js';
import { errorPayload } from './sse.js';

/**
 * Newline-delimited JSON framing (`application/x-ndjson`): one object per line.
 *
 * - event: the event object with a leading `"cursor"` — the position to resume from after it
 *   (the event's own id on a single-topic stream, every topic's position on a multi-topic one);
 * - `{"reset":{…},"cursor":"…"}` for a reset notice, `{"error":{…}}` before the server ends the
 *   stream on purpose, and an empty line as heartbeat.
 *
 * Every event stays on one line for any line splitter: U+0085, U+2028 and U+2029 are escaped at
 * publish, and again here (with raw CR/LF, JSON whitespace only an in-process engine append can
 * leave in `data`, turned into spaces) for events that did not come through a publish route.
 */

const BREAK_RE = /[\r\n\u0085\u2028\u2029]/;

const bodies = new FrameCache();
const lines = new FrameCache();

/** The event JSON without its opening brace, on one line; shared through a {@link FrameCache}. */
function body(ev: RillEvent): string {
  const cached = bodies.get(ev);
  if (cached !== undefined) return cached;
  let b = sharedEventJson(ev).slice(1);
  if (BREAK_RE.test(ev.data) || BREAK_RE.test(ev.type ?? '') || BREAK_RE.test(ev.key ?? '')) {
    b = escapeLineSeparators(b.replace(/[\r\n]/g, ' '));
  }
  return bodies.set(ev, b);
}

/**
 * An event's line. With `id === null` (single-topic streams) the line is the same for every
 * subscriber and shared through a {@link FrameCache}; a multi-topic cursor is per subscriber.
 */
export function ndjsonEventLine(ev: RillEvent, id: string | null): string {
  if (id !== null) return `{"cursor":"${id}",${body(ev)}\n`;
  return lines.get(ev) ?? lines.set(ev, `{"cursor":"${eventId(ev)}",${body(ev)}\n`);
}

/** An ephemeral event's line: no `"cursor"` (resuming never comes back to it). */
export function ndjsonEphemeralLine(ev: EphemeralEvent): string {
  let line = ephemeralJson(ev);
  if (BREAK_RE.test(ev.data) || BREAK_RE.test(ev.type ?? '')) {
    line = escapeLineSeparators(line.replace(/[\r\n]/g, ' '));
  }
  return line + '\n';
}

export function ndjsonFraming(): Framing {
  return {
    contentType: 'application/x-ndjson; charset=utf-8',
    preamble: '',
    event: ndjsonEventLine,
    ephemeral: ndjsonEphemeralLine,
    reset: (n: ResetNotice, id: string) => `{"reset":${JSON.stringify(n)},"cursor":"${id}"}\n`,
    error: (err: RillError) => `{"error":${errorPayload(err)}}\n`,
    heartbeat: '\n',
  };
}
