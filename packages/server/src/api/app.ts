import {
  constants as h2constants,
  type Http2SecureServer,
  type Http2ServerRequest,
  type SecureServerOptions,
} from 'node:http2';
import Fastify, { LogController } from 'fastify';
import type { FastifyError, FastifyInstance, FastifyServerOptions } from 'fastify';
import type { Logger } from 'pino';
import { hasHealthCheck } from '../engine/engine.js';
import { RillError, retryAfterSeconds } from '../model/errors.js';
import { clientErrorHandler, tooManyHeaders } from '../net/connection.js';
import { decodeUtf8Body, parseJsonBody } from './body.js';
import { adminRoutes } from './admin.js';
import { authHook, challengeFor } from './authn.js';
import type { AppContext } from './context.js';
import { corsPlugin } from './cors.js';
import { demoPage } from './demo-page.js';
import { HostPolicy } from './host.js';
import { lazyChildLoggerFactory } from './lazy-logger.js';
import { queryError } from './params.js';
import { nextRequestId } from './request-id.js';
import { openapiRoute, registerOpenapi } from './openapi.js';
import { errors, json, route, SHARED_SCHEMAS } from './schemas.js';
import { useRouteSchemas, validationError } from './validation.js';
import { pollRoutes } from './poll.js';
import { publishRoutes } from './publish.js';
import { statsRoutes } from './stats.js';
import { presenceRoutes } from './presence.js';
import { streamRoutes } from './stream.js';
import { topicRoutes } from './topics.js';
import { topicAdminRoutes } from './topic-admin.js';
import { UI_PATH, uiRoutes, wantsHtml } from './ui.js';
import { wsRoutes } from './ws-upgrade.js';

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

/** Every quarter of the shorter timeout, between 0.1 s and 1 s. */
function checkingInterval(...timeouts: number[]): number {
  const set = timeouts.filter((t) => t > 0);
  if (set.length === 0) return 30_000;
  return Math.min(1000, Math.max(100, Math.floor(Math.min(...set) / 4)));
}
/** What `GET /` answers a script (a browser is redirected to the dashboard): the endpoints. */
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
    metrics: 'GET /metrics',
    stats: 'GET /v1/stats',
    statsStream: 'GET /v1/stats/stream',
    connections: 'GET /v1/connections',
    dashboard: 'GET /ui/',
  },
  docs: 'docs/protocol.md in the Rill repository',
} as const;

/**
 * Most concurrent streams one HTTP/2 connection may carry (the client is told in its SETTINGS).
 * Node's default is unbounded; a browser opens far fewer, and a stream costs memory, not a file
 * descriptor, so the connection budget does not see them.
 */
export const H2_MAX_CONCURRENT_STREAMS = 1000;

/** Response headers that only mean something on an HTTP/1.1 connection. */
const H2_FORBIDDEN_HEADERS = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
] as const;

/** Pseudo-headers of an HTTP/2 request (`:method`, `:path`, …), listed among its raw headers. */
function pseudoHeaders(rawHeaders: string[]): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.startsWith(':')) n++;
  return n;
}

/** The certificate and key the listener serves TLS with (read and checked by config.ts). */
export interface TlsCredentials {
  cert: Buffer;
  key: Buffer;
}

/**
 * With TLS the listener is HTTP/2 (`http2.createSecureServer`) and serves HTTP/1.1 on the same
 * port to clients that do not offer h2 in ALPN (`allowHTTP1`), WebSocket upgrades among them.
 * Node's HTTP/2 server keeps its own HTTP/1.1 bounds: they are set on it as on a plain server
 * (Node 24 would also take them as options; earlier versions only as properties, which every
 * version reads when a connection or request needs them).
 */
function secureServer(
  tls: TlsCredentials,
  http: AppContext['config']['http'],
): { http2: true; https: SecureServerOptions; http2SessionTimeout: number } {
  return {
    http2: true,
    https: {
      allowHTTP1: true,
      cert: tls.cert,
      key: tls.key,
      // The handshake is the start of the request head: the same bound (Node's default is 120 s).
      ...(http.headersTimeout > 0 ? { handshakeTimeout: http.headersTimeout } : {}),
      settings: {
        maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS,
        maxHeaderListSize: http.maxHeaderSize,
      },
      // One more than allowed, as for HTTP/1.1 below, so "too many" is answered with a 431.
      maxHeaderListPairs: http.maxHeadersCount + 1 + 4,
    },
    // An HTTP/2 connection with no frames either way for this long is closed (GOAWAY), as an
    // idle HTTP/1.1 keep-alive connection is; heartbeats keep a streaming one busy.
    http2SessionTimeout: http.keepAliveTimeout,
  };
}

