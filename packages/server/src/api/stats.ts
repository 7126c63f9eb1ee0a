import { createServer as createHttpServer, type Server } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator, Identity } from '../auth/index.js';
import { RillError } from '../model/errors.js';
import { checkAdmin, identityOf, requestCredentials } from './authn.js';
import type { AppContext } from './context.js';
import type { Observability } from './observability.js';
import { AUTH_ERRORS, errors, json, route, textAnswer } from './schemas.js';

/** How often `/v1/stats/stream` sends the numbers, ms. */
export const STATS_STREAM_INTERVAL_MS = 1_000;

/** Refuses an identity without the admin permission. */
function requireAdmin(identity: Identity): void {
  checkAdmin(identity, 'The admin permission is needed for metrics and stats');
}

/**
 * `/metrics` is not a `/v1` route, so the auth hook does not cover it: it authenticates here. On a
 * server without authentication it is open, as every route is (such a server binds a loopback
 * address unless `--insecure`).
 */
async function metricsIdentity(req: FastifyRequest, auth: Authenticator): Promise<Identity> {
  if (!auth.enabled) return identityOf(req, auth);
  return auth.authenticate(requestCredentials(req));
}

/**
 * The observability routes (docs/observability.md): `GET /metrics` (Prometheus text format),
 * `GET /v1/stats` (a JSON snapshot, cluster-wide on the shared engines, and over every worker
 * with `--workers`) and `GET /v1/stats/stream`
 * (the same every second as server-sent events). All need the admin permission when
 * authentication is on. Nothing is served with `metrics.enabled: false`.
 */
export function statsRoutes(app: FastifyInstance, ctx: AppContext): void {
  const obs = ctx.obs;
  if (!obs?.enabled || obs.registry === null) return;
  const registry = obs.registry;

  const admin = errors(...AUTH_ERRORS);
  app.get(
    '/metrics',
    route({
      summary: 'Prometheus metrics',
      description:
        'This node’s metrics in the Prometheus text format (docs/observability.md); the admin permission when authentication is on. Served with metrics.enabled (the default).',
      tags: ['observability'],
      operationId: 'getMetrics',
      response: {
        200: textAnswer('The metrics', ['text/plain; version=0.0.4']),
        ...admin,
      },
    }),
    async (req, reply) => {
      requireAdmin(await metricsIdentity(req, ctx.auth));
      const text = await obs.metricsText();
      return reply
        .header('content-type', registry.contentType)
        .header('cache-control', 'no-store')
        .send(text);
    },
  );

  app.get(
    '/v1/stats',
    route({
      summary: 'Stats snapshot',
      description:
        'A JSON snapshot of this node (cluster-wide on the shared engines): connections, rates, topics, the engine (docs/observability.md § Stats).',
      tags: ['observability'],
      operationId: 'getStats',
      response: { 200: json('The snapshot', { type: 'object' }), ...admin },
    }),
    async (req, reply) => {
      requireAdmin(identityOf(req, ctx.auth));
      return reply
        .type('application/json; charset=utf-8')
        .header('cache-control', 'no-store')
        .send(JSON.stringify(await obs.stats()));
    },
  );

  const streams = new Set<() => void>();
  app.get(
    '/v1/stats/stream',
    route({
      summary: 'Stats every second',
      description:
        'The stats snapshot as server-sent events: a stats event every second, heartbeats, and an error event when the server ends the stream.',
      tags: ['observability'],
      operationId: 'streamStats',
      response: {
        200: textAnswer('event: stats frames, data: the snapshot', ['text/event-stream']),
        ...errors(...AUTH_ERRORS, 'too_many_connections', 'shutting_down'),
      },
    }),
    async (req, reply) => {
      requireAdmin(identityOf(req, ctx.auth));
      if (ctx.state.closing) throw new RillError('shutting_down');
      const full = ctx.budget?.refuseStream();
      if (full) throw full;
      serveStatsStream(req, reply, obs, ctx, streams);
    },
  );
  app.addHook('preClose', (done) => {
    for (const end of [...streams]) end();
    done();
  });
}

function serveStatsStream(
  req: FastifyRequest,
  reply: FastifyReply,
  obs: Observability,
  ctx: AppContext,
  streams: Set<() => void>,
): void {
  // Headers the hooks set (CORS) go along: the stream is answered on the raw response.
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) reply.raw.setHeader(name, value);
  }
  reply.hijack();
  const res = reply.raw;
  const h2 = req.raw.httpVersionMajor === 2;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
    ...(h2 ? {} : { connection: 'keep-alive' }),
  });
  let lastWrite = Date.now();
  let sending = false;
  const send = async (): Promise<void> => {
    // One at a time: a slow node directory delays the next, never piles them up.
    if (sending || res.destroyed) return;
    sending = true;
    try {
      const doc = await obs.stats();
      if (res.destroyed) return;
      // A client that does not read gets no more until it has taken the last.
      if (res.writableLength > 64 * 1024) return;
      res.write(`event: stats\ndata: ${JSON.stringify(doc)}\n\n`);
      lastWrite = Date.now();
    } finally {
      sending = false;
    }
  };
  const heartbeatMs = ctx.config.sse.heartbeat;
  const timer = setInterval(() => {
    void send();
    if (Date.now() - lastWrite >= heartbeatMs && !res.destroyed) {
      res.write(': heartbeat\n\n');
      lastWrite = Date.now();
    }
  }, STATS_STREAM_INTERVAL_MS);
  timer.unref();
  let closed = false;
  const end = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    streams.delete(end);
    if (!res.destroyed) {
      const e = new RillError('shutting_down');
      res.end(`event: error\ndata: ${JSON.stringify(e.body())}\n\n`);
    }
  };
  streams.add(end);
  res.on('close', () => {
    closed = true;
    clearInterval(timer);
    streams.delete(end);
  });
  // At once on connect.
  void send();
}

/**
 * The separate metrics listener (`metrics.port`): `GET /metrics` only, without authentication, so
 * keep it on a private address (the default host is 127.0.0.1).
 */
export function metricsListener(obs: Observability): Server | null {
  const registry = obs.registry;
  if (registry === null) return null;
  return createHttpServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      const e = new RillError('not_found', 'This listener serves GET /metrics only');
      res.writeHead(404, { 'content-type': 'application/json; charset=utf-8' });
      res.end(JSON.stringify(e.toJSON()));
      return;
    }
    obs.metricsText().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      () => {
        res.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify(new RillError('internal').toJSON()));
      },
    );
  });
}
