/**
 * `rill serve` as users run it: the built bin in a child process, configuration from a file, the
 * environment and flags, validation and exit codes, the demo feed, graceful shutdown and restart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { within } from './cli-ops-helpers.js';
import {
  BIN,
  freePort,
  openSse,
  publish,
  spawnServer,
  tempDir,
  type ChildServer,
  type SseStream,
} from '@rill/testkit';

// The children inherit this environment: no stray RILL_* setting may decide an outcome.
for (const k of Object.keys(process.env)) if (k.startsWith('RILL_')) delete process.env[k];

const servers: ChildServer[] = [];
const procs = new Set<ChildProcess>();
const streams: SseStream[] = [];
const cleanups: Array<() => void | Promise<void>> = [];
/** Working directory of every child, so nothing (a default ./data) lands in the repository. */
let scratch: ReturnType<typeof tempDir>;

beforeAll(() => {
  scratch = tempDir('rill-cli-');
});

afterEach(async () => {
  for (const s of streams.splice(0)) s.close();
  const exits: Array<Promise<unknown>> = [];
  for (const s of servers.splice(0)) {
    if (s.proc.exitCode === null && s.proc.signalCode === null) {
      s.proc.kill('SIGKILL');
      exits.push(s.exited);
    }
  }
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGKILL');
      exits.push(new Promise((r) => p.once('exit', r)));
    }
  }
  procs.clear();
  await Promise.all(exits);
  for (const c of cleanups.splice(0)) await c();
});

afterAll(() => {
  scratch.remove();
});

async function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ChildServer> {
  const s = await spawnServer(args, env);
  servers.push(s);
  return s;
}

async function sse(url: string): Promise<SseStream> {
  const s = await within(openSse(url), 10_000, `open ${url}`);
  streams.push(s);
  return s;
}

interface Run {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** The process got as far as listening (it printed its URL) and was stopped by the test. */
  listened: boolean;
}

/**
 * Runs the bin to completion (for commands that must exit on their own). A process that starts
 * listening instead is killed at once and reported with `listened`; one that hangs fails the test.
 */
function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000): Promise<Run> {
  const proc = spawn(process.execPath, [BIN, ...args], {
    cwd: scratch.path,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.add(proc);
  let stdout = '';
  let stderr = '';
  let listened = false;
  proc.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (!listened && /"url":"http/.test(stdout)) {
      listened = true;
      proc.kill('SIGKILL');
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(
        new Error(`rill ${args.join(' ')} did not exit in ${timeoutMs} ms:\n${stdout}\n${stderr}`),
      );
    }, timeoutMs);
    proc.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      procs.delete(proc);
      resolve({ code, signal, stdout, stderr, listened });
    });
  });
}

/** `n` different free loopback ports. */
async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

async function healthy(url: string): Promise<boolean> {
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
  return res.ok;
}

function file(name: string, text: string): string {
  const path = join(scratch.path, name);
  writeFileSync(path, text);
  return path;
}

describe('rill serve: configuration precedence', () => {
  it('flag beats environment beats YAML file beats default', async () => {
    const [a, b, c] = (await freePorts(3)) as [number, number, number];
    const yaml = file('precedence.yaml', `# ports from three places\nport: ${a}\nengine: memory\n`);

    const all = await serve(['--config', yaml, '--port', String(c)], { RILL_PORT: String(b) });
    expect(portOf(all.url)).toBe(c);
    expect(await healthy(`http://127.0.0.1:${c}`)).toBe(true);

    const noFlag = await serve(['--config', yaml], { RILL_PORT: String(b) });
    expect(portOf(noFlag.url)).toBe(b);
    expect(await healthy(`http://127.0.0.1:${b}`)).toBe(true);

    const fileOnly = await serve(['--config', yaml]);
    expect(portOf(fileOnly.url)).toBe(a);
    expect(await healthy(`http://127.0.0.1:${a}`)).toBe(true);
  });

  it('reads a JSON config file, also through RILL_CONFIG', async () => {
    const [a, b] = (await freePorts(2)) as [number, number];
    const json = file('config.json', JSON.stringify({ port: a, engine: 'memory' }));
    const byFlag = await serve(['--config', json]);
    expect(portOf(byFlag.url)).toBe(a);
    expect(await healthy(byFlag.url)).toBe(true);

    const json2 = file('config2.json', JSON.stringify({ port: b, engine: 'memory' }));
    const byEnv = await serve([], { RILL_CONFIG: json2 });
    expect(portOf(byEnv.url)).toBe(b);
    expect(await healthy(byEnv.url)).toBe(true);
  });
});

