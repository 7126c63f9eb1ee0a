import { encodePosition } from './cursor.js';
import { RillError } from './errors.js';
import { parseTraceContext, traceJson, type TraceContext } from './trace.js';

/** Largest event accepted by default: `data` as JSON plus `type` and `key`, in bytes. */
export const DEFAULT_MAX_EVENT_BYTES = 64 * 1024;
/** Longest `type`, in characters. */
export const MAX_TYPE_LENGTH = 200;
/** Longest idempotency `key`, in characters. */
export const MAX_KEY_LENGTH = 256;
/**
 * Deepest nesting of arrays and objects in an event's `data` by default (`1` is depth 0, `{}` and
 * `[]` depth 1). Every transport wraps `data` in at most two more levels (the event object, and a
 * long-poll or history page around it), so 64 keeps every delivered document within Ruby's default
 * parser limit (100) and serde_json's (128), far below where recursive encoders run out of stack.
 */
export const DEFAULT_MAX_JSON_DEPTH = 64;

/** The limits {@link parseEventInput} enforces (`config.limits` has them). */
export interface EventLimits {
  maxEventBytes: number;
  maxJsonDepth: number;
}

/**
 * Event types a publisher may not use: the server's own SSE control frames (`error`, `reset`) and
 * everything under `rill.`, kept for future control frames.
 */
export function isReservedType(type: string): boolean {
  return type === 'error' || type === 'reset' || type.startsWith('rill.');
}

/** What a publisher sends: `data` is already JSON text (validated). */
export interface EventInput {
  /**
   * `ephemeral: true` in the published event: delivered live only, never stored. The publish
   * routes act on it; engines never see it set.
   */
  ephemeral?: true;
  type?: string;
  key?: string;
  /** JSON text of the payload. */
  data: string;
  /** The publisher's W3C trace context (model/trace.ts), when it sent a valid one. */
  trace?: TraceContext;
}

/**
 * A stored event as engines return it. `data` stays JSON text end to end, so the log and every
 * transport reuse the publisher's bytes instead of re-serializing them.
 *
 * Nothing is ever cached on it: an engine may keep the very object for as long as retention keeps
 * the event (the memory engine does), so a cache here would grow the log several times over. The
 * wire modules keep their frames in small caches of their own (wire/frame-cache.ts).
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
  /** The publisher's W3C trace context, delivered as the event's `trace`. */
  readonly trace?: TraceContext;
}

/**
 * An ephemeral event: handed to the topic's live subscribers and forgotten. No seq, no epoch, no
 * key: nothing can resume to it or deduplicate it.
 */
export interface EphemeralEvent {
  readonly topic: string;
  /** Server receive time, ms since the Unix epoch. */
  readonly time: number;
  readonly type?: string;
  /** JSON text of the payload. */
  readonly data: string;
  readonly trace?: TraceContext;
}

/** The wire JSON of an ephemeral event: `ephemeral: true` and no seq, id or key. */
export function ephemeralJson(ev: EphemeralEvent): string {
  let s = `{"topic":"${ev.topic}","ephemeral":true`;
  if (ev.type !== undefined) s += `,"type":${JSON.stringify(ev.type)}`;
  s += `,"time":${ev.time}`;
  if (ev.trace !== undefined) s += `,"trace":${traceJson(ev.trace)}`;
  s += `,"data":${ev.data}}`;
  return s;
}

// C0 controls, DEL, C1 controls (NEL among them) and the Unicode line/paragraph separators: none
// may reach an SSE field, an NDJSON line or a log.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** A UTF-16 surrogate not part of a pair: a `u` regex reads a pair as one code point. */
const LONE_SURROGATE_RE = /\p{Cs}/u;

/** Characters valid in JSON strings that some line splitters take for line ends. */
const LINE_SEP_RE = /[\u0085\u2028\u2029]/;
const LINE_SEP_ALL_RE = /[\u0085\u2028\u2029]/g;

