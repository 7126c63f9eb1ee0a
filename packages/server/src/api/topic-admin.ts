import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RetentionOverride } from '../engine/engine.js';
import { ConfigError, parseDuration, parseSize } from '../config.js';
import { RillError } from '../model/errors.js';
import { assertTopic } from '../model/topic.js';
import { checkAdmin, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { type ErrorCode } from '../model/errors.js';
import {
  AUTH_ERRORS,
  errors,
  json,
  PURGE_BODY,
  RETENTION_BODY,
  route,
  topicParam,
  type JsonSchema,
  type RouteSpec,
} from './schemas.js';

const RETENTION_INFO = {
  type: 'object',
  required: ['topic', 'maxEvents', 'maxAgeMs', 'maxBytes', 'override'],
  properties: {
    topic: { type: 'string' },
    maxEvents: { type: 'integer', minimum: 0 },
    maxAgeMs: { type: 'integer', minimum: 0 },
    maxBytes: { type: 'integer', minimum: 0 },
    override: {
      type: ['object', 'null'],
      description: 'The topic’s override (null: none), in ms and bytes.',
      properties: {
        maxEvents: { type: 'integer', minimum: 0 },
        maxAgeMs: { type: 'integer', minimum: 0 },
        maxBytes: { type: 'integer', minimum: 0 },
      },
    },
  },
};

/** A topic administration route's schema: its topic, the admin permission, its answers. */
function adminSpec(
  spec: Pick<RouteSpec, 'summary' | 'description' | 'operationId' | 'body'>,
  ok: Record<string, JsonSchema>,
  codes: ErrorCode[] = [],
): RouteSpec {
  return {
    ...spec,
    tags: ['admin'],
    params: { topic: topicParam },
    response: {
      ...ok,
      ...errors('invalid_topic', ...codes, ...AUTH_ERRORS, 'topic_not_found', 'engine_unavailable'),
    },
  };
}

const retentionAnswer = { 200: json('The retention in force', RETENTION_INFO) };

/**
 * Topic administration (docs/protocol.md § Topic administration), for identities with the `admin`
 * permission (everyone on a server without authentication):
 *
 * - `DELETE /v1/topics/{topic}`: the log goes; live subscribers get a `deleted` notice, the next
 *   publish starts a new epoch;
 * - `POST /v1/topics/{topic}/purge` `{before: seq}` or `{beforeTime: ISO time | ms}`: drops the
 *   events before it;
 * - `GET`, `PUT` (`{maxEvents?, maxAge?, maxBytes?}`) and `DELETE /v1/topics/{topic}/retention`:
 *   the topic's retention override, which wins over the configured rules.
 */
export function topicAdminRoutes(app: FastifyInstance, ctx: AppContext): void {
  const admin = (req: FastifyRequest): void =>
    checkAdmin(identityOf(req, ctx.auth), 'Topic administration needs the admin permission');
  // Before validation: a request without the permission is refused whatever it holds.
  const preValidation = async (req: FastifyRequest): Promise<void> => admin(req);

  app.delete<{ Params: { topic: string } }>(
    '/v1/topics/:topic',
    {
      ...route(
        adminSpec(
          {
            summary: 'Delete a topic',
            description:
              'Deletes its log and retention override; live subscribers get a deleted reset notice, the next publish starts a new epoch.',
            operationId: 'deleteTopic',
          },
          { 204: { description: 'Deleted', type: 'null' } },
        ),
      ),
      preValidation,
    },
    async (req, reply) => {
      const topic = assertTopic(req.params.topic);
      if (!(await ctx.engine.deleteTopic(topic))) throw notFound(topic);
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { topic: string }; Body: unknown }>(
    '/v1/topics/:topic/purge',
    {
      ...route(
        adminSpec(
          {
            summary: 'Drop old events',
            description:
              'Drops the events before a seq or a time, as retention would; a cursor from before gets a retention reset naming what is gone.',
            operationId: 'purgeTopic',
            body: { schema: PURGE_BODY, check: parsePurgeBody },
          },
          {
            200: json('What is left', {
              type: 'object',
              required: ['topic', 'epoch', 'firstSeq', 'lastSeq'],
              properties: {
                topic: { type: 'string' },
                epoch: { type: 'string' },
                firstSeq: { type: 'integer', minimum: 0 },
                lastSeq: { type: 'integer', minimum: 0 },
              },
            }),
          },
          ['invalid_parameter', 'invalid_json', 'unsupported_media_type'],
        ),
      ),
      preValidation,
    },
    async (req) => {
      const topic = assertTopic(req.params.topic);
      const asked = parsePurgeBody(req.body);
      let before: number;
      if ('before' in asked) before = asked.before;
      else {
        const seq = await ctx.engine.seqAtTime(topic, asked.beforeTime);
        if (seq === null) throw notFound(topic);
        before = seq;
      }
      const head = await ctx.engine.purge(topic, before);
      if (head === null) throw notFound(topic);
      return { topic, epoch: head.epoch, firstSeq: head.firstSeq, lastSeq: head.lastSeq };
    },
  );

  app.get<{ Params: { topic: string } }>(
    '/v1/topics/:topic/retention',
    {
      ...route(
        adminSpec(
          {
            summary: 'Retention of a topic',
            description: 'The limits in force (0: unlimited) and the topic’s override.',
            operationId: 'getRetention',
          },
          retentionAnswer,
        ),
      ),
      preValidation,
    },
    async (req) => {
      const topic = assertTopic(req.params.topic);
      const r = await ctx.engine.getRetention(topic);
      if (r === null) throw notFound(topic);
      return { topic, ...r };
    },
  );

  app.put<{ Params: { topic: string }; Body: unknown }>(
    '/v1/topics/:topic/retention',
    {
      ...route(
        adminSpec(
          {
            summary: 'Set the retention override',
            description:
              'Replaces the topic’s override, applied at once; its fields win over retention.rules, those it leaves out come from the rules. Stored with the log.',
            operationId: 'setRetention',
            body: { schema: RETENTION_BODY, check: parseRetentionBody },
          },
          retentionAnswer,
          ['invalid_parameter', 'invalid_json', 'unsupported_media_type'],
        ),
      ),
      preValidation,
    },
    async (req) => {
      const topic = assertTopic(req.params.topic);
      const r = await ctx.engine.setRetention(topic, parseRetentionBody(req.body));
      if (r === null) throw notFound(topic);
      return { topic, ...r };
    },
  );

  app.delete<{ Params: { topic: string } }>(
    '/v1/topics/:topic/retention',
    {
      ...route(
        adminSpec(
          {
            summary: 'Clear the retention override',
            operationId: 'clearRetention',
          },
          retentionAnswer,
        ),
      ),
      preValidation,
    },
    async (req) => {
      const topic = assertTopic(req.params.topic);
      const r = await ctx.engine.setRetention(topic, null);
      if (r === null) throw notFound(topic);
      return { topic, ...r };
    },
  );
}

/** A purge body: `{before: seq}` or `{beforeTime: ISO 8601 time | ms}` (as ms), one of the two. */
export function parsePurgeBody(raw: unknown): { before: number } | { beforeTime: number } {
  const body = objectBody(raw, ['before', 'beforeTime']);
  if (body.before !== undefined && body.beforeTime === undefined) {
    return { before: wholeNumber(body.before, 'before') };
  }
  if (body.beforeTime !== undefined && body.before === undefined) {
    return { beforeTime: timeOf(body.beforeTime) };
  }
  throw new RillError('invalid_parameter', 'Give one of "before" (a seq) or "beforeTime"');
}

/** A retention override body `{maxEvents?, maxAge?, maxBytes?}` in the config's units. */
export function parseRetentionBody(raw: unknown): RetentionOverride {
  const body = objectBody(raw, ['maxEvents', 'maxAge', 'maxBytes']);
  const o: RetentionOverride = {};
  try {
    if (body.maxEvents !== undefined) o.maxEvents = wholeNumber(body.maxEvents, 'maxEvents');
    if (body.maxAge !== undefined) o.maxAgeMs = parseDuration(body.maxAge as string | number);
    if (body.maxBytes !== undefined) o.maxBytes = parseSize(body.maxBytes as string | number);
  } catch (err) {
    if (err instanceof ConfigError) throw new RillError('invalid_parameter', err.message);
    throw err;
  }
  return o;
}

function notFound(topic: string): RillError {
  return new RillError('topic_not_found', `No topic ${topic}`, { details: { topic } });
}

/** A JSON object body with only `allowed` members. */
function objectBody(body: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new RillError(
      'invalid_parameter',
      `The body must be a JSON object {${allowed.join(', ')}}`,
    );
  }
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      throw new RillError(
        'invalid_parameter',
        `Unknown member ${JSON.stringify(k.slice(0, 64))}: allowed are ${allowed.join(', ')}`,
      );
    }
  }
  return o;
}

function wholeNumber(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new RillError('invalid_parameter', `"${name}" must be a whole number >= 0`);
  }
  return v;
}

/** An ISO 8601 time or ms since the Unix epoch. */
function timeOf(v: unknown): number {
  const ms = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RillError('invalid_parameter', '"beforeTime" must be an ISO 8601 time or ms');
  }
  return ms;
}
