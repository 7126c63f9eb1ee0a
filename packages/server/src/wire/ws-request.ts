/**
 * The requests a `rill.v1` WebSocket client sends, read from a text message into a typed
 * {@link WsRequest}, or refused with the catalogue error to answer (docs/protocol.md § WebSocket).
 * Pure: no socket, no session state. What depends on the connection (how many subscriptions it
 * has, whether the server is closing, which `sub` ids exist) is checked by the session after this.
 *
 * The checks run in a fixed order and the first failure is the answer, so a message with several
 * faults always gets the same error: the message's shape (`op`, `id`, known fields), then the op's
 * fields in the order they are listed below.
 */
import type { Cursor } from '../model/cursor.js';
import { RillError } from '../model/errors.js';
import type { EventInput, EventLimits } from '../model/event.js';
import { parseEventInput } from '../model/event.js';
import { assertTopic } from '../model/topic.js';
import type { StartSpec } from '../fanout/subscription.js';
import { parseResumeCursor, parseStart, parseTopicsParam } from './subscribe-params.js';
import type { RequestId } from './ws.js';

export type { RequestId };

/** Longest string `id`. */
export const MAX_ID_LENGTH = 256;

/**
 * The fields each op may carry: any other field is refused, so a misspelt one is not ignored. A
 * Map, not an object literal: an op named like an `Object.prototype` member (`constructor`,
 * `toString`) must be an unknown op, not found on the prototype. docs/asyncapi.yaml lists the same
 * fields per op (asyncapi.unit.test.ts checks).
 */
export const WS_REQUEST_FIELDS: ReadonlyMap<string, ReadonlySet<string>> = new Map([
  ['subscribe', new Set(['op', 'id', 'topics', 'from', 'since', 'cursor', 'presence'])],
  ['presence', new Set(['op', 'id', 'topic', 'after', 'limit', 'count'])],
  ['unsubscribe', new Set(['op', 'id', 'sub'])],
  ['publish', new Set(['op', 'id', 'topic', 'type', 'key', 'data', 'trace', 'ephemeral'])],
  ['ping', new Set(['op', 'id'])],
  ['auth', new Set(['op', 'id', 'token'])],
]);

/**
 * Longest `token` an `auth` message may carry, in characters: far above any JWT or API key a
 * server verifies (an identity provider's token with many claims is a few KiB).
 */
export const MAX_TOKEN_LENGTH = 16 * 1024;

/** The limits a request is checked against (the server's `limits`). */
export interface WsRequestLimits extends EventLimits {
  maxPatternsPerSubscription: number;
  maxCursorLength: number;
}

export interface WsSubscribe {
  op: 'subscribe';
  id: RequestId;
  /** Validated, de-duplicated topic names and patterns. */
  patterns: string[];
  /** Where topics the cursor does not list start. */
  start: StartSpec;
  cursor: Cursor | undefined;
  /** Whether the subscription also carries its topics' joins and leaves. */
  presence: boolean;
}

/** A presence query: a page of members (`after`, `limit`) or, with `count`, the numbers only. */
export interface WsPresence {
  op: 'presence';
  id: RequestId;
  topic: string;
  after: string | undefined;
  limit: number | undefined;
  count: boolean;
}

export interface WsUnsubscribe {
  op: 'unsubscribe';
  id: RequestId;
  /** The subscription id a `subscribed` reply gave (whether it exists is the session's check). */
  sub: string;
}

export interface WsPublish {
  op: 'publish';
  id: RequestId;
  topic: string;
  event: EventInput;
}

export interface WsPing {
  op: 'ping';
  id: RequestId;
}

/**
 * Authenticates the connection (the first time, when its upgrade carried no token) or refreshes
 * its credentials. Whether the token is valid is the session's check.
 */
export interface WsAuth {
  op: 'auth';
  id: RequestId;
  token: string;
}

export type WsRequest = WsSubscribe | WsUnsubscribe | WsPublish | WsPing | WsAuth | WsPresence;

/**
 * A refused message: the error to answer with, and the message's `id` when it had a valid one (the
 * error reply then carries it, so the client can match it to its request).
 */
export interface WsRequestError {
  error: RillError;
  id?: RequestId;
}

/**
 * Reads one text message. Never throws: a refusal is returned as a {@link WsRequestError}; anything
 * unexpected thrown while checking becomes an `internal` error whose `cause` is what was thrown.
 */
export function parseWsRequest(text: string, limits: WsRequestLimits): WsRequest | WsRequestError {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    return { error: new RillError('invalid_message', 'Message is not valid JSON') };
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    return {
      error: new RillError('invalid_message', 'A message must be a JSON object with "op" and "id"'),
    };
  }
  const m = msg as Record<string, unknown>;
  const id = requestId(m.id);
  try {
    return parseFields(m, id, limits);
  } catch (err) {
    const error =
      err instanceof RillError ? err : new RillError('internal', 'Internal error', { cause: err });
    return id === undefined ? { error } : { error, id };
  }
}

/** A valid `id`: a string of 1 to {@link MAX_ID_LENGTH} characters, or a finite number. */
function requestId(raw: unknown): RequestId | undefined {
  if (typeof raw === 'string' && raw.length > 0 && raw.length <= MAX_ID_LENGTH) return raw;
  if (typeof raw === 'number' && Number.isFinite(raw)) return raw;
  return undefined;
}

