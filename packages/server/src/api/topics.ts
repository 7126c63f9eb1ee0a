import type { FastifyInstance } from 'fastify';
import { decodeCursor } from '../model/cursor.js';
import {
  resolveRetention,
  type Engine,
  type RetentionConfig,
  type TopicHead,
} from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import { eventJson } from '../model/event.js';
import {
  assertPattern,
  assertTopic,
  assertTopicPrefix,
  compilePattern,
  patternPrefix,
} from '../model/topic.js';
import { engineRetention } from '../config.js';
import type { Grants } from '../auth/index.js';
import { forbidden, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { tokenExpired } from './open-streams.js';
import { parseLimit, parseWait } from './params.js';
import {
  answer,
  AUTH_ERRORS,
  documented,
  errors,
  json,
  limitQuery,
  patternQuery,
  prefixQuery,
  route,
  text,
  topicParam,
  waitQuery,
} from './schemas.js';

/** Window of the `rate` figure in topic listings, ms. */
const RATE_WINDOW_MS = 60_000;

/**
 * Topic info as the API shows it: head, retained count, the rate over the last minute (from the
 * log, so it counts every node's publishes), and the retention limits that apply to it (0: none).
 */
async function topicInfo(
  engine: Engine,
  h: TopicHead,
  now: number,
  retention: RetentionConfig,
): Promise<string> {
  const since = await engine.seqAtTime(h.topic, now - RATE_WINDOW_MS);
  const recent = since === null ? 0 : Math.max(0, h.lastSeq - since + 1);
  const rate = Math.round((recent / (RATE_WINDOW_MS / 1000)) * 100) / 100;
  return JSON.stringify({
    topic: h.topic,
    epoch: h.epoch,
    firstSeq: h.firstSeq,
    lastSeq: h.lastSeq,
    count: Math.max(0, h.lastSeq - h.firstSeq + 1),
    created: h.created,
    lastTime: h.lastTime || null,
    rate,
    retention: resolveRetention(retention, h.topic),
  });
}

/** `after` for a history page: a seq, or a cursor naming this topic. */
function parseAfter(
  raw: string | undefined,
  topic: string,
  maxCursorLength: number,
): { seq: number; epoch?: string } {
  if (raw === undefined || raw === '') return { seq: 0 };
  if (/^(?:0|[1-9][0-9]{0,15})$/.test(raw)) return { seq: Number(raw) };
  const c = decodeCursor(raw, maxCursorLength);
  const p = c.positions.get(topic);
  if (!p) throw new RillError('invalid_cursor', `Cursor has no position for topic ${topic}`);
  return p;
}

/** Engine pages a filtered listing reads at most for one answer (then it answers with `next`). */
const MAX_LISTING_PAGES = 10;

/**
 * A page of the topics `grants` may read (and `pattern` matches, when given), in name order: engine pages are read and filtered until
 * `limit` readable topics are found or the engine has no more. `next` is the last name looked at
 * when more may follow (a page may then hold fewer than `limit` topics), else null. Unfiltered
 * (everything readable) it is exactly one engine page.
 */
async function readableTopics(
  engine: Engine,
  grants: Grants,
  opts: { prefix?: string; after?: string; limit: number; pattern?: string },
): Promise<{ heads: TopicHead[]; next: string | null }> {
  const matches = opts.pattern === undefined ? () => true : compilePattern(opts.pattern);
  const out: TopicHead[] = [];
  let after = opts.after;
  for (let page = 0; page < MAX_LISTING_PAGES; page++) {
    const heads = await engine.listTopics({
      limit: opts.limit,
      ...(opts.prefix === undefined ? {} : { prefix: opts.prefix }),
      ...(after === undefined ? {} : { after }),
    });
    for (let i = 0; i < heads.length; i++) {
      const h = heads[i]!;
      if (!grants.canRead(h.topic) || !matches(h.topic)) continue;
      out.push(h);
      if (out.length === opts.limit) {
        // Full: more may follow unless this was the engine's very last topic.
        const last = i === heads.length - 1 && heads.length < opts.limit;
        return { heads: out, next: last ? null : h.topic };
      }
    }
    if (heads.length < opts.limit) return { heads: out, next: null };
    after = heads[heads.length - 1]!.topic;
  }
  return { heads: out, next: after ?? null };
}

export function topicRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { engine } = ctx;
  const { limits } = ctx.config;
  const retention = engineRetention(ctx.config);

  app.get<{ Querystring: { prefix?: string; after?: string; limit?: string; pattern?: string } }>(
    '/v1/topics',
    route({
      summary: 'List topics',
      description:
        'The topics the identity may read, in name order, a page at a time: pass next back as after. A filtered page may hold fewer than limit topics.',
      tags: ['topics'],
      operationId: 'listTopics',
      querystring: {
        limit: limitQuery(100, 1000),
        prefix: prefixQuery('prefix', 'Only topics whose name starts with this.'),
        after: prefixQuery('after', 'Topics after this name (the next of the page before).'),
        pattern: patternQuery,
      },
      response: {
        200: json('A page of topics', {
          type: 'object',
          required: ['topics', 'next'],
          properties: {
            topics: { type: 'array', items: { $ref: 'Topic#' } },
            next: { type: ['string', 'null'], description: 'after for the next page; null: last.' },
          },
        }),
        ...errors('invalid_parameter', 'invalid_pattern', ...AUTH_ERRORS, 'engine_unavailable'),
      },
    }),
    async (req, reply) => {
      const grants = identityOf(req, ctx.auth).grants;
      const limit = parseLimit(req.query.limit, 100, 1000);
      const opts: { prefix?: string; after?: string; limit: number; pattern?: string } = { limit };
      if (req.query.prefix) opts.prefix = assertTopicPrefix(req.query.prefix, 'prefix');
      if (req.query.after) opts.after = assertTopicPrefix(req.query.after, 'after');
      if (req.query.pattern) {
        opts.pattern = assertPattern(req.query.pattern);
        // The engine lists by prefix: the literal segments before the first wildcard narrow it.
        const literal = patternPrefix(opts.pattern);
        if (opts.prefix === undefined || literal.startsWith(opts.prefix)) opts.prefix = literal;
      }
      const { heads, next } = await readableTopics(engine, grants, opts);
      const now = Date.now();
      const items = await Promise.all(heads.map((h) => topicInfo(engine, h, now, retention)));
      return reply
        .type('application/json; charset=utf-8')
        .send(
          `{"topics":[${items.join(',')}],"next":${next === null ? 'null' : JSON.stringify(next)}}`,
        );
    },
  );

  app.get<{ Params: { topic: string } }>(
    '/v1/topics/:topic',
    route({
      summary: 'Topic info',
      description: 'Head, retained count, rate over the last minute and retention limits.',
      tags: ['topics'],
      operationId: 'getTopic',
      params: { topic: topicParam },
      response: {
        200: answer('The topic', 'Topic'),
        ...errors('invalid_topic', ...AUTH_ERRORS, 'topic_not_found', 'engine_unavailable'),
      },
    }),
    async (req, reply) => {
      const topic = assertTopic(req.params.topic);
      if (!identityOf(req, ctx.auth).grants.canRead(topic)) throw forbidden('read', topic);
      const h = await engine.head(topic);
      if (!h) throw new RillError('topic_not_found', `Unknown topic ${topic}`);
      return reply
        .type('application/json; charset=utf-8')
        .send(await topicInfo(engine, h, Date.now(), retention));
    },
  );

  app.get<{
    Params: { topic: string };
    Querystring: { after?: string; limit?: string; wait?: string };
  }>(
    '/v1/topics/:topic/events',
    route({
      summary: 'History page (or long-poll one topic)',
      description:
        'The events after after, at most limit. With wait, when there is nothing after after yet, waits up to wait seconds for the next event; an unknown topic with wait answers an empty page instead of 404. A cursor from another epoch, or events dropped by retention, add reset.',
      tags: ['topics'],
      operationId: 'readTopic',
      params: { topic: topicParam },
      querystring: {
        after: documented(
          text('A seq, or a cursor naming this topic: the page starts after it (default 0).'),
        ),
        limit: limitQuery(100, 1000, 'limits.maxPageSize'),
        wait: waitQuery,
      },
      response: {
        200: json('A page of events', {
          type: 'object',
          required: ['topic', 'epoch', 'firstSeq', 'lastSeq', 'events', 'next', 'more'],
          properties: {
            topic: { type: 'string' },
            epoch: { type: ['string', 'null'], description: 'null: no such topic yet (wait).' },
            firstSeq: { type: 'integer', minimum: 0 },
            lastSeq: { type: 'integer', minimum: 0 },
            events: { type: 'array', items: { $ref: 'Event#' } },
            next: { type: 'integer', minimum: 0, description: 'after for the next page.' },
            more: { type: 'boolean' },
            reset: { $ref: 'Reset#' },
          },
        }),
        ...errors(
          'invalid_topic',
          'invalid_cursor',
          'invalid_parameter',
          ...AUTH_ERRORS,
          'topic_not_found',
          'engine_unavailable',
        ),
      },
    }),
    async (req, reply) => {
      const topic = assertTopic(req.params.topic);
      const identity = identityOf(req, ctx.auth);
      if (!identity.grants.canRead(topic)) throw forbidden('read', topic);
      const after = parseAfter(req.query.after, topic, limits.maxCursorLength);
      const limit = parseLimit(req.query.limit, 100, limits.maxPageSize);
      const asked = parseWait(req.query.wait);
      // HEAD answers at once: it asks what a GET would answer now, not for the next event.
      const waitMs = req.method === 'HEAD' ? 0 : asked;
      let afterSeq = after.seq;
      let r = await engine.read(topic, afterSeq, limit);
      const epochChanged = after.epoch !== undefined && r.head && after.epoch !== r.head.epoch;
      if (waitMs > 0 && r.events.length === 0 && !epochChanged) {
        // Long-poll: nothing yet, so wait for the next event (or the topic's first).
        const ac = new AbortController();
        reply.raw.on('close', () => ac.abort());
        // Never past the token's expiry, and no longer than its credential stays valid.
        let refusal: RillError | undefined;
        const tracked = ctx.streams.track(
          identity,
          {
            revoked: (e) => {
              refusal = e;
              ac.abort();
            },
          },
          {
            id: String(req.id),
            transport: 'poll',
            address: req.ip,
            openedAt: Date.now(),
            // Waiting for the topic's next event: nothing queued, not behind.
            state: () => ({ patterns: [topic], topics: 1, bufferedBytes: 0, live: true }),
          },
        );
        const exp = identity.expiresAt;
        const expiresFirst = exp !== null && exp - Date.now() < waitMs;
        try {
          await ctx.hub.waitBeyond(
            topic,
            afterSeq,
            expiresFirst ? Math.max(0, exp - Date.now()) : waitMs,
            ac.signal,
          );
        } finally {
          tracked.untrack();
        }
        if (refusal) throw refusal;
        r = await engine.read(topic, afterSeq, limit);
        // The wait ended at the expiry with nothing new: the client asks again with a new token.
        if (expiresFirst && r.events.length === 0 && !ac.signal.aborted) throw tokenExpired();
      }
      if (!r.head) {
        if (waitMs === 0) throw new RillError('topic_not_found', `Unknown topic ${topic}`);
        return reply
          .type('application/json; charset=utf-8')
          .send(
            `{"topic":"${topic}","epoch":null,"firstSeq":1,"lastSeq":0,"events":[],"next":${afterSeq},"more":false}`,
          );
      }
      let reset = '';
      if (after.epoch !== undefined && after.epoch !== r.head.epoch) {
        // A cursor from another log: say so and start this one from its beginning.
        reset = `,"reset":${JSON.stringify({ reason: 'epoch', epoch: r.head.epoch, cursorEpoch: after.epoch, seq: r.head.firstSeq - 1 })}`;
        afterSeq = r.head.firstSeq - 1;
        r = await engine.read(topic, afterSeq, limit);
      } else if (afterSeq < r.head.firstSeq - 1) {
        reset = `,"reset":${JSON.stringify({ reason: 'retention', epoch: r.head.epoch, seq: r.head.firstSeq - 1, missing: { from: afterSeq + 1, to: r.head.firstSeq - 1 } })}`;
      }
      const head = r.head!;
      const events = r.events;
      const last = events.length > 0 ? events[events.length - 1]!.seq : Math.max(afterSeq, 0);
      const more = last < head.lastSeq;
      let out = `{"topic":"${topic}","epoch":"${head.epoch}","firstSeq":${head.firstSeq},"lastSeq":${head.lastSeq},"events":[`;
      for (let i = 0; i < events.length; i++) out += (i > 0 ? ',' : '') + eventJson(events[i]!);
      out += `],"next":${last},"more":${more}${reset}}`;
      return reply.type('application/json; charset=utf-8').send(out);
    },
  );
}