describe('rill serve: validation exits 2 and names the problem', () => {
  it('rejects an unknown key in the config file', async () => {
    const port = await freePort();
    const yaml = file(
      'unknown.yaml',
      `port: ${port}\nengine: memory\nbogusKey: 1\nlimits:\n  maxFrobs: 3\n`,
    );
    const r = await runCli(['serve', '--config', yaml]);
    expect(r.listened).toBe(false);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bogusKey');
    expect(r.stderr).toMatch(/limits.*maxFrobs/);

    const json = file('unknown.json', JSON.stringify({ port, engine: 'memory', prot: 1 }));
    const r2 = await runCli(['serve', '--config', json]);
    expect(r2.listened).toBe(false);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('unknown key "prot" (did you mean "port"?)');
  });

  it('rejects a bad --engine value', async () => {
    const r = await runCli(['serve', '--engine', 'floppy', '--port', String(await freePort())]);
    expect(r.listened).toBe(false);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/engine/);
    expect(r.stderr).toContain('floppy');
  });

  it('rejects a bad environment value, naming the key', async () => {
    const r = await runCli(['serve', '--engine', 'memory'], { RILL_PORT: 'notaport' });
    expect(r.listened).toBe(false);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^\s*port \(--port, RILL_PORT\): must be a TCP port number from 0 to 65535 \(0 picks a free one\) \(got "notaport"\)$/m,
    );
  });

  it('says what a flag, a variable or a file key takes, in words, with what it got', async () => {
    const r = await runCli(['serve', '--engine', 'memory', '--port', 'abc']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'rill: Invalid configuration:\n  port (--port, RILL_PORT): must be a TCP port number from 0 to 65535 (0 picks a free one) (got "abc")\n',
    );
    const yaml = file('bad-values.yaml', 'engine: memory\nlimits:\n  maxBatchEvents: 0\n');
    const r2 = await runCli(['serve', '--config', yaml, '--port', String(await freePort())], {
      RILL_DEMO: 'yes',
      RILL_WS__PING_INTERVAL: '5',
    });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain(
      'limits.maxBatchEvents (RILL_LIMITS__MAX_BATCH_EVENTS): must be an integer of at least 1 (got 0)',
    );
    expect(r2.stderr).toContain('demo (--demo, RILL_DEMO): must be true or false (got "yes")');
    expect(r2.stderr).toContain(
      'ws.pingInterval (RILL_WS__PING_INTERVAL): must be a duration of at least 100ms',
    );
    expect(r2.stderr).not.toMatch(/Invalid input|expected number/);
  });

  it('rejects an unknown RILL_ variable', async () => {
    const r = await runCli(['serve', '--engine', 'memory', '--port', String(await freePort())], {
      RILL_PROT: '8080',
    });
    expect(r.listened).toBe(false);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'rill: Unknown environment variable RILL_PROT (did you mean RILL_PORT?)',
    );
  });

  it('refuses a public --host without --insecure', async () => {
    const r = await runCli([
      'serve',
      '--engine',
      'memory',
      '--host',
      '0.0.0.0',
      '--port',
      String(await freePort()),
    ]);
    expect(r.listened).toBe(false);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refus/i);
    expect(r.stderr).toContain('0.0.0.0');
    expect(r.stderr).toContain('--insecure');
  });
});

