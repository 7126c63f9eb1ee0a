import { Redis, type RedisOptions } from 'ioredis';
import { RillError, isRillError } from '../../model/errors.js';
import type { EngineLog } from '../engine.js';
import { ReachabilityLog, StorageLog, storageFull } from '../common.js';
import { quietly, type Lifecycle } from '../lifecycle.js';
import type { AppendReply, StreamEntry } from './codec.js';
import { APPEND, DELETE, PURGE, READ, SEQ_AT_TIME, SET_RETENTION, TRIM } from './scripts.js';

/** The engine's scripts, as commands of the command connection. */
interface ScriptCommands {
  rillAppend(...args: string[]): Promise<AppendReply>;
  rillTrim(...args: string[]): Promise<number | null>;
  rillDelete(...args: string[]): Promise<string | null>;
  rillPurge(...args: string[]): Promise<number | null>;
  rillSetRetention(...args: string[]): Promise<number | null>;
  rillSeqAtTime(...args: string[]): Promise<number | null>;
  rillRead(...args: string[]): Promise<[(string | null)[], StreamEntry[]]>;
}

/** What {@link RedisClients} needs, every default already applied. */
export interface RedisClientsOptions {
  url: string;
  commandTimeoutMs: number;
  connectWaitMs: number;
  probeTimeoutMs: number;
  log: EngineLog | undefined;
}

/**
 * The engine's two Redis connections: `cmd` for commands and scripts, `sub` for pub/sub. Both
 * reconnect forever; a command is never queued while the command connection is down, and the
 * pub/sub connection is probed so a silent one is replaced.
 */
export class RedisClients {
  readonly cmd: Redis & ScriptCommands;
  readonly sub: Redis;
  private readonly connectWaitMs: number;
  private readonly probeTimeoutMs: number;
  private readonly storage: StorageLog;
  private probing = false;
  private evictionChecked = false;

  constructor(
    options: RedisClientsOptions,
    private readonly life: Lifecycle,
  ) {
    this.connectWaitMs = options.connectWaitMs;
    this.probeTimeoutMs = options.probeTimeoutMs;
    const common: RedisOptions = {
      lazyConnect: false,
      connectTimeout: 5_000,
      // A connection we drop as dead (silent probe, timed-out command) may never answer a FIN:
      // destroy it soon instead of waiting ioredis' default 2 s before reconnecting.
      disconnectTimeout: 250,
      // Reconnect forever, backing off to 1 s: the engine is useless without Redis.
      retryStrategy: (times) => Math.min(50 * times, 1_000),
    };
    const url = options.url;
    // A command in flight when the connection drops fails instead of being re-sent on reconnect:
    // the caller is told "unknown" (503) rather than the append running twice behind its back.
    this.cmd = new Redis(url, {
      ...common,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs,
      enableAutoPipelining: true,
    }) as Redis & ScriptCommands;
    this.sub = new Redis(url, { ...common, maxRetriesPerRequest: null, autoResubscribe: false });
    // Connection errors surface through commands (503s); the log gets one line per outage.
    const reach = new ReachabilityLog(options.log, 'Redis', url);
    this.cmd.on('error', (err) => {
      if (!this.life.closed) reach.unreachable(err);
    });
    this.storage = new StorageLog(options.log, 'redis');
    this.cmd.on('ready', () => {
      reach.reachable();
      void this.checkEviction(options.log);
    });
    this.sub.on('error', () => undefined);
    this.cmd.defineCommand('rillAppend', { numberOfKeys: 6, lua: APPEND });
    this.cmd.defineCommand('rillTrim', { numberOfKeys: 2, lua: TRIM });
    this.cmd.defineCommand('rillDelete', { numberOfKeys: 5, lua: DELETE });
    this.cmd.defineCommand('rillPurge', { numberOfKeys: 2, lua: PURGE });
    this.cmd.defineCommand('rillSetRetention', { numberOfKeys: 1, lua: SET_RETENTION });
    this.cmd.defineCommand('rillSeqAtTime', { numberOfKeys: 2, lua: SEQ_AT_TIME });
    this.cmd.defineCommand('rillRead', { numberOfKeys: 2, lua: READ });
  }

  /** Resolves once both connections are ready (or rejects after `timeoutMs`). */
  async ready(timeoutMs: number): Promise<void> {
    await Promise.all([waitReady(this.cmd, timeoutMs), waitReady(this.sub, timeoutMs)]);
  }

