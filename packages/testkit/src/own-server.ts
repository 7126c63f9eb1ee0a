import { spawn, type ChildProcess } from 'node:child_process';
import { systemBinary, tempDir } from './helpers.js';

/**
 * A private instance of a system server (`redis-server`, `nats-server`) on its own port and temp
 * directory, for tests that kill, restart or wipe it; never the shared one. Stopped by its pid.
 */
export abstract class OwnServer {
  proc: ChildProcess | undefined;
  readonly dir;
  private output = '';

  constructor(
    private readonly binary: string,
    readonly port: number,
  ) {
    this.dir = tempDir(`rill-${binary}-`);
  }

  abstract get url(): string;
  /** The command line of one start. */
  protected abstract args(): string[];
  /** Whether the server answers, given what it has printed so far. */
  protected abstract probe(output: string): Promise<boolean>;

  /** Starts the server and waits (at most 10 s) until it answers. */
  async start(): Promise<void> {
    const proc = spawn(systemBinary(this.binary), this.args(), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    this.output = '';
    proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    const failed = new Promise<never>((_, reject) =>
      proc.once('error', (e) => reject(new Error(`cannot start ${this.binary}: ${e.message}`))),
    );
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (await Promise.race([this.probe(this.output), failed])) return;
      if (proc.exitCode !== null) throw new Error(`${this.binary} exited: ${this.output}`);
      if (Date.now() > deadline) throw new Error(`${this.binary} did not start: ${this.output}`);
      // Polling the port: the server offers nothing to wait on before it listens.
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Kills the server (SIGKILL by default) and waits for it to exit. */
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
