import cluster from 'node:cluster';
import { randomInt } from 'node:crypto';
import type { Command } from 'commander';
import { Option } from 'commander';
import type { RillConfigInput } from '../config.js';
import {
  authEnabled,
  ConfigError,
  configFromEnv,
  isLoopback,
  mergeConfig,
  readConfigFile,
  resolveConfig,
} from '../config.js';
import type { Logger } from 'pino';
import type { Engine } from '../engine/engine.js';
import { redactUrl } from '../model/redact.js';
import { createServer, rootLogger, type RillServer } from '../server.js';
import { LmdbEngine } from '../engine/lmdb.js';
import { settingsHelp } from './settings.js';
import { currentWorkerId, NODE_ENV, supervise, WorkerLink, workerCount } from './workers.js';
import { newNodeId } from '../api/observability.js';

interface ServeFlags {
  host?: string;
  port?: string;
  engine?: string;
  dataDir?: string;
  redisUrl?: string;
  natsUrl?: string;
  config?: string;
  demo?: boolean;
  insecure?: boolean;
  logLevel?: string;
  tlsCert?: string;
  tlsKey?: string;
  workers?: string;
}

/** Topic the demo feeds and the interval between its events. */
export const DEMO_TOPIC = 'demo.random';
const DEMO_INTERVAL_MS = 100;

/** Exit codes of `rill serve`. */
export const EXIT = { ok: 0, runtime: 1, config: 2 } as const;

/** Resolves file, environment and flags (flags win) into one validated config. */
export function serveConfig(flags: ServeFlags, env: NodeJS.ProcessEnv): RillConfigInput {
  const file = flags.config ?? env.RILL_CONFIG;
  const fromFile = file ? readConfigFile(file) : {};
  const fromFlags: Record<string, unknown> = {
    host: flags.host,
    port: flags.port,
    engine: flags.engine,
    dataDir: flags.dataDir,
    redis: flags.redisUrl === undefined ? undefined : { url: flags.redisUrl },
    nats: flags.natsUrl === undefined ? undefined : { url: flags.natsUrl },
    demo: flags.demo,
    insecure: flags.insecure,
    logLevel: flags.logLevel,
    workers:
      flags.workers === undefined || flags.workers === 'auto' || !/^\d+$/.test(flags.workers)
        ? flags.workers
        : Number(flags.workers),
    tls:
      flags.tlsCert === undefined && flags.tlsKey === undefined
        ? undefined
        : { cert: flags.tlsCert, key: flags.tlsKey },
  };
  const merged = mergeConfig(fromFile, configFromEnv(env), fromFlags);
  resolveConfig(merged);
  return merged as RillConfigInput;
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('start a Rill server')
    .option('--host <host>', 'address to bind (default 127.0.0.1, env RILL_HOST)')
    .option('--port <port>', 'port to listen on (default 8080, env RILL_PORT)')
    .addOption(
      new Option('--engine <engine>', 'storage engine (default lmdb, env RILL_ENGINE)').choices([
        'memory',
        'lmdb',
        'redis',
        'nats',
      ]),
    )
    .option('--data-dir <dir>', 'lmdb data directory (default ./data, env RILL_DATA_DIR)')
    .option(
      '--redis-url <url>',
      'Redis for --engine redis (default redis://127.0.0.1:6379, env RILL_REDIS_URL)',
    )
    .option(
      '--nats-url <url>',
      'NATS for --engine nats (default nats://127.0.0.1:4222, env RILL_NATS_URL)',
    )
    .option('--config <file>', 'config file, JSON or YAML (env RILL_CONFIG)')
    .option('--demo', `publish a random integer 0-99 to ${DEMO_TOPIC} every ${DEMO_INTERVAL_MS} ms`)
    .option(
      '--insecure',
      'allow a non-loopback --host without authentication (not needed once auth is configured)',
    )
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default info)')
    .option(
      '--tls-cert <file>',
      'serve HTTPS and HTTP/2 with this PEM certificate chain (with --tls-key; env RILL_TLS__CERT)',
    )
    .option('--tls-key <file>', 'the PEM private key of --tls-cert (env RILL_TLS__KEY)')
    .option(
      '--workers <n>',
      'worker processes sharing the port: a number or auto, one per core (default 1, env RILL_WORKERS)',
    )
    .addHelpText('after', () => settingsHelp())
    .action(async (flags: ServeFlags) => {
      // Exit at once: once shut down, nothing left running (a broker client still retrying, a
      // timer) may keep the process alive.
      process.exit(await serve(flags));
    });
}

