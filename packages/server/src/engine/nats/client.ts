import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { RillError, isRillError } from '../../model/errors.js';
import type { EngineLog } from '../engine.js';
import { ReachabilityLog, closedError } from '../common.js';
import { quietly, type Lifecycle } from '../lifecycle.js';
import { natsConnectOptions } from '../../model/broker.js';

/** Pause between connection attempts, ms. */
const RECONNECT_WAIT_MS = 250;

/** What {@link NatsClient} needs, every default already applied. */
export interface NatsClientOptions {
  url: string;
  connectWaitMs: number;
  requestTimeoutMs: number;
  log: EngineLog | undefined;
  /** Runs once connected, before any operation may use JetStream (creates the registry). */
  prepare: (jsm: JetStreamManager) => Promise<unknown>;
  /** Runs after every reconnect: consumers do not outlive a server restart. */
  onReconnect: () => void;
}

/**
 * The engine's one NATS connection and JetStream handles: connecting (and retrying the first
 * connection until the engine closes), tracking whether the connection is up, and turning
 * "unreachable" into `engine_unavailable` for every operation.
 */
export class NatsClient {
  private nc: NatsConnection | undefined;
  private jsClient: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private readonly connecting: Promise<void>;
  private connectError: unknown;
  private connected = false;
  private readonly reconnectWaiters = new Set<() => void>();
  private readonly reach: ReachabilityLog;
  /** Cuts short the pause between first-connect attempts (set while one runs). */
  private wakeConnect: (() => void) | undefined;

  constructor(
    private readonly options: NatsClientOptions,
    private readonly life: Lifecycle,
  ) {
    this.reach = new ReachabilityLog(options.log, 'NATS', options.url);
    this.connecting = this.start();
    this.connecting.catch(() => undefined);
  }

  /** The JetStream client; use it only after {@link api} resolved. */
  get js(): JetStreamClient {
    return this.jsClient as JetStreamClient;
  }

  /** The core connection once the first one is up (it may be down again since). */
  get connection(): NatsConnection | undefined {
    return this.nc;
  }

  /** The JetStream manager once the first connection is up (it may be down again since). */
  get manager(): JetStreamManager | undefined {
    return this.jsm;
  }

  private async start(): Promise<void> {
    try {
      const nc = await this.connectFirst();
      this.nc = nc;
      this.connected = true;
      void this.watchStatus(nc);
      this.jsClient = jetstream(nc, { timeout: this.options.requestTimeoutMs });
      this.jsm = await jetstreamManager(nc, { timeout: this.options.requestTimeoutMs });
      await this.options.prepare(this.jsm);
    } catch (err) {
      this.connectError = err;
      throw err;
    }
  }

  /**
   * The first connection. Not there yet at start-up is like a later outage: keep trying (logging
   * it once), answer 503 meanwhile. The retries are ours rather than the client's
   * `waitOnFirstConnect`, which nothing can stop: `close()` ends them.
   */
  private async connectFirst(): Promise<NatsConnection> {
    for (;;) {
      let nc: NatsConnection;
      try {
        nc = await connect({
          ...natsConnectOptions(this.options.url, 'rill', RECONNECT_WAIT_MS),
          timeout: this.options.requestTimeoutMs,
        });
      } catch (err) {
        this.life.assertOpen();
        this.connectError = err;
        this.reach.unreachable(err);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, RECONNECT_WAIT_MS);
          function done(): void {
            clearTimeout(timer);
            resolve();
          }
          this.wakeConnect = done;
        });
        this.wakeConnect = undefined;
        this.life.assertOpen();
        continue;
      }
      if (this.life.closed) {
        await quietly(nc.close());
        throw closedError('nats');
      }
      this.reach.reachable();
      return nc;
    }
  }

  /**
   * Tracks the connection: while it is down, operations fail fast with `engine_unavailable`
   * instead of queuing a publish in the client's reconnect buffer until its timeout.
   */
  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'staleConnection') {
        this.connected = false;
        const why = s.type === 'disconnect' ? 'connection lost' : 'connection went silent';
        if (!this.life.closed) this.reach.unreachable(new Error(why));
      } else if (s.type === 'reconnect') {
        this.connected = true;
        this.reach.reachable();
        for (const w of [...this.reconnectWaiters]) w();
        this.options.onReconnect();
      }
    }
  }

  /** Resolves once connected and JetStream answers. */
  async ready(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('NATS not ready in time')), timeoutMs);
    });
    try {
      await Promise.race([this.connecting, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The JetStream manager, once connected; `engine_unavailable` when not reachable in time. */
  async api(): Promise<JetStreamManager> {
    if (this.jsm === undefined) {
      try {
        await this.ready(this.options.connectWaitMs);
      } catch (err) {
        throw new RillError('engine_unavailable', 'NATS is unreachable', {
          cause: this.connectError ?? err,
        });
      }
    }
    if (this.nc?.isClosed()) throw new RillError('engine_unavailable', 'NATS connection closed');
    if (!this.connected) {
      const back = await new Promise<boolean>((resolve) => {
        const done = (ok: boolean): void => {
          clearTimeout(timer);
          this.reconnectWaiters.delete(onBack);
          resolve(ok);
        };
        const onBack = (): void => done(true);
        const timer = setTimeout(() => done(false), this.options.connectWaitMs);
        this.reconnectWaiters.add(onBack);
      });
      if (!back) throw new RillError('engine_unavailable', 'NATS is unreachable');
    }
    return this.jsm as JetStreamManager;
  }

  /** Maps failures to `engine_unavailable`. */
  async guard<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (isRillError(err)) throw err;
      throw new RillError('engine_unavailable', 'NATS did not complete the operation', {
        cause: err,
      });
    }
  }

  /** Ends a pause between first-connect attempts, so a closing engine does not wait it out. */
  wake(): void {
    this.wakeConnect?.();
  }

  /** Closes the connection once the first connect attempt has ended. */
  async close(): Promise<void> {
    await quietly(this.connecting);
    await quietly(this.nc?.close());
  }
}
