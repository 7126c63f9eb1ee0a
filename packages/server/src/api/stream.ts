import type { Http2ServerResponse } from 'node:http2';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Cursor } from '../model/cursor.js';
import { decodeCursor } from '../model/cursor.js';
import { RillError } from '../model/errors.js';
import type { StartSpec, Subscription } from '../fanout/subscription.js';
import { assertPattern, assertTopic } from '../model/topic.js';
import { H2StreamSink } from '../net/h2-sink.js';
import { HttpStreamSink, streamHeaders } from '../net/http-sink.js';
import { ndjsonFraming } from '../wire/ndjson.js';
import { sseFraming } from '../wire/sse.js';
import type { AppContext } from './app.js';

/** Integers below this in `since` are seqs; at or above it, ms timestamps (2001-09-09 onward). */
export const SINCE_TIME_THRESHOLD = 1e12;

const UINT_RE = /^(?:0|[1-9][0-9]{0,15})$/;

export interface StreamQuery {
  topics?: string | string[];
  from?: string;
  since?: string;
  lastEventId?: string;
  cursor?: string;
  format?: string;
}

/** `?format=` wins; else `Accept: application/x-ndjson` (without text/event-stream) means NDJSON. */
export function streamFormat(
  format: string | undefined,
  accept: string | undefined,
): 'sse' | 'ndjson' {
  if (format !== undefined && format !== '') {
    if (format === 'sse' || format === 'ndjson') return format;
    throw new RillError('invalid_parameter', 'format must be sse or ndjson');
  }
  const a = accept?.toLowerCase() ?? '';
  return a.includes('application/x-ndjson') && !a.includes('text/event-stream') ? 'ndjson' : 'sse';
}

/** Whether the client takes gzip (`Accept-Encoding: gzip`, not `gzip;q=0`). */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  return header
    .toLowerCase()
    .split(',')
    .some((part) => {
      const [name, ...params] = part.trim().split(';');
      if (name !== 'gzip' && name !== 'x-gzip') return false;
      const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
      return q === undefined || Number(q.slice(2)) > 0;
    });
}

/** `from=now|earliest|<seq>` (seq inclusive) and `since=<seq>|<ms>|<ISO time>` → a start. */
export function parseStart(q: StreamQuery): StartSpec {
  if (q.since !== undefined && q.since !== '') {
    const s = q.since;
    if (UINT_RE.test(s)) {
      const n = Number(s);
      return n < SINCE_TIME_THRESHOLD ? { kind: 'after', seq: n } : { kind: 'time', time: n };
    }
    const t = Date.parse(s);
    if (!/^\d{4}-\d{2}-\d{2}/.test(s) || Number.isNaN(t)) {
      throw new RillError(
        'invalid_parameter',
        'since must be a seq, a time in ms, or an ISO 8601 time such as 2026-11-22T10:00:00Z',
      );
    }
    return { kind: 'time', time: t };
  }
  const from = q.from;
  if (from === undefined || from === '' || from === 'now') return { kind: 'now' };
  if (from === 'earliest') return { kind: 'earliest' };
  if (UINT_RE.test(from) && Number(from) >= 1) return { kind: 'after', seq: Number(from) - 1 };
  throw new RillError('invalid_parameter', 'from must be now, earliest, or a seq (1 or more)');
}

/** The resume cursor from `Last-Event-ID` (header wins) or `lastEventId`; undefined if none. */
export function parseResumeCursor(
  header: string | string[] | undefined,
  query: string | undefined,
  maxLength: number,
): Cursor | undefined {
  const raw = (Array.isArray(header) ? header[0] : header) ?? query;
  if (raw === undefined || raw.trim() === '') return undefined;
  return decodeCursor(raw.trim(), maxLength);
}

/** `topics=a,b.*,c.>` (or repeated `topics=`) → validated, de-duplicated patterns. */
export function parseTopicsParam(raw: string | string[] | undefined, max: number): string[] {
  const list = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw])
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) {
    throw new RillError(
      'invalid_parameter',
      'topics is required: a comma-separated list of topics or patterns',
    );
  }
  const unique = [...new Set(list)];
  if (unique.length > max) {
    throw new RillError('too_many_topics', `At most ${max} topics or patterns per subscription`, {
      details: { limit: max },
    });
  }
  for (const p of unique) assertPattern(p);
  return unique;
}

export function streamRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { limits } = ctx.config;
  // Shared by every stream: an idle connection should hold as little of its own as possible.
  const sse = sseFraming(ctx.config.sse.retry);
  const ndjson = ndjsonFraming();
  const plain = { gzip: false };
  const gzip = { gzip: true };

  async function serve(
    req: FastifyRequest<{ Querystring: StreamQuery }>,
    reply: FastifyReply,
    patterns: string[],
  ): Promise<void> {
    if (ctx.state.closing) throw new RillError('shutting_down');
    const full = ctx.budget?.refuseStream();
    if (full) {
      // Free the connection too: the refusal is about connections.
      void reply.header('connection', 'close');
      throw full;
    }
    const start = parseStart(req.query);
    const cursor = parseResumeCursor(
      req.headers['last-event-id'],
      req.query.lastEventId ?? req.query.cursor,
      limits.maxCursorLength,
    );
    const format = streamFormat(req.query.format, req.headers.accept);
    const framing = format === 'sse' ? sse : ndjson;
    const encoding =
      ctx.config.http.compression && acceptsGzip(req.headers['accept-encoding']) ? gzip : plain;
    // HEAD: the stream's headers, at once; no subscription (it would never end).
    if (req.method === 'HEAD') {
      reply.hijack();
      const headers = streamHeaders(framing, encoding.gzip);
      delete headers.connection;
      reply.raw.writeHead(200, headers).end();
      return;
    }
    const sink =
      req.raw.httpVersionMajor === 2
        ? new H2StreamSink(reply.raw as unknown as Http2ServerResponse, framing, encoding)
        : new HttpStreamSink(reply.raw, framing, encoding);
    reply.hijack();
    let sub: Subscription | undefined;
    let gone = false;
    sink.onClose(() => {
      gone = true;
      if (sub) ctx.hub.unsubscribe(sub);
    });
    try {
      sub = await ctx.hub.subscribe(sink, { patterns, start, ...(cursor ? { cursor } : {}) });
    } catch (err) {
      const e =
        err instanceof RillError
          ? err
          : new RillError('engine_unavailable', 'Cannot start the subscription', { cause: err });
      if (!gone) sink.end(e);
      return;
    }
    if (gone) ctx.hub.unsubscribe(sub);
    else sink.open();
  }

  app.get<{ Params: { topic: string }; Querystring: StreamQuery }>(
    '/v1/topics/:topic/stream',
    async (req, reply) => serve(req, reply, [assertTopic(req.params.topic)]),
  );

  app.get<{ Querystring: StreamQuery }>('/v1/stream', async (req, reply) =>
    serve(req, reply, parseTopicsParam(req.query.topics, limits.maxPatternsPerSubscription)),
  );
}