async function serve(flags: ServeFlags): Promise<number> {
  let input: RillConfigInput;
  try {
    input = serveConfig(flags, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`rill: ${err.message}\n`);
      return EXIT.config;
    }
    throw err;
  }
  const resolved = resolveConfig(input);
  const workers = workerCount(resolved.workers);
  const workerId = currentWorkerId();
  if (workers > 1 && cluster.isPrimary) {
    const log = rootLogger(resolved).child({ role: 'supervisor' });
    const reloads = authEnabled(resolved) || resolved.tls.cert !== undefined;
    const code = await supervise(resolved, workers, log, { reloads });
    await new Promise<void>((r) => log.flush(() => r()));
    return code;
  }
  const link =
    workerId === undefined
      ? undefined
      : new WorkerLink(workerId, workers, process.env[NODE_ENV] || newNodeId());
  let server;
  try {
    // A reload (SIGHUP) reads the configuration again as start-up did: file, environment, flags.
    server = await createServer(input, {
      loadConfig: () => serveConfig(flags, process.env),
      ...(link === undefined
        ? {}
        : {
            logger: rootLogger(resolved).child({ worker: link.id }),
            workerId: link.id,
            workers: link,
            enginePeers: { announce: (notices) => link.announce(notices) },
          }),
    });
  } catch (err) {
    process.stderr.write(`rill: ${(err as Error).message}\n`);
    return EXIT.config;
  }
  const { log, config } = server;
  if (link !== undefined && server.engine instanceof LmdbEngine) {
    const engine = server.engine;
    link.onAppended((notices) => engine.peerAppended(notices));
    link.onLost(() => engine.peerLost());
  }
  let url: string;
  try {
    url = await server.listen();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'EADDRINUSE'
        ? `port ${config.port} on ${config.host} is already in use (choose another with --port)`
        : e.message;
    process.stderr.write(`rill: cannot listen: ${why}\n`);
    await server.engine.close();
    return EXIT.runtime;
  }
  if (link !== undefined) {
    // The supervisor says where Rill listens once every worker does (`url` on that line only).
    log.info({ address: url }, `worker ${link.id} listening`);
    link.listening(url);
  }
  log[link === undefined ? 'info' : 'debug'](
    {
      ...(link === undefined ? { url } : { address: url }),
      engine: config.engine,
      dataDir: config.engine === 'lmdb' ? config.dataDir : undefined,
      redis: config.engine === 'redis' ? redactUrl(config.redis.url) : undefined,
      nats: config.engine === 'nats' ? redactUrl(config.nats.url) : undefined,
    },
    `Rill listening on ${url}`,
  );
  log.info({ dashboard: `${url}/ui/` }, `dashboard: ${url}/ui/`);
  if (authEnabled(config)) {
    log.info('authentication on: every /v1 request needs credentials or the anonymous grants');
  } else if (isLoopback(config.host)) {
    log.info('no credentials configured: listening on loopback only');
  } else {
    log.warn(`listening on ${config.host} WITHOUT authentication (--insecure)`);
  }
  const stopReloading = authEnabled(config) ? reloadOnSighup(server) : () => undefined;

  let demoTimer: NodeJS.Timeout | undefined;
  // With workers, the first one feeds the demo topic.
  if (config.demo && (link === undefined || link.id === 1)) {
    let failures = 0;
    demoTimer = setInterval(() => {
      server.engine.append(DEMO_TOPIC, [{ data: String(randomInt(100)) }]).then(
        () => {
          failures = 0;
        },
        (err: unknown) => {
          if (failures++ === 0) log.warn({ err }, 'demo publish failed');
        },
      );
    }, DEMO_INTERVAL_MS);
    log.info(
      `demo: publishing to ${DEMO_TOPIC}; open ${url}/demo or curl -N ${url}/v1/topics/${DEMO_TOPIC}/stream`,
    );
  }

  return new Promise<number>((resolve) => {
    // The process exits right after: let the log reach stdout first, all of it and in order.
    const resolveExit = (code: number): void => {
      const late = setTimeout(() => resolve(code), 1_000);
      log.flush(() => {
        clearTimeout(late);
        resolve(code);
      });
    };
    let stopping = false;
    const stop = (signal: string): void => {
      // A worker's signals may come twice (the supervisor's and a service manager's, sent to the
      // whole group): the supervisor alone escalates, with SIGKILL.
      if (stopping && link !== undefined) return;
      if (stopping) {
        log.warn(`${signal} again: exiting now`);
        process.exit(EXIT.runtime);
      }
      stopping = true;
      stopReloading();
      log.info({ signal }, 'shutting down');
      if (demoTimer) clearInterval(demoTimer);
      const force = setTimeout(() => {
        log.error('shutdown timed out; exiting');
        // Whatever is still open, the engine is closed (lmdb syncs and releases its files).
        void closeEngine(server.engine, log).finally(() => resolveExit(EXIT.runtime));
      }, config.shutdownTimeout);
      server.close().then(
        () => {
          clearTimeout(force);
          log.info('stopped');
          resolveExit(EXIT.ok);
        },
        (err: unknown) => {
          clearTimeout(force);
          log.error({ err }, 'error during shutdown');
          resolveExit(EXIT.runtime);
        },
      );
    };
    if (link === undefined) {
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    } else {
      process.on('SIGTERM', () => stop('SIGTERM'));
      // A terminal's Ctrl-C reaches every process of the group: the supervisor turns it into the
      // SIGTERM each worker stops on.
      process.on('SIGINT', () => undefined);
      // A supervisor that is gone (killed) takes the workers with it: node:cluster ends a worker
      // whose IPC channel closes unasked, at once (what it committed is stored; clients resume).
    }
    // SIGHUP re-reads the certificate and key (renewed in place by certbot and the like). Only
    // with TLS (or auth, above): without either SIGHUP keeps its default meaning.
    if (config.tls.cert !== undefined) {
      process.on('SIGHUP', () => {
        log.info({ signal: 'SIGHUP' }, 'reloading the TLS certificate and key');
        server.reloadTls();
      });
    }
  });
}

