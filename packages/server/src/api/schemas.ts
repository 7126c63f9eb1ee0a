/**
 * The JSON Schemas of the HTTP routes: what each route takes (path, query, headers, body) and
 * answers. They are the API description (`GET /v1/openapi.json`, `docs/openapi.json`, generated
 * from the routes by `@fastify/swagger`) and they validate requests (`api/validation.ts`).
 *
 * A request a schema refuses is answered with the same catalogue error the route's own parser
 * gives: every validated field comes with that parser as its `check`, which the error handler runs
 * on the refused value for the code and message (a field's schema never refuses what its check
 * accepts; `schemas.unit.test.ts` checks that as a property). What a schema cannot say exactly (a
 * cursor, a list of patterns, an event) it documents, and the route's parser decides.
 *
 * Nothing here depends on the configuration, so that every server with the same routes describes
 * them the same way: limits that are settings are named in the descriptions, not the schemas.
 */
import { z } from 'zod';
import type { FastifySchema } from 'fastify';
import { RetentionOverrideSchema } from '../config.js';
import { ERRORS, type ErrorCode } from '../model/errors.js';
import {
  assertPattern,
  assertTopic,
  assertTopicPrefix,
  MAX_TOPIC_LENGTH,
  PREFIX_PATTERN,
  SUBSCRIPTION_PATTERN,
  TOPIC_PATTERN,
} from '../model/topic.js';
import { MAX_KEY_LENGTH, MAX_TYPE_LENGTH } from '../model/event.js';
import {
  FROM_PATTERN,
  parseStart,
  parseTopicsParam,
  SINCE_PATTERN,
} from '../wire/subscribe-params.js';
import { LIMIT_PATTERN, MAX_WAIT_SECONDS, parseLimit, parseWait, WAIT_PATTERN } from './params.js';

export type JsonSchema = Record<string, unknown>;

/** A field's own parser: throws the catalogue error the route answers for a bad value. */
export type Check = (value: unknown) => void;

/** One request field: its schema, and the parser that names what is wrong with a refused value. */
export interface Field {
  schema: JsonSchema;
  check: Check;
}

/** The checks of a route's validated fields, by request part (`api/validation.ts` runs them). */
export interface RouteChecks {
  params?: Record<string, Check>;
  querystring?: Record<string, Check>;
  body?: Check;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The checks of the fields this route's schema validates. */
    checks?: RouteChecks;
  }
}

/** The tags the operations are grouped by, in the order the description lists them. */
export const TAGS = [
  { name: 'publish', description: 'Publishing events to a topic (HTTP JSON or NDJSON).' },
  { name: 'topics', description: 'Topic info, listings and history pages.' },
  {
    name: 'streams',
    description:
      'Subscriptions: SSE, NDJSON, long-polling and the WebSocket upgrade. The frames and messages are described in asyncapi.yaml.',
  },
  { name: 'presence', description: 'Who is subscribed to a topic.' },
  { name: 'admin', description: 'Topic administration and connections (the admin permission).' },
  { name: 'observability', description: 'Health, readiness, metrics and stats.' },
  { name: 'meta', description: 'The API index, this description and the dashboard.' },
] as const;
export type Tag = (typeof TAGS)[number]['name'];

/** A string-valued query field (every query parameter is text; none is coerced). */
export function text(description: string, extra: JsonSchema = {}): JsonSchema {
  return { type: 'string', description, ...extra };
}

export const asString = (v: unknown): string => (typeof v === 'string' ? v : String(v));

// ---------------------------------------------------------------------------------------------
// Fields

export const topicParam: Field = {
  schema: text(
    `A topic name: 1-${MAX_TOPIC_LENGTH} characters of [A-Za-z0-9_.~-], non-empty segments separated by "." (prices.BTC-USD).`,
    { minLength: 1, maxLength: MAX_TOPIC_LENGTH, pattern: TOPIC_PATTERN },
  ),
  check: (v) => assertTopic(asString(v)),
};