function applyHttp1Bounds(server: Http2SecureServer, http: AppContext['config']['http']): void {
  Object.assign(server, {
    maxHeaderSize: http.maxHeaderSize,
    headersTimeout: http.headersTimeout,
    requestTimeout: http.requestTimeout,
    keepAliveTimeout: http.keepAliveTimeout,
    connectionsCheckingInterval: checkingInterval(http.headersTimeout, http.requestTimeout),
    requireHostHeader: false,
  });
}

export function buildApp(
  ctx: AppContext,
  logger: Logger,
  tls: TlsCredentials | null = null,
): FastifyInstance {
  const http = ctx.config.http;
  const meters = ctx.obs?.meters;
  const app = Fastify({
    ...(tls ? secureServer(tls, http) : {}),
    loggerInstance: logger,
    // No per-request lines: they would carry URLs, and URLs may carry tokens and cursors.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyChildLoggerFactory as never,
    // `req-<n>`: unique in the process, the `reqId` of every line about the request or its stream.
    genReqId: nextRequestId,
    bodyLimit: ctx.config.limits.maxBodyBytes,
    // Topic names may be 200 characters; Fastify's default caps params at 100.
    routerOptions: { maxParamLength: 256, ignoreTrailingSlash: true },
    return503OnClosing: true,
    // Receiving a request (head and body) is bounded; answering it is not: streams last.
    requestTimeout: http.requestTimeout,
    keepAliveTimeout: http.keepAliveTimeout,
    http: {
      // Node answers a larger request head with 431.
      maxHeaderSize: http.maxHeaderSize,
      headersTimeout: http.headersTimeout,
      requestTimeout: http.requestTimeout,
      // How often the two timeouts are checked (Node's default, 30 s, would add up to that much).
      connectionsCheckingInterval: checkingInterval(http.headersTimeout, http.requestTimeout),
      // A missing Host is checked with the others, below, for a catalogue answer.
      requireHostHeader: false,
    },
    clientErrorHandler: clientErrorHandler(logger, {
      maxHeaderSize: http.maxHeaderSize,
      maxHeadersCount: http.maxHeadersCount,
    }),
  } as FastifyServerOptions) as unknown as FastifyInstance;
  if (tls) applyHttp1Bounds(app.server as unknown as Http2SecureServer, http);

  // The route schemas validate requests and are the API description (`api/openapi.ts`), which
  // collects the routes added after it is registered: they are added in `app.after`, below.
  useRouteSchemas(app);
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  registerOpenapi(app, ctx);

  // Routes answer HTTP/1.1 and HTTP/2 alike; HTTP/2 forbids the connection-specific headers some
  // set for HTTP/1.1 (`connection: close` with a refusal, the 426's `upgrade`), and Node throws on
  // them rather than drop them (RFC 9113 §8.2.2).
  if (tls) {
    app.addHook('onSend', (req, reply, payload, done) => {
      if (req.raw.httpVersionMajor === 2) {
        for (const h of H2_FORBIDDEN_HEADERS) if (reply.hasHeader(h)) void reply.removeHeader(h);
      }
      done(null, payload);
    });
  }

  // Node bounds an HTTP/1.1 request's head and body (headersTimeout, requestTimeout), not an
  // HTTP/2 stream's: a client trickling a body one byte at a time would hold its stream, and what
  // it sent so far, for as long as it liked. The same bound here: a body not received within
  // requestTimeout gets 408 request_timeout and the stream is closed (RST_STREAM NO_ERROR after
  // the answer, RFC 9113 §8.1), so the request is never handled.
  if (tls && http.requestTimeout > 0) {
    app.addHook('onRequest', (req, reply, done) => {
      const raw = req.raw as unknown as Http2ServerRequest;
      if (raw.httpVersionMajor !== 2 || raw.stream.endAfterHeaders) return done();
      const stream = raw.stream;
      const timer = setTimeout(() => {
        if (raw.complete || stream.destroyed) return;
        // Nothing more is read: the request is never handled.
        stream.pause();
        const close = (): void => stream.close(h2constants.NGHTTP2_NO_ERROR);
        if (reply.sent || stream.headersSent) return close();
        // Once the answer is out (END_STREAM), the half the client still holds open is reset.
        stream.once('finish', close);
        const e = new RillError('request_timeout');
        void reply.code(408).type('application/json; charset=utf-8').send(e.toJSON());
      }, http.requestTimeout);
      stream.once('close', () => clearTimeout(timer));
      raw.once('end', () => clearTimeout(timer));
      done();
    });
  }

  // First of all: is this a Host the server answers for (DNS rebinding)?
  const hosts = new HostPolicy(http.allowedHosts, ctx.config.host);
  app.addHook('onRequest', (req, reply, done) => {
    // HTTP/2 names the host in `:authority` (a `Host` header is the fallback, RFC 9113 §8.3.1).
    const host =
      req.raw.httpVersionMajor === 2
        ? ((req.headers[':authority'] as string | undefined) ?? req.headers.host)
        : req.headers.host;
    const e = hosts.check(host, req.raw.httpVersion);
    if (e === null) return done();
    meters?.error('http', e);
    void reply.code(e.status).type('application/json; charset=utf-8').send(e.toJSON());
  });

  // Node 22 silently drops the headers past maxHeadersCount; keeping one more than allowed makes
  // "too many" visible, and such requests get a 431 (upgrades: in ws-upgrade.ts; Node 24's parser refuses
  // more than that itself: connection.ts).
  const maxHeaders = http.maxHeadersCount;
  app.server.maxHeadersCount = maxHeaders + 1;
  app.addHook('onRequest', (req, reply, done) => {
    const raw = req.raw.rawHeaders;
    if (raw.length / 2 <= maxHeaders) return done();
    // HTTP/2 lists its pseudo-headers among them: they are not the client's headers.
    if (req.raw.httpVersionMajor === 2 && raw.length / 2 - pseudoHeaders(raw) <= maxHeaders) {
      return done();
    }
    const e = tooManyHeaders(maxHeaders);
    meters?.error('http', e);
    void reply.code(431).type('application/json; charset=utf-8').send(e.toJSON());
  });

  // Every query parameter but the list ones takes one value: repeated, it is refused here for
  // every route, before a handler could read an array where it expects a string.
  app.addHook('onRequest', (req, _reply, done) => done(queryError(req.query) ?? undefined));

  // CORS for the configured origins (preflights are answered in its hook, before authentication),
  // then who the request is.
  corsPlugin(app, http.allowedOrigins, ctx.auth.settings.cookie);
  authHook(app, ctx.auth);

  // Publish takes JSON or NDJSON only; anything else is a 415, not a string event. Both bodies
  // must be valid UTF-8 (never decoded with U+FFFD in place of bad bytes); JSON is parsed by
  // plain JSON.parse and every event then checked by the one event validator (parseEventInput).
  app.removeContentTypeParser(['text/plain', 'application/json']);
  const bodyLimit = ctx.config.limits.maxBodyBytes;
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit },
    (req, body, done) => {
      req.bodyBytes = (body as Buffer).length;
      try {
        done(null, parseJsonBody(body as Buffer));
      } catch (err) {
        done(err as Error);
      }
    },
  );
  app.addContentTypeParser(
    'application/x-ndjson',
    { parseAs: 'buffer', bodyLimit },
    (req, body, done) => {
      req.bodyBytes = (body as Buffer).length;
      try {
        done(null, decodeUtf8Body(body as Buffer));
      } catch (err) {
        done(err as Error);
      }
    },
  );

  app.decorateRequest('bodyBytes', 0);

  app.setErrorHandler((err, req, reply) => {
    const e = validationError(err, req) ?? toRillError(err);
    meters?.error('http', e);
    if (e.code === 'internal') req.log.error({ err }, 'unhandled error');
    else if (e.code === 'engine_unavailable') req.log.warn({ err }, 'engine unavailable');
    const retryAfter = retryAfterSeconds(e);
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    const challenge = challengeFor(e);
    if (challenge !== undefined) void reply.header('www-authenticate', challenge);
    return reply.code(e.status).type('application/json; charset=utf-8').send(e.toJSON());
  });

  app.setNotFoundHandler((req, reply) => {
    const e = new RillError('not_found', `No route ${req.method} ${req.url.split('?')[0]}`);
    meters?.error('http', e);
    return reply.code(404).send(e.toJSON());
  });

  // A 503 or 507 is a state logged where it arises (engine down or full, shutdown, connection
  // budget), not once per request.
  app.addHook('onResponse', (req, reply, done) => {
    if (reply.statusCode >= 500 && reply.statusCode !== 503 && reply.statusCode !== 507) {
      req.log.warn({ method: req.method, route: req.routeOptions.url, status: reply.statusCode });
    }
    done();
  });

  app.after(() => routes(app, ctx, hosts));
  return app;
}