/** `\u0085`, `\u2028` and `\u2029` in JSON text escaped; the JSON value is unchanged. */
export function escapeLineSeparators(json: string): string {
  return LINE_SEP_RE.test(json)
    ? json.replace(LINE_SEP_ALL_RE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    : json;
}

/**
 * Checks a parsed JSON value before it is stored, whatever path it came by (HTTP JSON, NDJSON,
 * WebSocket): arrays and objects nested at most `maxDepth` deep (`json_too_deep`), no string or
 * member name with a lone surrogate (not representable in UTF-8; `invalid_event`), and no member
 * that pollutes prototypes when a client merges the object: `__proto__`, or `constructor` holding
 * a `prototype` (the members Fastify's JSON parser refuses; `invalid_event`). Iterative, so no
 * depth can exhaust the stack.
 */
export function checkJsonValue(value: unknown, maxDepth: number, where = ''): void {
  if (typeof value !== 'object' || value === null) {
    if (typeof value === 'string') checkString(value, 'a string', where);
    return;
  }
  const stack: Array<{ v: object; depth: number }> = [{ v: value, depth: 1 }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { v, depth } = item;
    if (depth > maxDepth) {
      throw new RillError(
        'json_too_deep',
        `Event data is nested more than ${maxDepth} levels deep${where}`,
        { details: { limit: maxDepth } },
      );
    }
    if (Array.isArray(v)) {
      for (const x of v as unknown[]) {
        if (typeof x === 'object' && x !== null) stack.push({ v: x, depth: depth + 1 });
        else if (typeof x === 'string') checkString(x, 'a string', where);
      }
      continue;
    }
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const x = o[k];
      if (
        k === '__proto__' ||
        (k === 'constructor' &&
          typeof x === 'object' &&
          x !== null &&
          Object.prototype.hasOwnProperty.call(x, 'prototype'))
      ) {
        throw new RillError(
          'invalid_event',
          `Event data must not have a ${k === '__proto__' ? '"__proto__"' : '"constructor.prototype"'} member${where}`,
        );
      }
      checkString(k, 'a member name', where);
      if (typeof x === 'object' && x !== null) stack.push({ v: x, depth: depth + 1 });
      else if (typeof x === 'string') checkString(x, 'a string', where);
    }
  }
}

function checkString(s: string, what: string, where: string): void {
  if (LONE_SURROGATE_RE.test(s)) {
    throw new RillError(
      'invalid_event',
      `Event data has ${what} with a lone surrogate (not valid Unicode)${where}`,
    );
  }
}

/**
 * Validates one raw event object (parsed JSON) and returns its normalized form. Every publish path
 * (HTTP JSON, NDJSON, WebSocket) goes through here, so one event gets one verdict everywhere.
 * `dataText`, when given, is the publisher's own JSON text of `raw.data` (see {@link rawDataText}),
 * kept instead of serializing `raw.data` again.
 */
export function parseEventInput(
  raw: unknown,
  limits: EventLimits,
  index?: number,
  dataText?: string,
): EventInput {
  const { maxEventBytes } = limits;
  const where = index === undefined ? '' : ` (event ${index})`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new RillError(
      'invalid_event',
      `Each event must be a JSON object {type?, key?, data}${where}`,
    );
  }
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    if (k !== 'type' && k !== 'key' && k !== 'data' && k !== 'trace' && k !== 'ephemeral') {
      throw new RillError(
        'invalid_event',
        `Unknown event field ${JSON.stringify(k.slice(0, 64))}${where}: allowed are type, key, data, trace, ephemeral`,
      );
    }
  }
  if (!('data' in obj) || obj.data === undefined) {
    throw new RillError('invalid_event', `Event has no "data" field${where}`);
  }
  const out: EventInput = { data: '' };
  if (obj.ephemeral !== undefined && obj.ephemeral !== false) {
    if (obj.ephemeral !== true) {
      throw new RillError('invalid_event', `Event ephemeral must be true or false${where}`);
    }
    if (obj.key !== undefined) {
      throw new RillError(
        'invalid_event',
        `An ephemeral event has no key: it is never stored, so nothing can repeat it${where}`,
      );
    }
    out.ephemeral = true;
  }
  if (obj.type !== undefined) out.type = checkLabel('type', obj.type, MAX_TYPE_LENGTH, where);
  if (obj.key !== undefined) out.key = checkLabel('key', obj.key, MAX_KEY_LENGTH, where);
  if (obj.trace !== undefined && obj.trace !== null) {
    const trace = eventTrace(obj.trace, where);
    if (trace !== undefined) out.trace = trace;
  }
  checkJsonValue(obj.data, limits.maxJsonDepth, where);
  // Valid JSON either way, but some line splitters treat U+0085/U+2028/U+2029 as line ends.
  out.data = escapeLineSeparators(dataText ?? JSON.stringify(obj.data));
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

