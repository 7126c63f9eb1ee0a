import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RetentionOverride } from '../engine/engine.js';
import { ConfigError, parseDuration, parseSize } from '../config.js';
import { RillError } from '../model/errors.js';
import { assertTopic } from '../model/topic.js';
import { checkAdmin, identityOf } from './authn.js';
import type { AppContext } from './context.js';

const topicParams = {
  type: 'object',
  properties: { topic: { type: 'string' } },
  required: ['topic'],
} as const;

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
  const opts = {
    schema: { params: topicParams },
    preHandler: async (req: FastifyRequest) => admin(req),
  };

  app.delete<{ Params: { topic: string } }>('/v1/topics/:topic', opts, async (req, reply) => {
    const topic = assertTopic(req.params.topic);
    if (!(await ctx.engine.deleteTopic(topic))) throw notFound(topic);
    return reply.code(204).send();
  });

  app.post<{ Params: { topic: string }; Body: unknown }>(
    '/v1/topics/:topic/purge',
    opts,
    async (req) => {
      const topic = assertTopic(req.params.topic);
      const body = objectBody(req.body, ['before', 'beforeTime']);
      let before: number;
      if (body.before !== undefined && body.beforeTime === undefined) {
        before = wholeNumber(body.before, 'before');
      } else if (body.beforeTime !== undefined && body.before === undefined) {
        const ms = timeOf(body.beforeTime);
        const seq = await ctx.engine.seqAtTime(topic, ms);
        if (seq === null) throw notFound(topic);
        before = seq;
      } else {
        throw new RillError('invalid_parameter', 'Give one of "before" (a seq) or "beforeTime"');
      }
      const head = await ctx.engine.purge(topic, before);
      if (head === null) throw notFound(topic);
      return { topic, epoch: head.epoch, firstSeq: head.firstSeq, lastSeq: head.lastSeq };
    },
  );

  app.get<{ Params: { topic: string } }>('/v1/topics/:topic/retention', opts, async (req) => {
    const topic = assertTopic(req.params.topic);
    const r = await ctx.engine.getRetention(topic);
    if (r === null) throw notFound(topic);
    return { topic, ...r };
  });

  app.put<{ Params: { topic: string }; Body: unknown }>(
    '/v1/topics/:topic/retention',
    opts,
    async (req) => {
      const topic = assertTopic(req.params.topic);
      const body = objectBody(req.body, ['maxEvents', 'maxAge', 'maxBytes']);
      const o: RetentionOverride = {};
      try {
        if (body.maxEvents !== undefined) o.maxEvents = wholeNumber(body.maxEvents, 'maxEvents');
        if (body.maxAge !== undefined) o.maxAgeMs = parseDuration(body.maxAge as string | number);
        if (body.maxBytes !== undefined) o.maxBytes = parseSize(body.maxBytes as string | number);
      } catch (err) {
        if (err instanceof ConfigError) throw new RillError('invalid_parameter', err.message);
        throw err;
      }
      const r = await ctx.engine.setRetention(topic, o);
      if (r === null) throw notFound(topic);
      return { topic, ...r };
    },
  );

  app.delete<{ Params: { topic: string } }>('/v1/topics/:topic/retention', opts, async (req) => {
    const topic = assertTopic(req.params.topic);
    const r = await ctx.engine.setRetention(topic, null);
    if (r === null) throw notFound(topic);
    return { topic, ...r };
  });
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
