import type { Http2SecureServer } from 'node:http2';
import { resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { pino } from 'pino';
import pinoPretty from 'pino-pretty';
import type { RillConfig, RillConfigInput } from './config.js';
import {
  authEnabled,
  engineRetention,
  ConfigError,
  isLoopback,
  LOG_COMPONENTS,
  type LogComponent,
  readTlsPair,
  resolveConfig,
  TlsFileError,
  type TlsPair,
} from './config.js';
import { Authenticator, type ReloadReport } from './auth/index.js';
import { redactAccessToken } from './model/redact.js';
import type { Engine } from './engine/engine.js';
import type { EngineLog, EngineOptions } from './engine/engine.js';
import { LmdbEngine, type AppendPeers } from './engine/lmdb.js';
import { MemoryEngine } from './engine/memory.js';
import { NatsEngine } from './engine/nats/engine.js';
import { RedisEngine } from './engine/redis/engine.js';
import type { Server as HttpServer } from 'node:http';
import { buildApp } from './api/app.js';
import { RequestLimits } from './api/limits.js';
import { Observability } from './api/observability.js';
import { metricsListener } from './api/stats.js';
import { instrumentEngine } from './engine/instrumented.js';
import { OpenStreams } from './api/open-streams.js';
import { setRequestIdWorker } from './api/request-id.js';
import type { WorkerPeers } from './api/worker-views.js';
import {
  ClientAddresses,
  KnownTopics,
  Limiter,
  NatsSync,
  RedisSync,
  SharedLimits,
  type SyncTransport,
} from './limits/index.js';
import { ConnectionBudget } from './net/capacity.js';
import { LoadMonitor } from './net/overload.js';
import { ConnectionRegistry } from './net/connection.js';
import { Hub } from './fanout/hub.js';
import { Hooks, hooksConfigured } from './hooks/index.js';
import { NatsClusterBus, RedisClusterBus, type ClusterBus } from './cluster/index.js';
import {
  LocalPresenceStore,
  NatsPresenceStore,
  PresenceService,
  RedisPresenceStore,
  type PresenceStore,
} from './presence/index.js';
import { probeNodeHttp } from './net/node-http-internals.js';
import { hasCoordination } from './engine/engine.js';
import { WebhookMetrics, Webhooks } from './webhooks/index.js';
import { probeWs } from './net/ws-internals.js';

/**
 * Checks the fast paths that rely on dependency internals (once per process, cached) and says
 * which are on: one that is off costs speed and memory, not correctness.
 */
function logFastPaths(log: Logger): void {
  const probes = { detachedStreams: probeNodeHttp(), wsRawFrames: probeWs() };
  const fastPaths = Object.fromEntries(Object.entries(probes).map(([k, p]) => [k, p.ok]));
  log.info({ fastPaths }, 'fast paths');
  for (const [name, p] of Object.entries(probes)) {
    if (!p.ok) log.warn({ fastPath: name, missing: p.reason }, 'fast path off: internals changed');
  }
}

/** Pending connections the kernel may queue for accept (see listen()). */
const LISTEN_BACKLOG = 4096;

export interface RillServer {
  readonly config: RillConfig;
  readonly engine: Engine;
  readonly hub: Hub;
  readonly app: FastifyInstance;
  /** Counters, metrics and stats (docs/observability.md). */
  readonly obs: Observability;
  /** The metrics listener's URL (`metrics.port`), once listening; null without one. */
  readonly metricsUrl: string | null;
  readonly log: Logger;
  /** Who a request is; `enabled` is false on a server without an `auth` section. */
  readonly auth: Authenticator;
  /** The rate and count limits of this node (docs/limits.md). */
  readonly limiter: Limiter;
  /** The exchange of limit counts with the other nodes; null when each node counts alone. */
  readonly sharedLimits: SharedLimits | null;
  /**
   * Re-reads the `auth` settings (the configuration file and environment, through
   * `CreateServerOptions.loadConfig`), the keys file and every JWKS, as `SIGHUP` does. Streams of
   * credentials it revoked end with `unauthorized`. Rejects, changing nothing, when the new
   * settings cannot be used.
   */
  reload(): Promise<ReloadReport>;
  /** Binds the configured host and port; resolves with the base URL. */
  listen(): Promise<string>;
  /**
   * Reads the TLS certificate and key again (SIGHUP) and serves new connections with them;
   * connections already open keep theirs. A pair that cannot be read, parsed or used is refused:
   * the old one stays and the error is logged. Returns whether the new pair is in use (false
   * without TLS).
   */
  reloadTls(): boolean;
  /**
   * Graceful shutdown: stop accepting, end open streams with `shutting_down` so clients resume
   * elsewhere, let in-flight publishes finish, then close the engine.
   */
  close(): Promise<void>;
}

/**
 * With the redis and nats engines (and `rateLimits.shared: auto`) the nodes share their limit
 * counts through the engine's broker; otherwise each node counts alone.
 */
function sharedLimits(config: RillConfig, limiter: Limiter, log: Logger): SharedLimits | null {
  const rl = config.rateLimits;
  if (!rl.enabled || rl.shared === 'local') return null;
  // A node's counts stay in the others' checks this long after its last exchange.
  const fresh = Math.max(2_000, rl.syncInterval * 5);
  let transport: SyncTransport;
  if (config.engine === 'redis')
    transport = new RedisSync(config.redis.url, config.redis.prefix, fresh);
  else if (config.engine === 'nats')
    transport = new NatsSync(config.nats.url, config.nats.prefix, fresh);
  else return null;
  return new SharedLimits(limiter, transport, rl.syncInterval, log);
}

/** With the redis and nats engines, the broker through which nodes send each other commands. */
function clusterBus(config: RillConfig): ClusterBus | null {
  if (config.engine === 'redis') return new RedisClusterBus(config.redis.url, config.redis.prefix);
  if (config.engine === 'nats') return new NatsClusterBus(config.nats.url, config.nats.prefix);
  return null;
}

export interface CreateServerOptions {
  /** Use this engine instead of building the configured one (tests, embedding). */
  engine?: Engine;
  logger?: Logger;
  /**
   * For the lmdb engine built from the configuration: the other processes opening the same
   * directory (the workers of one `rill serve --workers`). Ignored by the other engines.
   */
  enginePeers?: AppendPeers;
  /**
   * The worker this server is, in `rill serve --workers`: each response then says so in a
   * `rill-worker` header (which process served a request, for operators and tests).
   */
  workerId?: number;
  /**
   * In `rill serve --workers`: the link to the node's other workers, over which `/metrics`,
   * `/v1/stats` and `/v1/connections` cover all of them (api/worker-views.ts).
   */
  workers?: WorkerPeers;
  /**
   * Reads the configuration again (file, environment, flags), for {@link RillServer.reload}. Only
   * its `auth` section is taken; without it a reload re-reads the keys file and JWKS only.
   */
  loadConfig?: () => RillConfigInput | Promise<RillConfigInput>;
}

/**
 * Creates a Rill server: engine, hub and HTTP API.
 *
 * @example
 * const server = await createServer({ engine: 'memory', port: 0 });
 * const url = await server.listen();
 */
export async function createServer(
  input: RillConfigInput = {},
  options: CreateServerOptions = {},
): Promise<RillServer> {
  const config = resolveConfig(input);
  const log = options.logger ?? rootLogger(config);
  const logs = componentLoggers(log, config);
  if (!isLoopback(config.host) && !config.insecure && !authEnabled(config)) {
    throw new Error(
      `Refusing to listen on ${config.host} without authentication: Rill binds a loopback address ` +
        `unless credentials are configured (the auth section, e.g. RILL_AUTH__JWT__SECRET). ` +
        `Use --host 127.0.0.1, configure auth, or --insecure to expose it unauthenticated.`,
    );
  }
  const auth = await Authenticator.create(config.auth, {
    logger: logs.auth,
    ...(options.loadConfig
      ? { loadSettings: async () => resolveConfig(await options.loadConfig!()).auth }
      : {}),
  });
  logFastPaths(log);
  const engine = options.engine ?? createEngine(config, logs.engine, options.enginePeers);
  const budget = new ConnectionBudget(logs.http);
  const load = new LoadMonitor(config.overload, logs.http);
  // Everything but the caller sees the engine through its meter (appends and reads timed).
  if (options.workerId !== undefined) setRequestIdWorker(options.workerId);
  const obs = new Observability({
    config,
    engine,
    budget,
    ...(options.workers === undefined ? {} : { workers: options.workers }),
  });
  const used = config.metrics.enabled ? instrumentEngine(engine, obs.engineMeter) : engine;
  const hub = new Hub(used, {
    limits: {
      maxSubscriberBufferBytes: config.limits.maxSubscriberBufferBytes,
      replayBatch: config.limits.replayBatch,
      maxTopicsPerSubscription: config.limits.maxTopicsPerSubscription,
      maxCursorTopics: config.limits.maxCursorTopics,
    },
    heartbeatMs: config.sse.heartbeat,
    log: logs.fanout,
    meters: obs.meters,
  });
  obs.attach(hub);
  const presence = config.presence.enabled
    ? new PresenceService(createPresenceStore(config, logs.engine), {
        graceMs: config.presence.grace,
        rereadMs:
          config.engine === 'redis' || config.engine === 'nats'
            ? Math.max(100, Math.floor(config.presence.ttl / 3))
            : 0,
        log: logs.fanout,
      })
    : null;
  let webhooks: Webhooks | null = null;
  if (config.webhooks.length > 0) {
    if (!hasCoordination(engine)) {
      throw new ConfigError(
        `webhooks: the ${engine.name} engine cannot hold a lease or store a cursor (no Coordination)`,
      );
    }
    webhooks = new Webhooks(config.webhooks, {
      engine,
      node: obs.id,
      leaseMs: config.webhookLease,
      metrics: new WebhookMetrics(obs.registry),
      log: logs.webhooks,
    });
  }
  const state = { closing: false };
  const streams = new OpenStreams();
  const hooks = hooksConfigured(config.hooks) ? new Hooks(config.hooks, { log: logs.http }) : null;
  if (hooks) obs.attachHooks(hooks.meter);
  const cluster = clusterBus(config);
  // Another node was asked to end a subject's connections: end this node's too.
  cluster?.onCommand((cmd, from) => {
    const ended = streams.disconnectSubject(cmd.sub);
    log.info({ sub: cmd.sub, from, disconnected: ended }, 'cluster: disconnected a subject');
  });
  // A revoked credential's streams end now, whatever opened them (SSE, NDJSON, long-poll, WebSocket).
  auth.on('revoked', (report) => {
    const ended = streams.revoke(report.revoked);
    if (ended > 0) logs.auth.info({ revoked: report.revoked, ended }, 'ended revoked streams');
  });
  const tlsPaths = tlsFiles(config);
  // Checked already by resolveConfig; read once more for use (the files may have changed since).
  let tls: TlsPair | null = tlsPaths ? readTlsOrThrow(tlsPaths) : null;
  const limiter = new Limiter(config.rateLimits);
  const shared = sharedLimits(config, limiter, log);
  const limits = new RequestLimits(
    limiter,
    new ClientAddresses(config.rateLimits.trustedProxies, config.rateLimits.exemptAddresses),
    new KnownTopics((topic) => engine.head(topic)),
  );
  const app = buildApp(
    {
      config,
      engine: used,
      hub,
      presence,
      hooks,
      cluster,
      state,
      budget,
      load,
      auth,
      streams,
      limits,
      logs: { http: logs.http, ws: logs.ws },
      obs,
      ...(options.workers === undefined ? {} : { workers: options.workers }),
    },
    logs.http,
    tls,
  );
  const metricsServer = config.metrics.port === undefined ? null : metricsListener(obs);
  let metricsUrl: string | null = null;
  if (options.workerId !== undefined) {
    const worker = String(options.workerId);
    app.addHook('onRequest', (_req, reply, done) => {
      reply.header('rill-worker', worker);
      done();
    });
  }
  if (tls)
    log.info(
      tlsFields(tlsPaths!, tls),
      'TLS on: HTTP/2, and HTTP/1.1 for clients that do not offer it',
    );
  // An HTTP/2 session still finishing at shutdown is cut well before the CLI's shutdown timeout.
  const connections = new ConnectionRegistry(app.server, {
    http2CloseGraceMs: Math.max(1000, Math.floor(config.shutdownTimeout / 2)),
  });
  // Streams never end on their own: end them first, or closing the listener would wait forever.
  app.addHook('preClose', (done) => {
    state.closing = true;
    obs.close();
    auth.close();
    streams.close();
    hub.close();
    done();
    // By now the listener is closed and node:http has closed its idle keep-alive connections.
    setImmediate(() => connections.closeUnused());
  });

  let closing: Promise<void> | null = null;
  return {
    config,
    engine,
    hub,
    app,
    log,
    auth,
    limiter,
    sharedLimits: shared,
    obs,
    get metricsUrl() {
      return metricsUrl;
    },
    reload: () => auth.reload(),
    async listen() {
      // A reconnect storm (thousands of clients back at once) overflows Node's default accept
      // backlog of 511: the kernel then resets connections the clients believed open
      // (ECONNRESET in packages/bench/storm.js). The kernel caps this at net.core.somaxconn.
      budget.attach(app.server, connections);
      load.start();
      // Commands from the other nodes are heard before this node takes connections; a broker
      // that is down is the engine's to report, and the bus subscribes again once it is back.
      await cluster?.ready(5_000).catch((err: unknown) => {
        log.warn({ err }, 'cluster: cannot hear the other nodes yet');
      });
      await app.listen({ host: config.host, port: config.port, backlog: LISTEN_BACKLOG });
      const addr = app.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : config.port;
      const host = config.host.includes(':') ? `[${config.host}]` : config.host;
      if (metricsServer) metricsUrl = await listenMetrics(metricsServer, config);
      obs.start();
      webhooks?.start();
      return `${tls ? 'https' : 'http'}://${host}:${port}`;
    },
    reloadTls() {
      if (!tlsPaths || !tls) return false;
      let next: TlsPair;
      try {
        next = readTlsPair(tlsPaths);
      } catch (err) {
        const setting = err instanceof TlsFileError ? `tls.${err.key}` : 'tls';
        const file = err instanceof TlsFileError ? tlsPaths[err.key] : undefined;
        log.error(
          { ...tlsFields(tlsPaths, tls), setting, file, error: (err as Error).message },
          `TLS reload failed: ${setting}${file ? ` (${file})` : ''}: ${(err as Error).message}; ` +
            'still serving the previous certificate',
        );
        return false;
      }
      (app.server as unknown as Http2SecureServer).setSecureContext({
        cert: next.cert,
        key: next.key,
      });
      log.info(
        { ...tlsFields(tlsPaths, next), previousFingerprint: tls.fingerprint },
        'TLS certificate reloaded',
      );
      tls = next;
      return true;
    },
    close() {
      closing ??= (async () => {
        try {
          await app.close();
        } finally {
          obs.close();
          if (metricsServer) await closeMetrics(metricsServer);
          budget.close();
          limiter.close();
          await shared?.close().catch(() => undefined);
          load.stop();
          auth.close();
          streams.close();
          await presence?.close();
          await webhooks?.close();
          await cluster?.close().catch(() => undefined);
          await engine.close();
        }
      })();
      return closing;
    },
  };
}

/**
 * Log fields that may hold a credential, wherever they appear: replaced with `[redacted]`. Request
 * URLs are redacted by {@link serializeRequest}; the code never logs headers or tokens itself, so
 * this is the second line of defence.
 */
const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  '*.headers.authorization',
  '*.headers.cookie',
  'authorization',
  'cookie',
  'token',
  'accessToken',
  'access_token',
  'password',
  'secret',
  '*.authorization',
  '*.cookie',
  '*.token',
  '*.accessToken',
  '*.access_token',
  '*.password',
  '*.secret',
];