  /** Whether both connections are up and Redis answers. */
  async health(): Promise<{ ok: boolean; detail?: string }> {
    if (this.cmd.status !== 'ready' || this.sub.status !== 'ready') {
      return { ok: false, detail: 'Redis is unreachable' };
    }
    try {
      await this.cmd.ping();
      return { ok: true };
    } catch {
      return { ok: false, detail: 'Redis does not answer' };
    }
  }

  /**
   * Runs a command, mapping every failure to `engine_unavailable`. A command is not sent while
   * the connection is down (it would sit in a queue and maybe run long after its caller gave up):
   * it waits up to `connectWaitMs` for the connection instead.
   */
  async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.cmd.status !== 'ready') {
      try {
        await waitReady(this.cmd, this.connectWaitMs);
      } catch (err) {
        throw new RillError('engine_unavailable', 'Redis is unreachable', { cause: err });
      }
    }
    try {
      return await op();
    } catch (err) {
      if (isRillError(err)) throw err;
      const full = refusedForSpace(err);
      if (full !== undefined) throw storageFull('redis', full, err);
      if (err instanceof Error && /timed out/i.test(err.message)) {
        // No answer in time: the connection may be half-open. Replace it rather than wait on it.
        this.cmd.disconnect(true);
      }
      throw new RillError('engine_unavailable', 'Redis did not complete the operation', {
        cause: err,
      });
    }
  }

  /**
   * {@link run} for an append: Redis refusing it for lack of memory or of disk is
   * `insufficient_storage`, logged once until an append is stored again.
   */
  async write<T>(op: () => Promise<T>): Promise<T> {
    try {
      const out = await this.run(op);
      this.storage.stored();
      return out;
    } catch (err) {
      if (isRillError(err) && err.code === 'insufficient_storage') this.storage.refused(err);
      throw err;
    }
  }

  /**
   * Warns once when Redis may evict keys: at `maxmemory` with a policy other than `noeviction` it
   * would drop logs (their topics start over under a new epoch) instead of refusing publishes.
   */
  private async checkEviction(log: EngineLog | undefined): Promise<void> {
    if (this.evictionChecked || log === undefined) return;
    this.evictionChecked = true;
    let info: string;
    try {
      info = await this.cmd.info('memory');
    } catch {
      return; // INFO may be renamed or disabled (managed Redis): nothing to tell
    }
    const max = Number(/^maxmemory:(\d+)/m.exec(info)?.[1] ?? 0);
    const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
    if (max > 0 && policy !== undefined && policy !== 'noeviction') {
      log.warn(
        { maxmemory: max, policy },
        `Redis evicts keys at maxmemory (maxmemory-policy ${policy}), which can drop Rill's logs; set maxmemory-policy noeviction so that a full Redis refuses publishes (507) instead`,
      );
    }
  }

  /**
   * Liveness probe: a PING on the pub/sub connection must come back within `probeTimeoutMs`,
   * or the connection is dropped and reconnected (and every watched topic re-read).
   */
  probe(): void {
    if (this.probing || this.life.closed || this.sub.status !== 'ready') return;
    this.probing = true;
    let answered = false;
    const timer = setTimeout(() => {
      if (answered || this.life.closed) return;
      this.probing = false;
      this.sub.disconnect(true);
    }, this.probeTimeoutMs);
    timer.unref();
    this.sub.ping().then(
      () => {
        answered = true;
        clearTimeout(timer);
        this.probing = false;
      },
      () => {
        answered = true;
        clearTimeout(timer);
        this.probing = false;
      },
    );
  }

  /** Drops the pub/sub connection and quits the command connection (after its replies). */
  async close(): Promise<void> {
    this.sub.disconnect();
    if (this.cmd.status === 'ready') await quietly(this.cmd.quit());
    this.cmd.disconnect();
  }
}

/**
 * Why Redis refused a command for lack of space, if it did: `OOM` at `maxmemory`, `MISCONF` when
 * it cannot write its snapshot or AOF (a full disk, most often) and refuses writes.
 */
function refusedForSpace(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  if (/^OOM\b/.test(err.message)) return 'Redis is at its maxmemory';
  if (/^MISCONF\b/.test(err.message)) return 'Redis cannot persist to disk and refuses writes';
  return undefined;
}

function waitReady(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  if (client.status === 'end') return Promise.reject(new Error('connection closed'));
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('end', onEnd);
      if (err) reject(err);
      else resolve();
    };
    const onReady = (): void => done();
    const onEnd = (): void => done(new Error('connection closed'));
    const timer = setTimeout(() => done(new Error('not connected')), timeoutMs);
    client.once('ready', onReady);
    client.once('end', onEnd);
  });
}
