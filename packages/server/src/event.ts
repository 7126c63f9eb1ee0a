import { encodePosition } from './cursor.js';
import { RillError } from './errors.js';

/** Largest event accepted by default: `data` as JSON plus `type` and `key`, in bytes. */
export const DEFAULT_MAX_EVENT_BYTES = 64 * 1024;
/** Longest `type`, in characters. */
export const MAX_TYPE_LENGTH = 200;
/** Longest idempotency `key`, in characters. */
export const MAX_KEY_LENGTH = 256;

/**
 * Event types a publisher may not use: the server's own SSE control frames (`error`, `reset`) and
 * everything under `rill.`, kept for future control frames.
 */
export function isReservedType(type: string): boolean {
  return type === 'error' || type === 'reset' || type.startsWith('rill.');
}

/** What a publisher sends: `data` is already JSON text (validated). */
export interface EventInput {
  type?: string;
  key?: string;
  /** JSON text of the payload. */
  data: string;
}

/**
 * A stored event as engines return it. `data` stays JSON text end to end, so the log and every
 * transport reuse the publisher's bytes instead of re-serializing them.
 */
export interface RillEvent {
  readonly topic: string;
  readonly seq: number;
  readonly epoch: string;
  /** Server receive time, ms since the Unix epoch; never decreases within a topic. */
  readonly time: number;
  readonly type?: string;
  readonly key?: string;
  /** JSON text of the payload. */
  readonly data: string;
  /** Cache of {@link eventJson}; filled on first use and shared by every subscriber. */
  json?: string;
}

// C0 controls, DEL and the Unicode line/paragraph separators: none may reach an SSE field or a log.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f\u2028\u2029]/;

const LINE_SEP_RE = /[\u2028\u2029]/;

/** Validates one raw event object from a request body and returns its normalized form. */
export function parseEventInput(raw: unknown, maxEventBytes: number, index?: number): EventInput {
  const where = index === undefined ? '' : ` (event ${index})`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new RillError(
      'invalid_event',
      `Each event must be a JSON object {type?, key?, data}${where}`,
    );
  }
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    if (k !== 'type' && k !== 'key' && k !== 'data') {
      throw new RillError(
        'invalid_event',
        `Unknown event field ${JSON.stringify(k.slice(0, 64))}${where}: allowed are type, key, data`,
      );
    }
  }
  if (!('data' in obj) || obj.data === undefined) {
    throw new RillError('invalid_event', `Event has no "data" field${where}`);
  }
  let data = JSON.stringify(obj.data);
  // Valid JSON either way, but some line splitters treat U+2028/U+2029 as line ends.
  if (LINE_SEP_RE.test(data))
    data = data.replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
  const out: EventInput = { data };
  if (obj.type !== undefined) out.type = checkLabel('type', obj.type, MAX_TYPE_LENGTH, where);
  if (obj.key !== undefined) out.key = checkLabel('key', obj.key, MAX_KEY_LENGTH, where);
  if (out.type !== undefined && isReservedType(out.type)) {
    throw new RillError(
      'invalid_event',
      `Event type ${JSON.stringify(out.type)} is reserved${where}: "error", "reset" and "rill.*" are the server's`,
    );
  }
  const size =
    Buffer.byteLength(out.data) + (out.type?.length ?? 0) * 3 + (out.key?.length ?? 0) * 3;
  if (size > maxEventBytes) {
    throw new RillError('event_too_large', `Event is larger than ${maxEventBytes} bytes${where}`, {
      details: { limit: maxEventBytes },
    });
  }
  return out;
}

function checkLabel(name: string, v: unknown, max: number, where: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) {
    throw new RillError(
      'invalid_event',
      `Event ${name} must be a string of 1-${max} characters${where}`,
    );
  }
  if (CONTROL_RE.test(v)) {
    throw new RillError(
      'invalid_event',
      `Event ${name} must not contain control characters (CR, LF, NUL, ...)${where}`,
    );
  }
  return v;
}

/** The id (one-topic cursor) of an event. */
export function eventId(ev: RillEvent): string {
  return encodePosition(ev.topic, ev.epoch, ev.seq);
}

/**
 * The wire JSON of an event, built once and cached on the event. Hand-written rather than
 * `JSON.stringify` because `data` is already JSON text and this runs once per event on the fan-out
 * path; topic and epoch never need escaping (their alphabets exclude it).
 */
export function eventJson(ev: RillEvent): string {
  let s = ev.json;
  if (s !== undefined) return s;
  s = `{"topic":"${ev.topic}","seq":${ev.seq},"id":"${eventId(ev)}"`;
  if (ev.type !== undefined) s += `,"type":${JSON.stringify(ev.type)}`;
  s += `,"time":${ev.time}`;
  if (ev.key !== undefined) s += `,"key":${JSON.stringify(ev.key)}`;
  s += `,"data":${ev.data}}`;
  ev.json = s;
  return s;
}
