import type { Http2ServerResponse } from 'node:http2';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RillError } from '../model/errors.js';
import type { Subscription } from '../fanout/subscription.js';
import { assertTopic } from '../model/topic.js';
import { H2StreamSink } from '../net/h2-sink.js';
import { HttpStreamSink, streamHeaders } from '../net/http-sink.js';
import { ndjsonFraming } from '../wire/ndjson.js';
import { ndjsonPresenceLine, ssePresenceFrame } from '../wire/presence.js';
import { sseFraming } from '../wire/sse.js';
import { parseResumeCursor, parseStart, parseTopicsParam } from '../wire/subscribe-params.js';
import { challengeFor, checkSubscribe, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { logStreamEnd, logStreamOpen } from './stream-log.js';
import { subscriptionState } from './open-streams.js';
import type { StreamQuery } from './params.js';
import { admitStream } from './hooks.js';
import { enterPresence, parsePresenceFlag, presenceQuery } from './presence.js';
import {
  asString,
  AUTH_ERRORS,
  cursorQuery,
  errors,
  fromQuery,
  route,
  sinceQuery,
  text,
  textAnswer,
  topicParam,
  topicsQuery,
  type Field,
  type RouteSpec,
} from './schemas.js';

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

export const formatQuery: Field = {
  schema: text(
    'sse or ndjson; without it, an Accept of application/x-ndjson (and not text/event-stream) means ndjson.',
    { enum: ['sse', 'ndjson', ''] },
  ),
  check: (v) => streamFormat(asString(v), undefined),
};

/** What a stream route takes and answers, less its topics. */
export const STREAM_QUERY: Record<string, Field> = {
  since: sinceQuery,
  from: fromQuery,
  lastEventId: cursorQuery(
    'The cursor to resume from, for clients that cannot send Last-Event-ID (which wins)',
  ),
  cursor: cursorQuery('The same as lastEventId'),
  format: formatQuery,
  presence: presenceQuery,
};

export const STREAM_HEADERS = {
  'last-event-id': { type: 'string', description: 'The cursor to resume from.' },
  accept: { type: 'string', description: 'application/x-ndjson: an NDJSON stream.' },
  'accept-encoding': {
    type: 'string',
    description: 'gzip: a compressed stream, when http.compression is on.',
  },
};

const STREAM_ANSWER = textAnswer(
  'The stream: events, reset and presence notices, heartbeats, and an error frame before the server ends it. Its frames are described in asyncapi.yaml (docs/protocol.md § Server-Sent Events, § NDJSON streaming). HEAD answers the headers only.',
  ['text/event-stream', 'application/x-ndjson'],
);

function streamSpec(
  spec: Pick<RouteSpec, 'summary' | 'description' | 'operationId' | 'params' | 'required'>,
  topics: Record<string, Field>,
  codes: Parameters<typeof errors>,
): RouteSpec {
  return {
    ...spec,
    tags: ['streams'],
    querystring: { ...topics, ...STREAM_QUERY },
    headers: STREAM_HEADERS,
    response: {
      200: STREAM_ANSWER,
      ...errors(
        ...codes,
        'invalid_parameter',
        'invalid_cursor',
        ...AUTH_ERRORS,
        'rate_limited',
        'too_many_connections',
        'overloaded',
        'shutting_down',
        'engine_unavailable',
      ),
    },
  };
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

/** Sets the headers the reply holds (CORS, from the hooks) on its raw response. */
function copyHeaders(reply: FastifyReply): void {
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) reply.raw.setHeader(name, value);
  }
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
    let identity = identityOf(req, ctx.auth);
    checkSubscribe(identity, patterns);
    const full = ctx.budget?.refuseStream();
    if (full) {
      // Free the connection too: the refusal is about connections.
      void reply.header('connection', 'close');
      throw full;
    }
    const overloaded = ctx.load?.refuse();
    if (overloaded) throw overloaded;
    const format = streamFormat(req.query.format, req.headers.accept);
    const start = parseStart(req.query);
    const cursor = parseResumeCursor(
      req.headers['last-event-id'],
      req.query.lastEventId ?? req.query.cursor,
      limits.maxCursorLength,
    );
    const wantsPresence = parsePresenceFlag(req.query.presence);
    if (ctx.hooks) {
      // The application's backend may refuse (an HTTP error, before the stream opens) or enrich.
      identity = await admitStream(ctx, req, identity, format, patterns);
      if (req.raw.destroyed) {
        reply.hijack();
        return;
      }
    }
    // A HEAD opens no stream: it is not counted.
    const limitSubjects =
      req.method === 'HEAD' || !ctx.limits.enabled ? [] : ctx.limits.ofRequest(req, identity);
    const framing = format === 'sse' ? sse : ndjson;
    const encoding =
      ctx.config.http.compression && acceptsGzip(req.headers['accept-encoding']) ? gzip : plain;
    // The stream's head is written on the raw response: take along what the hooks set (CORS).
    copyHeaders(reply);
    // HEAD: the stream's headers, at once; no subscription (it would never end).
    if (req.method === 'HEAD') {
      reply.hijack();
      const headers = streamHeaders(framing, encoding.gzip);
      delete headers.connection;
      reply.raw.writeHead(200, headers).end();
      return;
    }
    // Counted last, once nothing can refuse the request before the stream: a refusal is a 429
    // with Retry-After, as any error before the stream opens.
    const lease = ctx.limits.openStream(limitSubjects);
    const meter = ctx.obs?.meters.transports[format] ?? null;
    const sink =
      req.raw.httpVersionMajor === 2
        ? new H2StreamSink(reply.raw as unknown as Http2ServerResponse, framing, encoding, meter)
        : new HttpStreamSink(reply.raw, framing, encoding, meter);
    /** Counted as an open connection from its headers until it closes. */
    let counted = false;
    reply.hijack();
    const reqId = req.id;
    let sub: Subscription | undefined;
    let gone = false;
    let opened = false;
    /** Why the stream must end, when that was decided while it was being set up. */
    let ending: RillError | undefined;
    /** Why the server ended it, when that is not its error's code (a revoked credential). */
    let reason: string | undefined;
    /** Ends this stream's presence (its own, and the joins and leaves it hears). */
    let leavePresence: (() => void) | undefined;
    // Revoked credentials and the token's expiry end the stream with an error frame (or, before
    // it opened, with the error's status).
    const endWith = (e: RillError): void => {
      if (sub) sub.fail(e);
      else ending ??= e;
    };
    const tracked = ctx.streams.track(
      identity,
      {
        revoked: (e) => {
          reason ??= 'revoked';
          endWith(e);
        },
        expired: endWith,
      },
      {
        id: String(req.id),
        transport: format,
        address: req.ip,
        openedAt: Date.now(),
        state: () => subscriptionState(patterns, sub),
      },
    );
    sink.onClose(() => {
      gone = true;
      lease?.release();
      if (counted) meter!.close(sink.endReason ?? 'client');
      tracked.untrack();
      leavePresence?.();
      if (!sub) return;
      ctx.hub.unsubscribe(sub);
      if (opened) {
        logStreamEnd(ctx.logs.http, reqId, {
          transport: format,
          topics: patterns,
          startedAt: sub.startedAt,
          events: sub.sentEvents,
          bytes: sub.sentBytes,
          reason: reason ?? sub.endReason ?? 'client_closed',
          fellBehind: sub.fellBehind,
        });
      }
    });
    try {
      sub = await ctx.hub.subscribe(sink, {
        id: reqId,
        patterns,
        start,
        ...(cursor ? { cursor } : {}),
      });
    } catch (err) {
      tracked.untrack();
      lease?.release();
      const e =
        err instanceof RillError
          ? err
          : new RillError('engine_unavailable', 'Cannot start the subscription', { cause: err });
      if (!gone) sink.end(e);
      return;
    }
    if (gone) ctx.hub.unsubscribe(sub);
    else if (ending) {
      tracked.untrack();
      lease?.release();
      ctx.hub.unsubscribe(sub);
      const challenge = challengeFor(ending);
      if (challenge !== undefined) reply.raw.setHeader('www-authenticate', challenge);
      sink.end(ending);
    } else {
      opened = true;
      sink.open();
      const s = sub;
      const frame = format === 'sse' ? ssePresenceFrame : ndjsonPresenceLine;
      leavePresence = enterPresence(
        ctx,
        identity,
        patterns,
        wantsPresence ? (n) => s.notify(frame(n)) : null,
      );
      logStreamOpen(ctx.logs.http, reqId, format, patterns);
      if (meter) {
        meter.opened++;
        counted = true;
      }
    }
  }

  app.get<{ Params: { topic: string }; Querystring: StreamQuery }>(
    '/v1/topics/:topic/stream',
    route(
      streamSpec(
        {
          summary: 'Stream one topic (SSE or NDJSON)',
          description:
            'Server-sent events (default) or NDJSON of one topic, from a cursor or a start position, live until the client leaves. Single-topic SSE ids are the events’ ids.',
          operationId: 'streamTopic',
          params: { topic: topicParam },
        },
        {},
        ['invalid_topic'],
      ),
    ),
    async (req, reply) => serve(req, reply, [assertTopic(req.params.topic)]),
  );

  const topics = topicsQuery(limits.maxPatternsPerSubscription);
  app.get<{ Querystring: StreamQuery }>(
    '/v1/stream',
    route(
      streamSpec(
        {
          summary: 'Stream topics and patterns (SSE or NDJSON)',
          description:
            'One stream of several topics and patterns; each event carries the cursor of the whole subscription (its SSE id), so a client resumes every topic exactly.',
          operationId: 'streamMany',
          required: ['topics'],
        },
        { topics },
        ['invalid_pattern', 'too_many_topics'],
      ),
    ),
    async (req, reply) =>
      serve(req, reply, parseTopicsParam(req.query.topics, limits.maxPatternsPerSubscription)),
  );
}