/**
 * `SIGHUP` reloads the authentication settings (the configuration file and environment, the keys
 * file, each JWKS), logging what changed or why nothing did; the server goes on either way. Its
 * own handler, next to the TLS one: each reloads what it owns. Returns what removes it.
 */
export function reloadOnSighup(server: RillServer): () => void {
  const { log } = server;
  const onHup = (): void => {
    log.info({ signal: 'SIGHUP' }, 'reloading the authentication settings');
    server.reload().then(
      (r) =>
        log.info({ revoked: r.revoked, changed: r.changed }, 'authentication settings reloaded'),
      // The authenticator has logged why; the settings in use stay.
      () => undefined,
    );
  };
  process.on('SIGHUP', onHup);
  return () => process.off('SIGHUP', onHup);
}

/** Longest wait for the engine to close once the shutdown timeout has passed, ms. */
const ENGINE_CLOSE_TIMEOUT_MS = 5_000;

async function closeEngine(engine: Engine, log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>(
    (r) => (timer = setTimeout(() => r('late'), ENGINE_CLOSE_TIMEOUT_MS)),
  );
  try {
    const r = await Promise.race([engine.close().then(() => 'closed' as const), late]);
    if (r === 'closed') log.info('engine closed');
    else log.error(`the engine did not close in ${ENGINE_CLOSE_TIMEOUT_MS} ms`);
  } catch (err) {
    log.error({ err }, 'error closing the engine');
  } finally {
    clearTimeout(timer);
  }
}