/** `limit`: at most `max` by default `def`; larger asks are lowered to the maximum, not refused. */
export function limitQuery(def: number, max: number, maxSetting?: string): Field {
  const most = maxSetting === undefined ? `${max}` : `${maxSetting} (default ${max})`;
  return {
    schema: text(
      `How many at most, 1 or more (default ${def}); more than ${most} is lowered to it.`,
      { pattern: LIMIT_PATTERN },
    ),
    check: (v) => parseLimit(asString(v), def, max),
  };
}

export const waitQuery: Field = {
  schema: text(
    `Seconds to wait for an event when there is none yet, 0-${MAX_WAIT_SECONDS}, decimals allowed (default 0: answer at once).`,
    { pattern: WAIT_PATTERN },
  ),
  check: (v) => parseWait(asString(v)),
};

export const fromQuery: Field = {
  schema: text(
    'Where to start when no cursor is given: now (default), earliest, or a seq (1 or more, inclusive). Ignored when since is given.',
    { pattern: FROM_PATTERN },
  ),
  check: (v) => parseStart({ from: asString(v) }),
};

export const sinceQuery: Field = {
  schema: text(
    'Start after a seq, or at a time: ms since the Unix epoch or ISO 8601 (2026-11-22T10:00:00Z).',
    { pattern: SINCE_PATTERN },
  ),
  check: (v) => parseStart({ since: asString(v) }),
};

/** A resume cursor, checked by its parser: its grammar is in docs/protocol.md § Cursors. */
export function cursorQuery(description: string): Field {
  return documented(
    text(`${description} (docs/protocol.md § Cursors; at most limits.maxCursorLength).`),
  );
}

/** `topics`: the one list parameter (repeated, or comma-separated); checked by its parser. */
export function topicsQuery(maxPatterns: number): Field {
  return {
    schema: {
      description:
        'Topics and patterns, comma-separated or repeated (a,b.*,c.>); at most limits.maxPatternsPerSubscription (default 100).',
      anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }],
    },
    check: (v) => parseTopicsParam(v as string | string[] | undefined, maxPatterns),
  };
}

export function prefixQuery(name: 'prefix' | 'after', description: string): Field {
  return {
    schema: text(description, { maxLength: MAX_TOPIC_LENGTH, pattern: PREFIX_PATTERN }),
    check: (v) => assertTopicPrefix(asString(v), name),
  };
}

export const patternQuery: Field = {
  schema: text('Only topics this pattern matches (chat.*, logs.>).', {
    maxLength: MAX_TOPIC_LENGTH,
    pattern: `^(?:${SUBSCRIPTION_PATTERN.slice(1, -1)})?$`,
  }),
  check: (v) => {
    const s = asString(v);
    if (s !== '') assertPattern(s);
  },
};

/** A field the route's own parser checks: documented here, not validated by the schema. */
export function documented(schema: JsonSchema): Field {
  return { schema, check: () => undefined };
}

// ---------------------------------------------------------------------------------------------
// Bodies

/** An event as a publisher sends it (`parseEventInput` in model/event.ts decides). */
export const EVENT_INPUT: JsonSchema = {
  $id: 'EventInput',
  type: 'object',
  description:
    'One event. Checked by the one event validator of every publish path (docs/protocol.md § Events).',
  required: ['data'],
  additionalProperties: false,
  properties: {
    type: {
      type: 'string',
      minLength: 1,
      maxLength: MAX_TYPE_LENGTH,
      description: 'No control characters; error, reset and rill.* are reserved.',
    },
    key: {
      type: 'string',
      minLength: 1,
      maxLength: MAX_KEY_LENGTH,
      description: 'Idempotency key: a repeat within the idempotency window is not stored again.',
    },
    data: { description: 'Any JSON value, at most limits.maxJsonDepth (default 64) deep.' },
    trace: {
      type: 'object',
      description: 'W3C trace context; invalid values are ignored.',
      properties: { traceparent: { type: 'string' }, tracestate: { type: 'string' } },
    },
    ephemeral: {
      type: 'boolean',
      description: 'true: delivered to live subscribers only, never stored (and no key).',
    },
  },
};