/** The checks after the message is known to be an object; throws the first failure. */
function parseFields(
  m: Record<string, unknown>,
  id: RequestId | undefined,
  limits: WsRequestLimits,
): WsRequest {
  if (typeof m.op !== 'string') {
    throw new RillError('invalid_message', 'A message must have an "op" string');
  }
  const allowed = WS_REQUEST_FIELDS.get(m.op);
  if (!allowed) {
    throw new RillError(
      'unknown_op',
      `Unknown op ${JSON.stringify(m.op.slice(0, 64))}: use auth, subscribe, unsubscribe, publish, presence or ping`,
    );
  }
  if (id === undefined) {
    throw new RillError(
      'invalid_message',
      `"id" is required: a string of 1-${MAX_ID_LENGTH} characters or a number, echoed in the reply`,
    );
  }
  for (const k of Object.keys(m)) {
    if (!allowed.has(k)) {
      throw new RillError(
        'invalid_message',
        `Unknown field ${JSON.stringify(k.slice(0, 64))} in ${m.op}: allowed are ${[...allowed].join(', ')}`,
      );
    }
  }
  switch (m.op) {
    case 'subscribe':
      return parseSubscribe(m, id, limits);
    case 'unsubscribe':
      if (typeof m.sub !== 'string') {
        throw new RillError('invalid_message', '"sub" must be the id a subscribed reply gave');
      }
      return { op: 'unsubscribe', id, sub: m.sub };
    case 'publish':
      return parsePublish(m, id, limits);
    case 'presence':
      return parsePresence(m, id);
    case 'auth':
      if (typeof m.token !== 'string' || m.token === '' || m.token.length > MAX_TOKEN_LENGTH) {
        throw new RillError(
          'invalid_message',
          `"token" must be a JWT or API key (1-${MAX_TOKEN_LENGTH} characters)`,
        );
      }
      return { op: 'auth', id, token: m.token };
    default:
      return { op: 'ping', id };
  }
}

/** `topics`, then `from` and `since`, then `cursor`. */
function parseSubscribe(
  m: Record<string, unknown>,
  id: RequestId,
  limits: WsRequestLimits,
): WsSubscribe {
  if (!Array.isArray(m.topics) || !m.topics.every((t): t is string => typeof t === 'string')) {
    throw new RillError('invalid_message', '"topics" must be an array of topic names or patterns');
  }
  const patterns = parseTopicsParam(m.topics as string[], limits.maxPatternsPerSubscription);
  const start = parseStart({
    from: startParam(m.from, 'from'),
    since: startParam(m.since, 'since'),
  });
  if (m.cursor !== undefined && typeof m.cursor !== 'string') {
    throw new RillError('invalid_message', '"cursor" must be a string');
  }
  const cursor = parseResumeCursor(undefined, m.cursor, limits.maxCursorLength);
  if (m.presence !== undefined && typeof m.presence !== 'boolean') {
    throw new RillError('invalid_message', '"presence" must be true or false');
  }
  return { op: 'subscribe', id, patterns, start, cursor, presence: m.presence === true };
}

/** `topic`, then `after`, `limit` and `count`. */
function parsePresence(m: Record<string, unknown>, id: RequestId): WsPresence {
  if (typeof m.topic !== 'string') {
    throw new RillError('invalid_message', '"topic" must be a topic name');
  }
  const topic = assertTopic(m.topic);
  if (m.after !== undefined && typeof m.after !== 'string') {
    throw new RillError('invalid_message', '"after" must be the sub a page ended with');
  }
  if (
    m.limit !== undefined &&
    (typeof m.limit !== 'number' || !Number.isSafeInteger(m.limit) || m.limit < 1)
  ) {
    throw new RillError('invalid_parameter', '"limit" must be a positive integer');
  }
  if (m.count !== undefined && typeof m.count !== 'boolean') {
    throw new RillError('invalid_message', '"count" must be true or false');
  }
  return {
    op: 'presence',
    id,
    topic,
    after: m.after as string | undefined,
    limit: m.limit as number | undefined,
    count: m.count === true,
  };
}

/**
 * `from`/`since` as the query-string text {@link parseStart} reads, so both transports share one
 * rule; a number must be a non-negative integer (`null` is the same as absent).
 */
function startParam(v: unknown, name: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return String(v);
  throw new RillError('invalid_parameter', `"${name}" must be a string or a non-negative integer`);
}

/** `topic`, then the event (`type`, `key`, `data`, `trace`) through the one event validator. */
function parsePublish(
  m: Record<string, unknown>,
  id: RequestId,
  limits: WsRequestLimits,
): WsPublish {
  if (typeof m.topic !== 'string') {
    throw new RillError('invalid_message', '"topic" must be a topic name');
  }
  const topic = assertTopic(m.topic);
  const raw: Record<string, unknown> = {};
  if (m.type !== undefined) raw.type = m.type;
  if (m.key !== undefined) raw.key = m.key;
  if ('data' in m) raw.data = m.data;
  if (m.trace !== undefined) raw.trace = m.trace;
  if (m.ephemeral !== undefined) raw.ephemeral = m.ephemeral;
  return { op: 'publish', id, topic, event: parseEventInput(raw, limits) };
}
