import Fastify, { LogController } from 'fastify';
import type { FastifyError, FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { RillConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import { hasHealthCheck } from '../engine/engine.js';
import { RillError } from '../errors.js';
import type { Hub } from '../hub.js';
import type { ConnectionBudget } from './capacity.js';
import { demoPage } from './demo-page.js';
import { pollRoutes } from './poll.js';
import { publishRoutes } from './publish.js';
import { streamRoutes } from './stream.js';
import { topicRoutes } from './topics.js';
import { wsRoutes } from './ws.js';
import { lazyChildLoggerFactory } from './lazy-logger.js';

/** What every route needs. */
export interface AppContext {
  config: RillConfig;
  engine: Engine;
  hub: Hub;
  /** Set once shutdown begins: new streams are refused, readiness fails. */
  state: { closing: boolean };
  /** Refuses new streams once connections near the open-files limit. */
  budget?: ConnectionBudget;
}

const FASTIFY_TO_RILL: Record<string, RillError['code']> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_parameter',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
};

/** Maps anything thrown in a route to the catalogue: a stable code, never a stack trace. */
export function toRillError(err: unknown): RillError {
  if (err instanceof RillError) return err;
  const fe = err as Partial<FastifyError> & { validation?: unknown };
  const mapped = fe.code ? FASTIFY_TO_RILL[fe.code] : undefined;
  if (mapped) return new RillError(mapped, fe.message);
  if (fe.validation) return new RillError('invalid_parameter', fe.message);
  if (err instanceof SyntaxError) return new RillError('invalid_json', err.message);
  if (fe.statusCode === 413) return new RillError('payload_too_large');
  if (fe.statusCode === 415) return new RillError('unsupported_media_type');
  return new RillError('internal', 'Internal error', { cause: err });
}

/** What `GET /` answers without the demo: the endpoints, for a human or a script finding its way. */
export const API_INDEX = {
  name: 'rill',
  endpoints: {
    publish: 'POST /v1/topics/{topic}/events',
    read: 'GET /v1/topics/{topic}/events',
    topic: 'GET /v1/topics/{topic}',
    topics: 'GET /v1/topics',
    stream: 'GET /v1/topics/{topic}/stream',
    streamMany: 'GET /v1/stream?topics={topic|pattern},…',
    longPoll: 'GET /v1/events?topics={topic|pattern},…',
    webSocket: 'GET /v1/ws',
    health: 'GET /healthz',
    ready: 'GET /readyz',
  },
  docs: 'docs/protocol.md in the Rill repository',
} as const;

export function buildApp(ctx: AppContext, logger: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: logger,
    // No per-request lines: they would carry URLs, and URLs may carry tokens and cursors.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyChildLoggerFactory as never,
    bodyLimit: ctx.config.limits.maxBodyBytes,
    // Topic names may be 200 characters; Fastify's default caps params at 100.
    routerOptions: { maxParamLength: 256, ignoreTrailingSlash: true },
    return503OnClosing: true,
    // Node answers a larger request head with 431.
    http: { maxHeaderSize: ctx.config.http.maxHeaderSize },
  }) as unknown as FastifyInstance;

  // Node silently drops the headers past maxHeadersCount; keeping one more than allowed makes
  // "too many" visible, and such requests get a 431 (upgrades: in ws.ts).
  const maxHeaders = ctx.config.http.maxHeadersCount;
  app.server.maxHeadersCount = maxHeaders + 1;
  app.addHook('onRequest', (req, reply, done) => {
    if (req.raw.rawHeaders.length / 2 <= maxHeaders) return done();
    const e = new RillError('invalid_parameter', `More than ${maxHeaders} request headers`, {
      details: { limit: maxHeaders },
    });
    void reply.code(431).type('application/json; charset=utf-8').send(e.toJSON());
  });

  // Publish takes JSON or NDJSON only; anything else is a 415, not a string event.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser(
    'application/x-ndjson',
    { parseAs: 'string', bodyLimit: ctx.config.limits.maxBodyBytes },
    (_req, body, done) => done(null, body),
  );

  app.setErrorHandler((err, req, reply) => {
    const e = toRillError(err);
    if (e.code === 'internal') req.log.error({ err }, 'unhandled error');
    else if (e.code === 'engine_unavailable') req.log.warn({ err }, 'engine unavailable');
    if (e.retryable && e.status === 503) void reply.header('retry-after', '1');
    return reply.code(e.status).type('application/json; charset=utf-8').send(e.toJSON());
  });

  app.setNotFoundHandler((req, reply) => {
    const e = new RillError('not_found', `No route ${req.method} ${req.url.split('?')[0]}`);
    return reply.code(404).send(e.toJSON());
  });

  // A 503 is a state logged where it arises (engine down, shutdown, connection budget), not once
  // per request.
  app.addHook('onResponse', (req, reply, done) => {
    if (reply.statusCode >= 500 && reply.statusCode !== 503) {
      req.log.warn({ method: req.method, route: req.routeOptions.url, status: reply.statusCode });
    }
    done();
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    if (ctx.state.closing) {
      return reply.code(503).send(new RillError('shutting_down').toJSON());
    }
    if (hasHealthCheck(ctx.engine)) {
      const h = await ctx.engine.health();
      if (!h.ok) {
        return reply
          .code(503)
          .send(new RillError('engine_unavailable', h.detail ?? undefined).toJSON());
      }
    }
    return { status: 'ready', engine: ctx.engine.name, subscribers: ctx.hub.size };
  });
  // The demo page comes with the demo feed (--demo); otherwise `/` lists the API.
  if (ctx.config.demo) {
    app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(demoPage));
  } else {
    app.get('/', async () => API_INDEX);
  }

  publishRoutes(app, ctx);
  topicRoutes(app, ctx);
  streamRoutes(app, ctx);
  wsRoutes(app, ctx);
  pollRoutes(app, ctx);
  return app;
}