/** The retention override body, generated from the configuration's own schema. */
export const RETENTION_BODY: JsonSchema = (() => {
  const schema = z.toJSONSchema(RetentionOverrideSchema, { io: 'input' }) as JsonSchema;
  // The dialect is the document's (OpenAPI 3.1: JSON Schema 2020-12), not named per schema.
  delete schema.$schema;
  return {
    ...schema,
    description:
      'The override: maxEvents (a whole number), maxAge ("1h", "7d" or ms), maxBytes ("10MB" or bytes); 0 means unlimited.',
  };
})();

export const PURGE_BODY: JsonSchema = {
  type: 'object',
  description: 'One of before (drop the events before this seq) or beforeTime (before this time).',
  additionalProperties: false,
  properties: {
    before: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    beforeTime: {
      description: 'ISO 8601 time or ms since the Unix epoch.',
      anyOf: [{ type: 'string' }, { type: 'number', minimum: 0 }],
    },
  },
  oneOf: [{ required: ['before'] }, { required: ['beforeTime'] }],
};

// ---------------------------------------------------------------------------------------------
// Shared response schemas (`$id`s become `#/components/schemas/…`)

const int = { type: 'integer', minimum: 0 } as const;
const ref = (id: string): JsonSchema => ({ $ref: `${id}#` });

export const SHARED_SCHEMAS: JsonSchema[] = [
  EVENT_INPUT,
  {
    $id: 'Error',
    type: 'object',
    description: 'Every error answer: {"error": {...}} with a code of the catalogue.',
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message', 'retryable', 'closeCode'],
        properties: {
          code: { type: 'string', enum: Object.keys(ERRORS) },
          message: { type: 'string' },
          retryable: { type: 'boolean' },
          closeCode: { type: 'integer' },
          retryAfter: { type: 'integer', description: 'Seconds before retrying (Retry-After).' },
        },
        additionalProperties: true,
      },
    },
  },
  {
    $id: 'Event',
    type: 'object',
    required: ['topic', 'seq', 'id', 'time', 'data'],
    properties: {
      topic: { type: 'string' },
      seq: int,
      id: { type: 'string', description: 'The event’s cursor, topic:epoch:seq.' },
      type: { type: 'string' },
      time: { ...int, description: 'Server receive time, ms since the Unix epoch.' },
      key: { type: 'string' },
      trace: {
        type: 'object',
        properties: { traceparent: { type: 'string' }, tracestate: { type: 'string' } },
      },
      data: {},
      cursor: { type: 'string', description: 'On multi-topic answers: the cursor after it.' },
    },
  },
  {
    $id: 'Reset',
    type: 'object',
    description:
      'A reset notice: what a cursor asked for is gone (docs/protocol.md § Reset notice).',
    required: ['reason'],
    properties: {
      reason: { type: 'string', enum: ['retention', 'epoch', 'ahead', 'deleted'] },
      topic: { type: 'string' },
      epoch: { type: 'string' },
      cursorEpoch: { type: 'string' },
      seq: int,
      missing: { type: 'object', properties: { from: int, to: int } },
    },
    additionalProperties: true,
  },
  {
    $id: 'Retention',
    type: 'object',
    required: ['maxEvents', 'maxAgeMs', 'maxBytes'],
    description: 'Retention limits in force (0: unlimited).',
    properties: { maxEvents: int, maxAgeMs: int, maxBytes: int },
  },
  {
    $id: 'Topic',
    type: 'object',
    required: ['topic', 'epoch', 'firstSeq', 'lastSeq', 'count', 'created', 'lastTime', 'rate'],
    properties: {
      topic: { type: 'string' },
      epoch: { type: 'string' },
      firstSeq: int,
      lastSeq: int,
      count: int,
      created: int,
      lastTime: { type: ['integer', 'null'] },
      rate: { type: 'number', description: 'Events per second over the last minute.' },
      retention: ref('Retention'),
    },
  },
  {
    $id: 'Presence',
    type: 'object',
    required: ['topic', 'count', 'anonymous'],
    properties: {
      topic: { type: 'string' },
      count: int,
      anonymous: { ...int, description: 'Connections of anonymous subscribers: counted only.' },
      members: {
        type: 'array',
        items: {
          type: 'object',
          required: ['sub'],
          properties: { sub: { type: 'string' }, info: { type: 'object' } },
          additionalProperties: true,
        },
      },
      next: { type: ['string', 'null'] },
    },
  },
];

