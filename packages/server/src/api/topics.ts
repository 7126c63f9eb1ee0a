import type { FastifyInstance } from 'fastify';
import { decodeCursor } from '../model/cursor.js';
import type { Engine, TopicHead } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import { eventJson } from '../model/event.js';
import { assertTopic, assertTopicPrefix } from '../model/topic.js';
import type { AppContext } from './context.js';
import { parseLimit, parseWait } from './params.js';

/** Window of the `rate` figure in topic listings, ms. */
const RATE_WINDOW_MS = 60_000;

/**
 * Topic info as the API shows it: head, retained count, and the rate over the last minute (from
 * the log, so it counts every node's publishes).
 */
async function topicInfo(engine: Engine, h: TopicHead, now: number): Promise<string> {
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

export function topicRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { engine } = ctx;
  const { limits } = ctx.config;

  app.get<{ Querystring: { prefix?: string; after?: string; limit?: string } }>(
    '/v1/topics',
    async (req, reply) => {
      const limit = parseLimit(req.query.limit, 100, 1000);
      const opts: { prefix?: string; after?: string; limit: number } = { limit };
      if (req.query.prefix) opts.prefix = assertTopicPrefix(req.query.prefix, 'prefix');
      if (req.query.after) opts.after = assertTopicPrefix(req.query.after, 'after');
      const heads = await engine.listTopics(opts);
      const now = Date.now();
      const items = await Promise.all(heads.map((h) => topicInfo(engine, h, now)));
      const next = heads.length === limit ? JSON.stringify(heads[heads.length - 1]!.topic) : 'null';
      return reply
        .type('application/json; charset=utf-8')
        .send(`{"topics":[${items.join(',')}],"next":${next}}`);
    },
  );

  app.get<{ Params: { topic: string } }>('/v1/topics/:topic', async (req, reply) => {
    const topic = assertTopic(req.params.topic);
    const h = await engine.head(topic);
    if (!h) throw new RillError('topic_not_found', `Unknown topic ${topic}`);
    return reply
      .type('application/json; charset=utf-8')
      .send(await topicInfo(engine, h, Date.now()));
  });

  app.get<{
    Params: { topic: string };
    Querystring: { after?: string; limit?: string; wait?: string };
  }>('/v1/topics/:topic/events', async (req, reply) => {
    const topic = assertTopic(req.params.topic);
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
      await ctx.hub.waitBeyond(topic, afterSeq, waitMs, ac.signal);
      r = await engine.read(topic, afterSeq, limit);
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
  });
}
