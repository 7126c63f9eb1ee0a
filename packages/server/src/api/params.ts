/**
 * Query-string parsing shared by the HTTP routes. What a subscription asks for (topics, start,
 * cursor) is read by `wire/subscribe-params.ts`, which the WebSocket request parser shares.
 */
import { RillError } from '../model/errors.js';

/** Query parameters that may be repeated, each occurrence adding to a list. */
export const LIST_PARAMS: ReadonlySet<string> = new Set(['topics']);

/**
 * The error for a query string that repeats a scalar parameter (`?limit=1&limit=2`), or null.
 * Every parameter outside {@link LIST_PARAMS} takes one value on every route: a repeat is refused
 * rather than one of the values silently winning.
 */
export function queryError(query: unknown): RillError | null {
  if (query === null || typeof query !== 'object') return null;
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value) && !LIST_PARAMS.has(name)) {
      return new RillError(
        'invalid_parameter',
        `Query parameter ${JSON.stringify(name.slice(0, 64))} is given ${value.length} times: it takes one value`,
      );
    }
  }
  return null;
}

/** The query of a subscription over HTTP: a stream (SSE, NDJSON) or a long-poll. */
export interface StreamQuery {
  topics?: string | string[];
  from?: string;
  since?: string;
  lastEventId?: string;
  cursor?: string;
  format?: string;
  /** `true`: the stream also carries its topics' joins and leaves (not on a long-poll). */
  presence?: string;
}

/** Longest `wait` a long-poll may ask for, in seconds. */
export const MAX_WAIT_SECONDS = 60;

/**
 * `wait=<seconds>`: 0–60 written in decimal (`25`, `0.5`; leading zeros allowed), as one regular
 * expression so that the API description's `pattern` (`api/schemas.ts`) is exactly this rule.
 */
const WAIT_RE = /^0*(?:[1-5]?[0-9](?:\.[0-9]+)?|60(?:\.0+)?)$/;
export const WAIT_PATTERN = `^(?:${WAIT_RE.source.slice(1, -1)})?$`;

/** `wait=<seconds>`, 0–60, decimals allowed; absent means 0 (answer at once). Returns ms. */
export function parseWait(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 0;
  if (!WAIT_RE.test(raw)) {
    throw new RillError('invalid_parameter', `wait must be 0 to ${MAX_WAIT_SECONDS} seconds`);
  }
  return Number(raw) * 1000;
}

const LIMIT_RE = /^[1-9][0-9]{0,6}$/;
/** {@link parseLimit}'s rule as a JSON Schema `pattern` (absent or empty is the default). */
export const LIMIT_PATTERN = `^(?:${LIMIT_RE.source.slice(1, -1)})?$`;

/** `limit=<n>`: `def` when absent, at most `max` (a larger one is lowered to it, not refused). */
export function parseLimit(raw: string | undefined, def: number, max: number): number {
  if (raw === undefined || raw === '') return def;
  if (!LIMIT_RE.test(raw)) {
    throw new RillError('invalid_parameter', `limit must be an integer from 1 to ${max}`);
  }
  return Math.min(Number(raw), max);
}