/** A response described by a shared schema. */
export function answer(description: string, id: string): JsonSchema {
  return { description, ...ref(id) };
}

/** A JSON response with an inline schema. */
export function json(description: string, schema: JsonSchema): JsonSchema {
  return { description, ...schema };
}

/** A response whose body is text of `type` (a stream, a page, metrics). */
export function textAnswer(
  description: string,
  types: string[],
  schema: JsonSchema = { type: 'string' },
): JsonSchema {
  return { description, content: Object.fromEntries(types.map((t) => [t, { schema }])) };
}

/**
 * The error answers a route may give, one per status, each naming its codes; `default` stands for
 * the ones every route may give (a malformed request, a Host not served, overload, internal).
 */
export function errors(...codes: ErrorCode[]): Record<string, JsonSchema> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of codes) {
    const s = ERRORS[c].status;
    byStatus.set(s, [...(byStatus.get(s) ?? []), c]);
  }
  const out: Record<string, JsonSchema> = {};
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    out[status] = answer(list.map((c) => `\`${c}\``).join(', '), 'Error');
  }
  out.default = answer(
    'Another error of the catalogue (docs/protocol.md § Errors), such as `bad_request`, `host_not_allowed`, `request_timeout` or `internal`.',
    'Error',
  );
  return out;
}

/** The errors of every authenticated `/v1` route. */
export const AUTH_ERRORS: ErrorCode[] = ['unauthorized', 'token_expired', 'forbidden'];

// ---------------------------------------------------------------------------------------------
// Routes

export interface RouteSpec {
  summary: string;
  description?: string;
  tags: Tag[];
  operationId: string;
  params?: Record<string, Field>;
  querystring?: Record<string, Field>;
  /** Query fields that must be given. */
  required?: string[];
  headers?: Record<string, JsonSchema>;
  /** A JSON body and its check, or a body the route parses itself (`validated: false`). */
  body?: { schema: JsonSchema; check?: Check; consumes?: Record<string, JsonSchema> };
  response: Record<string, JsonSchema>;
  /** Open to anyone, whatever the authentication (`[]`), or as the document's default. */
  security?: [];
  hide?: boolean;
}

/** A route's options: its schema (the description and the validation) and its fields' checks. */
export function route(spec: RouteSpec): { schema: FastifySchema; config: { checks: RouteChecks } } {
  const checks: RouteChecks = {};
  const schema: FastifySchema & Record<string, unknown> = {
    summary: spec.summary,
    tags: spec.tags,
    operationId: spec.operationId,
    response: spec.response,
  };
  if (spec.description !== undefined) schema.description = spec.description;
  if (spec.security !== undefined) schema.security = spec.security;
  if (spec.hide) schema.hide = true;
  if (spec.params) {
    schema.params = object(spec.params, Object.keys(spec.params));
    checks.params = checksOf(spec.params);
  }
  if (spec.querystring) {
    schema.querystring = object(spec.querystring, spec.required ?? []);
    checks.querystring = checksOf(spec.querystring);
  }
  if (spec.headers) {
    schema.headers = { type: 'object', properties: spec.headers };
  }
  if (spec.body) {
    schema.body = spec.body.consumes ? { content: spec.body.consumes } : spec.body.schema;
    if (spec.body.check) checks.body = spec.body.check;
  }
  return { schema, config: { checks } };
}

function object(fields: Record<string, Field>, required: string[]): JsonSchema {
  return {
    type: 'object',
    properties: Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, f.schema])),
    ...(required.length > 0 ? { required } : {}),
  };
}

function checksOf(fields: Record<string, Field>): Record<string, Check> {
  return Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, f.check]));
}