/**
 * The process's logger: JSON lines on standard output, or readable lines (pino-pretty) when it is
 * a terminal or `log.pretty` says so. Its level is `logLevel`; components may differ
 * ({@link componentLoggers}).
 */
export function rootLogger(config: RillConfig): Logger {
  const options = {
    level: config.logLevel,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    // A request's URL may carry a token (`access_token`, for EventSource): never logged as is.
    serializers: { req: serializeRequest },
  };
  if (!(config.log.pretty ?? process.stdout.isTTY === true)) return pino(options);
  // In process and synchronous: a terminal is read by a person, at a person's pace, and the lines
  // must be out before the process exits.
  return pino(
    options,
    pinoPretty({ sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }),
  );
}

/**
 * A child logger per component (`component` on each line), at its `log.levels` level when one is
 * set, else at the root's: the http one is Fastify's (requests, SSE, NDJSON and long-poll streams),
 * ws the WebSocket connections', engine, auth, fanout and webhooks their modules'.
 */
function componentLoggers(root: Logger, config: RillConfig): Record<LogComponent, Logger> {
  const out = {} as Record<LogComponent, Logger>;
  for (const c of LOG_COMPONENTS) {
    const level = config.log.levels[c];
    out[c] = root.child({ component: c }, level === undefined ? {} : { level });
  }
  return out;
}

