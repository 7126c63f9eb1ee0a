import type { RillError } from '../model/errors.js';
import type { RillEvent } from '../model/event.js';
import { escapeLineSeparators, eventId, eventJson } from '../model/event.js';
import type { ResetNotice } from '../fanout/sink.js';
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

type Cached = RillEvent & { ndjson?: string; ndjsonBody?: string };

const BREAK_RE = /[\r\n\u0085\u2028\u2029]/;

/** The event JSON without its opening brace, on one line; cached on the event. */
function body(ev: Cached): string {
  let b = ev.ndjsonBody;
  if (b === undefined) {
    b = eventJson(ev).slice(1);
    if (BREAK_RE.test(ev.data) || BREAK_RE.test(ev.type ?? '') || BREAK_RE.test(ev.key ?? '')) {
      b = escapeLineSeparators(b.replace(/[\r\n]/g, ' '));
    }
    ev.ndjsonBody = b;
  }
  return b;
}

export function ndjsonEventLine(ev: Cached, id: string | null): string {
  if (id !== null) return `{"cursor":"${id}",${body(ev)}\n`;
  let line = ev.ndjson;
  if (line === undefined) {
    line = `{"cursor":"${eventId(ev)}",${body(ev)}\n`;
    ev.ndjson = line;
  }
  return line;
}

export function ndjsonFraming(): Framing {
  return {
    contentType: 'application/x-ndjson; charset=utf-8',
    preamble: '',
    event: ndjsonEventLine,
    reset: (n: ResetNotice, id: string) => `{"reset":${JSON.stringify(n)},"cursor":"${id}"}\n`,
    error: (err: RillError) => `{"error":${errorPayload(err)}}\n`,
    heartbeat: '\n',
  };
}
