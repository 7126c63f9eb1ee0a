/**
 * W3C Trace Context (`traceparent`, `tracestate`) as Rill carries it: taken from a publish (the
 * HTTP headers, or an event's `trace` member), stored with the event, and delivered to subscribers
 * as the event's `trace` so that a consumer can join the producer's trace.
 *
 * A value that does not follow the Trace Context grammar is ignored, as the specification asks of
 * a receiver, never an error: an invalid `traceparent` means no trace, an invalid `tracestate`
 * means a trace without it.
 */

/** An event's trace context; `traceparent` is always a valid version-00 header value. */
export interface TraceContext {
  readonly traceparent: string;
  readonly tracestate?: string;
}

/** Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`. */
export const TRACEPARENT_LENGTH = 55;
/** Longest `tracestate` kept (the length every tracer must be able to pass on); longer is ignored. */
export const MAX_TRACESTATE_LENGTH = 512;
/** Most list members in a `tracestate`. */
const MAX_TRACESTATE_MEMBERS = 32;

const TRACEPARENT_RE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);

// A list member: `key=value`. The key is a simple key or `tenant@system`; the value is printable
// ASCII without `,` and `=`, not ending in a space.
const KEY = '(?:[a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13})';
const VALUE = '[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{0,255}[\\x21-\\x2b\\x2d-\\x3c\\x3e-\\x7e]';
const MEMBER_RE = new RegExp(`^${KEY}=${VALUE}$`);

/** A `traceparent` value when it is a valid version-00 one (surrounding spaces allowed). */
export function parseTraceparent(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > TRACEPARENT_LENGTH + 16) return undefined;
  const v = value.trim();
  const m = TRACEPARENT_RE.exec(v);
  if (m === null || m[1] === ZERO_TRACE_ID || m[2] === ZERO_PARENT_ID) return undefined;
  return v;
}

/**
 * A `tracestate` value when it is a valid list of at most 32 members and 512 characters, with
 * its empty members and the spaces around commas dropped; undefined otherwise (or when empty).
 */
export function parseTracestate(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > MAX_TRACESTATE_LENGTH) return undefined;
  const members: string[] = [];
  for (const part of value.split(',')) {
    const m = part.trim();
    if (m === '') continue;
    if (!MEMBER_RE.test(m) || members.length === MAX_TRACESTATE_MEMBERS) return undefined;
    members.push(m);
  }
  return members.length === 0 ? undefined : members.join(',');
}

/** The trace context of a pair of values (headers, or an event's `trace` members), if valid. */
export function parseTraceContext(
  traceparent: unknown,
  tracestate: unknown,
): TraceContext | undefined {
  const parent = parseTraceparent(traceparent);
  if (parent === undefined) return undefined;
  const state = tracestate === undefined ? undefined : parseTracestate(tracestate);
  return state === undefined ? { traceparent: parent } : { traceparent: parent, tracestate: state };
}

/**
 * A trace context as one string, the form engines store: the `traceparent`, then `,` and the
 * `tracestate` when there is one (a `traceparent` has no comma, so the first one separates them).
 */
export function encodeTrace(t: TraceContext): string {
  return t.tracestate === undefined ? t.traceparent : `${t.traceparent},${t.tracestate}`;
}

/** {@link encodeTrace} read back; undefined for anything an engine did not store as one. */
export function decodeTrace(s: unknown): TraceContext | undefined {
  if (typeof s !== 'string' || s.length < TRACEPARENT_LENGTH) return undefined;
  const traceparent = s.slice(0, TRACEPARENT_LENGTH);
  if (s.length === TRACEPARENT_LENGTH) return { traceparent };
  return { traceparent, tracestate: s.slice(TRACEPARENT_LENGTH + 1) };
}

/** The `trace` member of an event's JSON: its strings need no escaping but `tracestate`'s. */
export function traceJson(t: TraceContext): string {
  return t.tracestate === undefined
    ? `{"traceparent":"${t.traceparent}"}`
    : `{"traceparent":"${t.traceparent}","tracestate":${JSON.stringify(t.tracestate)}}`;
}