describe('rill serve: running', () => {
  it('--demo publishes integers 0-99 to demo.random about every 100 ms', async () => {
    const srv = await serve(['--demo', '--engine', 'memory', '--port', '0']);
    const s = await sse(`${srv.url}/v1/topics/demo.random/stream`);
    await s.until(() => s.events().length >= 5, 10_000);
    const evs = s
      .events()
      .slice(0, 5)
      .map((e) => e as typeof e & { time: number });
    for (const ev of evs) {
      expect(Number.isInteger(ev.data)).toBe(true);
      expect(ev.data).toBeGreaterThanOrEqual(0);
      expect(ev.data).toBeLessThanOrEqual(99);
    }
    for (let i = 1; i < evs.length; i++) expect(evs[i]!.seq).toBe(evs[i - 1]!.seq + 1);
    // Server receive times: 4 intervals of ~100 ms (loose, the machine may be busy).
    const mean = (evs[4]!.time - evs[0]!.time) / 4;
    expect(mean).toBeGreaterThanOrEqual(60);
    expect(mean).toBeLessThanOrEqual(400);
  });

  it('SIGTERM ends open streams with a shutting_down error frame and exits 0', async () => {
    const srv = await serve(['--engine', 'memory', '--port', '0']);
    const s = await sse(`${srv.url}/v1/topics/bye/stream`);
    // The subscription is live once an event published now reaches it.
    expect((await publish(srv.url, 'bye', { data: 1 })).status).toBe(201);
    await s.until(() => s.events().length === 1, 10_000);

    srv.proc.kill('SIGTERM');
    await s.until((fs) => fs.some((f) => f.event === 'error'), 10_000);
    await within(s.ended, 10_000, 'the stream to end');
    const last = s.frames[s.frames.length - 1]!;
    expect(last.event).toBe('error');
    const err = JSON.parse(last.data!) as { code: string; retryable: boolean };
    expect(err.code).toBe('shutting_down');
    expect(err.retryable).toBe(true);
    expect(await within(srv.exited, 15_000, 'the server to exit')).toBe(0);
  });

  it('keeps the data and the epoch across a graceful restart (default lmdb engine)', async () => {
    const dir = tempDir('rill-cli-data-');
    cleanups.push(() => dir.remove());
    const args = ['--data-dir', dir.path, '--port', '0'];

    const first = await serve(args);
    const p = await publish(first.url, 'keep', [{ data: 'a' }, { data: 'b' }, { data: 'c' }]);
    expect(p.status).toBe(201);
    const epoch = p.json.epoch as string;
    expect(epoch).toMatch(/\S/);
    first.proc.kill('SIGTERM');
    expect(await within(first.exited, 15_000, 'the first server to exit')).toBe(0);

    const second = await serve(args);
    const res = await fetch(`${second.url}/v1/topics/keep/events`, {
      signal: AbortSignal.timeout(5000),
    });
    expect(res.status).toBe(200);
    const page = (await res.json()) as {
      epoch: string;
      events: Array<{ seq: number; data: unknown }>;
    };
    expect(page.epoch).toBe(epoch);
    expect(page.events.map((e) => [e.seq, e.data])).toEqual([
      [1, 'a'],
      [2, 'b'],
      [3, 'c'],
    ]);
    const next = await publish(second.url, 'keep', { data: 'd' });
    expect(next.json.epoch).toBe(epoch);
    expect((next.json.events as Array<{ seq: number }>)[0]!.seq).toBe(4);
  });

  it('exits 1 and says so when the port is already in use', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => blocker.close(() => r())));
    const port = (blocker.address() as net.AddressInfo).port;
    const r = await runCli(['serve', '--engine', 'memory', '--port', String(port)]);
    expect(r.listened).toBe(false);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/already in use/);
    expect(r.stderr).toContain(String(port));
  });
});

describe('rill --help', () => {
  it('exits 0 and lists the serve command', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\s+serve\b/m);
  });
});

describe('rill init and rill serve --help', () => {
  it('rill init writes rill.yaml, which rill serve starts from; it refuses to overwrite it', async () => {
    const r = await runCli(['init']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('wrote rill.yaml; start with: rill serve --config rill.yaml\n');
    const written = join(scratch.path, 'rill.yaml');
    expect(readFileSync(written, 'utf8')).toMatch(/^port: 8080$/m);
    // Started from it, with the engine and port changed by the flags that win over it.
    const s = await serve(['--config', written, '--engine', 'memory', '--port', '0']);
    expect(await healthy(s.url)).toBe(true);

    const again = await runCli(['init']);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe('rill: rill.yaml exists; --force overwrites it\n');
    expect((await runCli(['init', '--force'])).code).toBe(0);
    const out = await runCli(['init', '-']);
    expect(out.stdout).toBe(readFileSync(written, 'utf8'));
  });

  it('rill serve --help lists the settings by section with default, flag and variable', async () => {
    const r = await runCli(['serve', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}port = 8080 {3}\(--port, RILL_PORT\)$/m);
    expect(r.stdout).toMatch(/^Limits:\n {2}limits\.maxEventBytes = 64KiB/m);
    expect(r.stdout).toMatch(/^ {2}auth\.jwt\.secret = none {3}\(RILL_AUTH__JWT__SECRET\)$/m);
  });

  it('an unknown flag suggests the close one without printing the whole help', async () => {
    const r = await runCli(['serve', '--prot', '1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      "error: unknown option '--prot'\n(Did you mean --port?)\n(add --help for usage)\n",
    );
  });
});
