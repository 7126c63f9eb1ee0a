/**
 * What a subscription request says — its topics, where it starts, the cursor it resumes from — read
 * from the text a client sent. The same rules for every transport: a stream's or a long-poll's
 * query string and a WebSocket `subscribe` message (`ws-request.ts`) give the same verdict.
 */
import type { Cursor } from '../model/cursor.js';
import { decodeCursor } from '../model/cursor.js';
import { RillError } from '../model/errors.js';
import { assertPattern } from '../model/topic.js';
import type { StartSpec } from '../fanout/subscription.js';

/** Integers below this in `since` are seqs; at or above it, ms timestamps (2001-09-09 onward). */
export const SINCE_TIME_THRESHOLD = 1e12;

const UINT_RE = /^(?:0|[1-9][0-9]{0,15})$/;

const FROM_RE = /^(?:now|earliest|[1-9][0-9]{0,15})$/;

/**
 * `from` and `since` as JSON Schema `pattern`s (absent or empty allowed), for the API description
 * and request validation (`api/schemas.ts`). `from`'s is exactly {@link parseStart}'s rule;
 * `since`'s lets through any text starting with a date, which {@link parseStart} then parses.
 */
export const FROM_PATTERN = `^(?:${FROM_RE.source.slice(1, -1)})?$`;
export const SINCE_PATTERN = '^(?:0|[1-9][0-9]{0,15}|[0-9]{4}-[0-9]{2}-[0-9]{2}[\\s\\S]*)?$';

/**
 * `from=now|earliest|<seq>` (seq inclusive) and `since=<seq>|<ms>|<ISO time>` → a start. `since`
 * wins when both are given, but a malformed `from` is refused either way.
 */
export function parseStart(q: {
  from?: string | undefined;
  since?: string | undefined;
}): StartSpec {
  const from = q.from;
  const fromOk = from === undefined || from === '' || FROM_RE.test(from);
  if (q.since !== undefined && q.since !== '') {
    const s = q.since;
    let start: StartSpec;
    if (UINT_RE.test(s)) {
      const n = Number(s);
      start = n < SINCE_TIME_THRESHOLD ? { kind: 'after', seq: n } : { kind: 'time', time: n };
    } else {
      const t = Date.parse(s);
      if (!/^\d{4}-\d{2}-\d{2}/.test(s) || Number.isNaN(t)) {
        throw new RillError(
          'invalid_parameter',
          'since must be a seq, a time in ms, or an ISO 8601 time such as 2026-11-22T10:00:00Z',
        );
      }
      start = { kind: 'time', time: t };
    }
    if (!fromOk) throw badFrom();
    return start;
  }
  if (!fromOk) throw badFrom();
  if (from === undefined || from === '' || from === 'now') return { kind: 'now' };
  if (from === 'earliest') return { kind: 'earliest' };
  return { kind: 'after', seq: Number(from) - 1 };
}

function badFrom(): RillError {
  return new RillError('invalid_parameter', 'from must be now, earliest, or a seq (1 or more)');
}

/** The resume cursor from `Last-Event-ID` (header wins) or `lastEventId`; undefined if none. */
export function parseResumeCursor(
  header: string | string[] | undefined,
  query: string | undefined,
  maxLength: number,
): Cursor | undefined {
  const raw = (Array.isArray(header) ? header[0] : header) ?? query;
  if (raw === undefined || raw.trim() === '') return undefined;
  return decodeCursor(raw.trim(), maxLength);
}

/** `topics=a,b.*,c.>` (or repeated `topics=`) → validated, de-duplicated patterns. */
export function parseTopicsParam(raw: string | string[] | undefined, max: number): string[] {
  const list = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw])
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) {
    throw new RillError(
      'invalid_parameter',
      'topics is required: a comma-separated list of topics or patterns',
    );
  }
  const unique = [...new Set(list)];
  if (unique.length > max) {
    throw new RillError('too_many_topics', `At most ${max} topics or patterns per subscription`, {
      details: { limit: max },
    });
  }
  for (const p of unique) assertPattern(p);
  return unique;
}
