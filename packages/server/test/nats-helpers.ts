import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { freePort, systemBinary, tempDir } from './helpers.js';

/** The shared NATS of this machine (never restarted by tests). */
export const SHARED_NATS_URL = process.env.RILL_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/** A stream-name prefix no other test run uses. */
export function uniqueNatsPrefix(what = 'rt'): string {
  return `${what}${randomBytes(5).toString('hex')}`;
}

/** Deletes every stream whose name starts with `<prefix>_`. */
export async function dropStreams(url: string, prefix: string): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const n of jsm.streams.names()) if (n.startsWith(`${prefix}_`)) names.push(n);
    for (const n of names) await jsm.streams.delete(n);
  } finally {
    await nc.close();
  }
}

/**
 * A private `nats-server -js` on a free port with file storage in a temp directory: for tests
 * that kill and restart it. Stopped by its own pid.
 */
export class OwnNats {
  proc: ChildProcess | undefined;
  readonly dir = tempDir('rill-nats-');
  constructor(readonly port: number) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  static async create(): Promise<OwnNats> {
    const n = new OwnNats(await freePort());
    await n.start();
    return n;
  }

  async start(): Promise<void> {
    const proc = spawn(
      systemBinary('nats-server'),
      ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.dir.path],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc = proc;
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const failed = new Promise<never>((_, reject) =>
      proc.once('error', (e) => reject(new Error(`cannot start nats-server: ${e.message}`))),
    );
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (await Promise.race([this.ready(out), failed])) return;
      if (proc.exitCode !== null) throw new Error(`nats-server exited: ${out}`);
      if (Date.now() > deadline) throw new Error(`nats-server did not start: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async ready(log: string): Promise<boolean> {
    if (!log.includes('Server is ready')) return false;
    return new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  }

  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const proc = this.proc;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    await exited;
    this.proc = undefined;
  }

  async destroy(): Promise<void> {
    await this.stop();
    this.dir.remove();
  }
}
