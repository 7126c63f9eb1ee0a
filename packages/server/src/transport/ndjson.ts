import type { RillError } from '../errors.js';
import type { RillEvent } from '../event.js';
import { eventId, eventJson } from '../event.js';
import type { ResetNotice } from '../sink.js';
import type { Framing } from './http-sink.js';
import { errorPayload } from './sse.js';

/**
 * Newline-delimited JSON framing (`application/x-ndjson`): one object per line.
 *
 * - event: the event object with a leading `"cursor"` — the position to resume from after it
 *   (the event's own id on a single-topic stream, every topic's position on a multi-topic one);
 * - `{"reset":{…},"cursor":"…"}` for a reset notice, `{"error":{…}}` before the server ends the
 *   stream on purpose, and an empty line as heartbeat.
 *
 * Event JSON never holds a raw line break, and U+2028/U+2029 are escaped at publish, so every
 * event stays on one line for any line splitter.
 */

type Cached = RillEvent & { ndjson?: string };

export function ndjsonEventLine(ev: Cached, id: string | null): string {
  if (id !== null) return `{"cursor":"${id}",${eventJson(ev).slice(1)}\n`;
  let line = ev.ndjson;
  if (line === undefined) {
    line = `{"cursor":"${eventId(ev)}",${eventJson(ev).slice(1)}\n`;
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
