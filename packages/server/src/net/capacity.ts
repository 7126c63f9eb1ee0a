import { readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { RillError } from '../model/errors.js';

/**
 * File descriptors left to everything but client connections: the engine's files and broker
 * sockets (and their reconnects), DNS, reading a file, libuv's own reserve.
 */
const FD_SLACK = 32;
/** Share of the connections kept for requests that are not streams (health checks, publishes). */
const REQUEST_RESERVE_SHARE = 0.05;
const MIN_REQUEST_RESERVE = 8;
const MAX_REQUEST_RESERVE = 1_000;
/** Most one kind of capacity warning is logged: once, then a count at most this often, ms. */
const LOG_INTERVAL_MS = 60_000;

export interface CapacityLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** The soft open-files limit of this process, from /proc (Linux); null if unknown or unlimited. */
export function openFilesLimit(): number | null {
  try {
    const line = readFileSync('/proc/self/limits', 'latin1')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    const n = Number(soft);
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** File descriptors this process has open (Linux); null if unknown. */
function openFiles(): number | null {
  try {
    // One of them is the directory being read.
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return null;
  }
}

/**
 * Logs one kind of event (a refused stream, a dropped connection): at once the first time, then
 * at most once a minute with the number seen since.
 */
class RateLimitedLog {
  private count = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly emit: (count: number) => void) {}

  hit(): void {
    if (this.timer !== undefined) {
      this.count++;
      return;
    }
    this.emit(1);
    this.arm();
  }

  private arm(): void {
    this.timer = setTimeout(() => {
      const n = this.count;
      this.count = 0;
      if (n > 0) {
        this.emit(n);
        this.arm();
      } else {
        this.timer = undefined;
      }
    }, LOG_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/**
 * The connection budget of one process, derived from its open-files limit: a process out of file
 * descriptors can no longer accept anything (libuv then closes every new connection at once, the
 * health check's too) and may fail the engine's own files and sockets.
 *
 * - At most `maxConnections` connections are open at once (node:net closes one past it
 *   immediately), which leaves descriptors to the engine.
 * - Streams (SSE, NDJSON, WebSocket) may use all but a reserve of them: past `maxStreams` open
 *   connections a new stream is refused with `503 too_many_connections`, so health checks and
 *   publishes still get a connection.
 * - Over TLS a connection counts from its accept, handshake done or not. An HTTP/2 session is one
 *   connection however many streams it carries (streams cost memory, not descriptors): a new
 *   stream on it is refused by the same rule, and the session stays open for publishes.
 *
 * Both are logged as a warning once, then at most once a minute with a count.
 */
export class ConnectionBudget {
  private connections: { readonly size: number } = { size: 0 };
  maxConnections: number | null = null;
  maxStreams: number | null = null;
  private readonly refused: RateLimitedLog;
  private readonly dropped: RateLimitedLog;
  private fileLimit: number | null = null;

  constructor(private readonly log: CapacityLog) {
    this.refused = new RateLimitedLog((n) =>
      this.log.warn(
        { refused: n, maxStreams: this.maxStreams, openFilesLimit: this.fileLimit },
        `connection budget: refused ${n} stream${n === 1 ? '' : 's'} (503 too_many_connections) ` +
          `at ${this.maxStreams} open connections, keeping the rest of the open-files limit ` +
          `(${this.fileLimit}) for health checks and publishes; raise the limit (ulimit -n) or ` +
          `add nodes`,
      ),
    );
    this.dropped = new RateLimitedLog((n) =>
      this.log.warn(
        { dropped: n, maxConnections: this.maxConnections, openFilesLimit: this.fileLimit },
        `connection budget: closed ${n} new connection${n === 1 ? '' : 's'} at once at ` +
          `${this.maxConnections} open connections (open-files limit ${this.fileLimit}); raise ` +
          `the limit (ulimit -n) or add nodes`,
      ),
    );
  }

  /**
   * Counts the server's connections (`connections`, the server's registry) and sets the limits from the open-files limit and the
   * descriptors already in use. Call it once the server listens.
   */
  attach(
    server: Server,
    connections: { readonly size: number },
    fileLimit = openFilesLimit(),
  ): void {
    this.connections = connections;
    server.on('drop', () => this.dropped.hit());
    const inUse = openFiles();
    if (fileLimit === null || inUse === null) return;
    this.fileLimit = fileLimit;
    const max = Math.max(1, fileLimit - inUse - FD_SLACK);
    const reserve = Math.min(
      MAX_REQUEST_RESERVE,
      Math.max(MIN_REQUEST_RESERVE, Math.floor(max * REQUEST_RESERVE_SHARE)),
    );
    this.maxConnections = max;
    this.maxStreams = Math.max(0, max - reserve);
    server.maxConnections = max;
    this.log.info(
      { openFilesLimit: fileLimit, maxConnections: max, maxStreams: this.maxStreams },
      `connection budget: ${max} connections, ${this.maxStreams} of them for streams ` +
        `(open-files limit ${fileLimit})`,
    );
  }

  /** Connections open now (what the budget counts). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** A `too_many_connections` error when a new stream would eat into the reserve, else null. */
  refuseStream(): RillError | null {
    if (this.maxStreams === null || this.connections.size <= this.maxStreams) return null;
    this.refused.hit();
    return new RillError('too_many_connections', undefined, {
      details: { limit: this.maxStreams },
    });
  }

  close(): void {
    this.refused.stop();
    this.dropped.stop();
  }
}