/** Binds the metrics listener; resolves with its URL. */
async function listenMetrics(server: HttpServer, config: RillConfig): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: config.metrics.host, port: config.metrics.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.metrics.port;
  const host = config.metrics.host.includes(':') ? `[${config.metrics.host}]` : config.metrics.host;
  return `http://${host}:${port}/metrics`;
}

function closeMetrics(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** A request as log lines show it: its URL without the `access_token` query parameter's value. */
function serializeRequest(req: { method?: string; url?: string; id?: unknown }): object {
  return {
    method: req.method,
    url: req.url === undefined ? undefined : redactAccessToken(req.url),
    ...(req.id === undefined ? {} : { id: req.id }),
  };
}

/** The TLS files the configuration names, or null for plain HTTP. */
function tlsFiles(config: RillConfig): { cert: string; key: string } | null {
  const { cert, key } = config.tls;
  return cert !== undefined && key !== undefined ? { cert, key } : null;
}

/** The pair at `paths`, or a ConfigError naming the setting whose file is wrong. */
function readTlsOrThrow(paths: { cert: string; key: string }): TlsPair {
  try {
    return readTlsPair(paths);
  } catch (err) {
    if (!(err instanceof TlsFileError)) throw err;
    throw new ConfigError(`tls.${err.key} (${paths[err.key]}): ${err.message}`);
  }
}

/** What the log says about a certificate in use. */
function tlsFields(paths: { cert: string; key: string }, pair: TlsPair): Record<string, string> {
  return { cert: paths.cert, key: paths.key, fingerprint: pair.fingerprint, validTo: pair.validTo };
}

/**
 * Where presence is kept: in Redis or NATS with those engines (every node sees every node's
 * subscribers), else in this process.
 */
function createPresenceStore(config: RillConfig, log: EngineLog): PresenceStore {
  const ttlMs = config.presence.ttl;
  switch (config.engine) {
    case 'redis':
      return new RedisPresenceStore({
        url: config.redis.url,
        prefix: config.redis.prefix,
        ttlMs,
        log,
      });
    case 'nats':
      return new NatsPresenceStore({
        url: config.nats.url,
        prefix: config.nats.prefix,
        ttlMs,
        log,
      });
    default:
      return new LocalPresenceStore();
  }
}

/** Builds the engine the configuration names. */
export function createEngine(config: RillConfig, log?: EngineLog, peers?: AppendPeers): Engine {
  const options: EngineOptions = {
    retention: engineRetention(config),
    maxStoreBytes: config.storage.maxBytes,
    idempotencyWindowMs: config.idempotencyWindow,
    ...(log === undefined ? {} : { log }),
  };
  switch (config.engine) {
    case 'memory':
      return new MemoryEngine(options);
    case 'lmdb':
      return new LmdbEngine({
        ...options,
        path: resolve(config.dataDir),
        ...(peers === undefined ? {} : { peers }),
      });
    case 'redis':
      return new RedisEngine({ ...options, url: config.redis.url, prefix: config.redis.prefix });
    case 'nats':
      return new NatsEngine({
        ...options,
        url: config.nats.url,
        prefix: config.nats.prefix,
        replicas: config.nats.replicas,
      });
  }
}