/** Every route, each with its schema (`api/schemas.ts`). */
function routes(app: FastifyInstance, ctx: AppContext, hosts: HostPolicy): void {
  app.get(
    '/healthz',
    route({
      summary: 'Liveness',
      description: 'Answers while the process serves requests (even when overloaded).',
      tags: ['observability'],
      operationId: 'getHealth',
      security: [],
      response: {
        200: json('Alive', {
          type: 'object',
          required: ['status'],
          properties: { status: { const: 'ok' } },
        }),
        ...errors(),
      },
    }),
    async () => ({ status: 'ok' }),
  );
  app.get(
    '/readyz',
    route({
      summary: 'Readiness',
      description:
        'Ready for new clients: the engine answers, the server is not shutting down nor overloaded.',
      tags: ['observability'],
      operationId: 'getReady',
      security: [],
      response: {
        200: json('Ready', {
          type: 'object',
          required: ['status', 'engine', 'subscribers'],
          properties: {
            status: { const: 'ready' },
            engine: { type: 'string' },
            subscribers: { type: 'integer', minimum: 0 },
          },
        }),
        ...errors('shutting_down', 'overloaded', 'engine_unavailable'),
      },
    }),
    async (_req, reply) => {
      if (ctx.state.closing) {
        return reply.code(503).send(new RillError('shutting_down').toJSON());
      }
      // Overloaded: not ready, so that a load balancer sends new clients elsewhere (open streams
      // stay; /healthz still answers 200: the process is alive and need not be restarted).
      if (ctx.load?.overloaded) {
        const e = new RillError('overloaded');
        return reply
          .code(503)
          .header('retry-after', String(retryAfterSeconds(e)))
          .send(e.toJSON());
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
    },
  );
  // `/`: a browser is sent to the dashboard; scripts (curl, fetch: `*/*`) get the API index. The
  // demo page comes with the demo feed (--demo), at /demo.
  app.get(
    '/',
    route({
      summary: 'API index',
      description:
        'The endpoints, for a script; a browser (Accept: text/html) is sent to the dashboard.',
      tags: ['meta'],
      operationId: 'getIndex',
      security: [],
      response: {
        200: json('The endpoints', {
          type: 'object',
          required: ['name', 'endpoints', 'docs'],
          properties: {
            name: { type: 'string' },
            endpoints: { type: 'object', additionalProperties: { type: 'string' } },
            docs: { type: 'string' },
          },
        }),
        302: { description: 'To the dashboard (/ui/), for a browser', type: 'null' },
        ...errors(),
      },
    }),
    async (req, reply) => {
      if (wantsHtml(req.headers.accept)) return reply.redirect(UI_PATH, 302);
      return API_INDEX;
    },
  );
  if (ctx.config.demo) {
    app.get(
      '/demo',
      route({
        summary: 'Demo page',
        description: 'A page subscribed to the demo feed; served with --demo only.',
        tags: ['meta'],
        operationId: 'getDemo',
        security: [],
        response: {
          200: {
            description: 'The page',
            content: { 'text/html': { schema: { type: 'string' } } },
          },
        },
      }),
      async (_req, reply) => reply.type('text/html; charset=utf-8').send(demoPage),
    );
  }
  openapiRoute(app);
  uiRoutes(app);
  adminRoutes(app, ctx);

  publishRoutes(app, ctx);
  topicRoutes(app, ctx);
  topicAdminRoutes(app, ctx);
  presenceRoutes(app, ctx);
  streamRoutes(app, ctx);
  wsRoutes(app, ctx, hosts);
  pollRoutes(app, ctx);
  statsRoutes(app, ctx);
}
