import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { freePort } from './helpers.js';
import { OwnServer } from './own-server.js';

/** The shared NATS of this machine (never restarted by tests). */
export const SHARED_NATS_URL = process.env.RILL_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/** A stream-name prefix no other test run uses. */
export function uniqueNatsPrefix(what = 'rt'): string {
  return `${what}${randomBytes(5).toString('hex')}`;
}

/** Deletes every stream whose name starts with `<prefix>_`, and the prefix's key-value buckets (`KV_<prefix>_…`: the node directory, presence). */
export async function dropStreams(url: string, prefix: string): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const n of jsm.streams.names()) {
      if (n.startsWith(`${prefix}_`) || n.startsWith(`KV_${prefix}_`)) names.push(n);
    }
    for (const n of names) await jsm.streams.delete(n);
  } finally {
    await nc.close();
  }
}

/**
 * A private `nats-server -js` on a free port with file storage in a temp directory: for tests
 * that kill and restart it. Stopped by its own pid.
 */
export class OwnNats extends OwnServer {
  constructor(port: number) {
    super('nats-server', port);
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async create(): Promise<OwnNats> {
    const n = new OwnNats(await freePort());
    await n.start();
    return n;
  }

  protected args(): string[] {
    return ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.dir.path];
  }

  protected async probe(log: string): Promise<boolean> {
    if (!log.includes('Server is ready')) return false;
    return new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  }
}
