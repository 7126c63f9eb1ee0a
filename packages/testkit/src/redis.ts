import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { freePort } from './helpers.js';
import { OwnServer } from './own-server.js';

/** The shared Redis of this machine (never flushed, killed or restarted by tests). */
export const SHARED_REDIS_URL = process.env.RILL_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A key prefix no other test run uses. */
export function uniquePrefix(what = 'rilltest'): string {
  return `${what}:${randomBytes(6).toString('hex')}`;
}

/** Deletes every key under `prefix` on the shared Redis. */
export async function dropPrefix(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on('error', () => undefined);
  try {
    await r.connect();
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

/**
 * A private `redis-server` on a free port with AOF and `appendfsync always`, in a temp directory:
 * for tests that stop, restart or FLUSHALL it. Stopped by its own pid.
 */
export class OwnRedis extends OwnServer {
  /** @param extra further `redis-server` arguments (`--maxmemory 2mb`) */
  constructor(
    port: number,
    private readonly extra: readonly string[] = [],
  ) {
    super('redis-server', port);
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async create(extra: readonly string[] = []): Promise<OwnRedis> {
    const r = new OwnRedis(await freePort(), extra);
    await r.start();
    return r;
  }

  protected args(): string[] {
    return [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--dir',
      this.dir.path,
      '--daemonize',
      'no',
      '--loglevel',
      'warning',
      ...this.extra,
    ];
  }

  protected async probe(): Promise<boolean> {
    const c = new Redis(this.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    c.on('error', () => undefined);
    try {
      await c.connect();
      // Loading the AOF answers -LOADING: not ready yet.
      return (await c.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      c.disconnect();
    }
  }

  async client(): Promise<Redis> {
    const c = new Redis(this.url, { maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    return c;
  }
}
