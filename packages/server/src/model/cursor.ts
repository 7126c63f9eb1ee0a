import { RillError } from './errors.js';
import { isTopic } from './topic.js';

/**
 * Cursors: where a consumer stands.
 *
 * ```
 * cursor   = part *( "," part )
 * part     = topic ":" epoch ":" seq     ; last seq seen in that topic, in that epoch
 *          / "@" ms                       ; watermark: topics not listed resume from this time
 * ```
 *
 * An event's own `id` is the one-part cursor `topic:epoch:seq`, so it resumes any stream that
 * includes its topic. On a multi-topic or pattern stream the SSE `id:` lists every topic of the
 * subscription (Wikimedia EventStreams does the same with partition offsets), because a browser's
 * native `EventSource` only sends back the last `id:` it saw. When a subscription spans more topics
 * than a cursor may list, the least recently advanced ones are dropped from it and the watermark
 * (the oldest time among them) lets them resume by time instead: at-least-once, never a loss.
 *
 * Topic names cannot contain `:` `,` or `@`, epochs are alphanumeric, so the grammar needs no
 * escaping and never contains CR, LF or NUL (safe in an SSE `id:` line and in a header).
 */

/** Longest cursor accepted from a client, in characters. */
export const DEFAULT_MAX_CURSOR_LENGTH = 16 * 1024;
/** Most topics one cursor lists before falling back to a watermark for the rest. */
export const DEFAULT_MAX_CURSOR_TOPICS = 100;

const EPOCH_RE = /^[A-Za-z0-9]{1,32}$/;
const UINT_RE = /^(?:0|[1-9][0-9]{0,15})$/;

export interface Position {
  epoch: string;
  seq: number;
}

export interface Cursor {
  /** Per topic: the last seq the consumer has seen, in which epoch. */
  positions: Map<string, Position>;
  /** Topics not listed resume from events with `time >= watermark` (ms since epoch). */
  watermark?: number;
}

export function isEpoch(s: string): boolean {
  return EPOCH_RE.test(s);
}

/** `topic:epoch:seq`, the id of one event. */
export function encodePosition(topic: string, epoch: string, seq: number): string {
  return `${topic}:${epoch}:${seq}`;
}

export function encodeCursor(cursor: Cursor): string {
  const parts: string[] = [];
  for (const [topic, p] of cursor.positions) parts.push(`${topic}:${p.epoch}:${p.seq}`);
  if (cursor.watermark !== undefined) parts.push(`@${cursor.watermark}`);
  return parts.join(',');
}

/**
 * Parses a cursor. Throws `invalid_cursor` (HTTP 400) for anything malformed: a client-supplied
 * `Last-Event-ID` must never turn into a 500.
 */
export function decodeCursor(s: string, maxLength = DEFAULT_MAX_CURSOR_LENGTH): Cursor {
  if (s.length === 0) throw bad('empty cursor');
  if (s.length > maxLength) throw bad(`cursor longer than ${maxLength} characters`);
  const positions = new Map<string, Position>();
  let watermark: number | undefined;
  for (const part of s.split(',')) {
    if (part.startsWith('@')) {
      const ms = part.slice(1);
      if (watermark !== undefined || !UINT_RE.test(ms) || !Number.isSafeInteger(Number(ms))) {
        throw bad('bad watermark');
      }
      watermark = Number(ms);
      continue;
    }
    const fields = part.split(':');
    if (fields.length !== 3) throw bad('each part must be topic:epoch:seq');
    const [topic, epoch, seq] = fields as [string, string, string];
    if (!isTopic(topic)) throw bad('bad topic name');
    if (!EPOCH_RE.test(epoch)) throw bad('bad epoch');
    if (!UINT_RE.test(seq) || !Number.isSafeInteger(Number(seq))) throw bad('bad seq');
    if (positions.has(topic)) throw bad(`topic ${topic} listed twice`);
    positions.set(topic, { epoch, seq: Number(seq) });
  }
  const out: Cursor = { positions };
  if (watermark !== undefined) out.watermark = watermark;
  return out;
}

function bad(why: string): RillError {
  return new RillError('invalid_cursor', `Malformed cursor: ${why}`);
}