/**
 * An event's `trace` member: an object with `traceparent` (and `tracestate`) as W3C Trace Context
 * defines them; other members (a propagator's `baggage`) are ignored. A value that is not valid
 * Trace Context is ignored too, as the specification asks; only a `trace` that is not an object
 * is refused. Its size is bounded by the grammar (55 + 512 characters), apart from `maxEventBytes`.
 */
function eventTrace(v: unknown, where: string): TraceContext | undefined {
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw new RillError(
      'invalid_event',
      `Event trace must be an object {traceparent, tracestate?}${where}`,
    );
  }
  const t = v as Record<string, unknown>;
  return parseTraceContext(t.traceparent, t.tracestate);
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
      `Event ${name} must not contain control characters (CR, LF, NUL, NEL, U+2028, ...)${where}`,
    );
  }
  if (LONE_SURROGATE_RE.test(v)) {
    throw new RillError(
      'invalid_event',
      `Event ${name} must not contain a lone surrogate (not valid Unicode)${where}`,
    );
  }
  return v;
}

/** The id (one-topic cursor) of an event. */
export function eventId(ev: RillEvent): string {
  return encodePosition(ev.topic, ev.epoch, ev.seq);
}

/**
 * The wire JSON of an event. Hand-written rather than `JSON.stringify` because `data` is already
 * JSON text and this runs once per event on the fan-out path; topic and epoch never need escaping
 * (their alphabets exclude it). Not cached: the fan-out shares it through wire/frame-cache.ts.
 */
export function eventJson(ev: RillEvent): string {
  let s = `{"topic":"${ev.topic}","seq":${ev.seq},"id":"${eventId(ev)}"`;
  if (ev.type !== undefined) s += `,"type":${JSON.stringify(ev.type)}`;
  s += `,"time":${ev.time}`;
  if (ev.key !== undefined) s += `,"key":${JSON.stringify(ev.key)}`;
  if (ev.trace !== undefined) s += `,"trace":${traceJson(ev.trace)}`;
  s += `,"data":${ev.data}}`;
  return s;
}

/**
 * The text of the `data` member of `line`, a JSON object that `JSON.parse` has already accepted,
 * when it can be stored as is: the object has no whitespace outside strings, no escaped member
 * name and one `data` member. Otherwise (rare for machine-written NDJSON) `undefined`, and the
 * caller serializes the parsed value instead. Hand-written because it replaces a
 * `JSON.stringify` per event on the batched ingest path; it only has to find where values end,
 * since the text is known to be valid JSON.
 */
export function rawDataText(line: string): string | undefined {
  const n = line.length;
  if (n < 3 || line.charCodeAt(0) !== OPEN_BRACE || line.charCodeAt(n - 1) !== CLOSE_BRACE) {
    return undefined;
  }
  let found: string | undefined;
  let i = 1;
  for (;;) {
    if (line.charCodeAt(i) !== QUOTE) return undefined;
    const keyEnd = line.indexOf('"', i + 1);
    if (keyEnd < 0) return undefined;
    const key = line.slice(i + 1, keyEnd);
    if (key.includes('\\')) return undefined;
    i = keyEnd + 1;
    if (line.charCodeAt(i) !== COLON) return undefined;
    i++;
    const end = skipValue(line, i);
    if (end < 0) return undefined;
    if (key === 'data') {
      if (found !== undefined) return undefined;
      found = line.slice(i, end);
    }
    i = end;
    const c = line.charCodeAt(i);
    if (c === COMMA) i++;
    else return c === CLOSE_BRACE && i === n - 1 ? found : undefined;
  }
}

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;

/** Index just after the valid JSON value starting at `i`; -1 at whitespace outside strings. */
function skipValue(s: string, i: number): number {
  const n = s.length;
  let depth = 0;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c === QUOTE) {
      for (;;) {
        const q = s.indexOf('"', i + 1);
        if (q < 0) return -1;
        let b = q - 1;
        while (s.charCodeAt(b) === BACKSLASH) b--;
        i = q;
        // An even run of backslashes before the quote escapes only themselves.
        if ((q - 1 - b) % 2 === 0) break;
      }
      i++;
      if (depth === 0) return i;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
      i++;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (depth === 0) return i;
      depth--;
      i++;
      if (depth === 0) return i;
    } else if (c === COMMA || c === COLON) {
      if (depth === 0) return i;
      i++;
    } else if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) {
      return -1;
    } else {
      // Digits, signs, exponent and the letters of true, false, null.
      i++;
    }
  }
  return depth === 0 ? i : -1;
}
