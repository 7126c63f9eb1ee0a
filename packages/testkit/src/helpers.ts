import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterEach, expect } from 'vitest';
import type { RillConfigInput } from '../../server/src/config.js';
import { createServer, type RillServer } from '../../server/src/server.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = join(REPO, 'packages/server/bin/rill.js');

export function tempDir(prefix = 'rill-test-'): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** An in-process server on an ephemeral loopback port. */
export async function startServer(
  config: RillConfigInput = {},
): Promise<{ server: RillServer; url: string; close: () => Promise<void> }> {
  const server = await createServer(
    { engine: 'memory', port: 0, logLevel: 'silent', ...config },
    { logger: pino({ level: 'silent' }) },
  );
  const url = await server.listen();
  return { server, url, close: () => server.close() };
}

/** A free loopback port (for child servers that must come back on the same port). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolvePort(port));
    });
  });
}

export interface ChildServer {
  proc: ChildProcess;
  url: string;
  stderr: () => string;
  /** Everything the server wrote to stdout so far (its JSON log lines). */
  stdout: () => string;
  /** Resolves with the exit code (or signal name) once the process ended. */
  exited: Promise<number | string>;
}

/** Starts `rill serve` (the built bin) as a child process and waits until it listens. */
export async function spawnServer(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<ChildServer> {
  const proc = spawn(process.execPath, [BIN, 'serve', ...args], {
    env: { ...process.env, ...env, RILL_LOG_LEVEL: env.RILL_LOG_LEVEL ?? 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((r) =>
    proc.once('exit', (code, signal) => r(code ?? signal ?? -1)),
  );
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not start:\n${out}\n${err}`)),
      20_000,
    );
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(https?:\/\/[^"]+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${out}\n${err}`));
    });
  });
  return { proc, url, stderr: () => err, stdout: () => out, exited };
}

export async function publish(
  url: string,
  topic: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/**
 * Publishes `{ data: { n } }` for n = from..to on `topic`, `batch` events per request (each must
 * be stored: 201), and resolves with the seqs they got.
 */
export async function publishRange(
  url: string,
  topic: string,
  from: number,
  to: number,
  batch = 10,
): Promise<number[]> {
  const seqs: number[] = [];
  for (let n = from; n <= to; n += batch) {
    const body = [];
    for (let i = n; i < Math.min(n + batch, to + 1); i++) body.push({ data: { n: i } });
    const res = await fetch(`${url}/v1/topics/${topic}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(201);
    const json = (await res.json()) as { events: Array<{ seq: number }> };
    seqs.push(...json.events.map((e) => e.seq));
  }
  return seqs;
}

/** The seqs stored on `topic` (an empty list when the topic does not exist). */
export async function history(url: string, topic: string): Promise<number[]> {
  const res = await fetch(`${url}/v1/topics/${topic}/events`);
  if (res.status === 404) return [];
  const body = (await res.json()) as { events: { seq: number }[] };
  return body.events.map((e) => e.seq);
}

export interface SseFrame {
  id?: string;
  event?: string;
  data?: string;
  retry?: number;
}

/** Incremental SSE parser (WHATWG rules for the fields Rill uses), for tests. */
export class SseParser {
  private buf = '';
  private cur: SseFrame = {};
  comments = 0;

  push(text: string): SseFrame[] {
    this.buf += text;
    const out: SseFrame[] = [];
    let nl: number;
    while ((nl = this.buf.search(/\r\n|\r|\n/)) !== -1) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + (this.buf.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (
          this.cur.data !== undefined ||
          this.cur.event !== undefined ||
          this.cur.id !== undefined
        ) {
          out.push(this.cur);
        }
        this.cur = {};
        continue;
      }
      if (line.startsWith(':')) {
        this.comments++;
        continue;
      }
      const i = line.indexOf(':');
      const field = i === -1 ? line : line.slice(0, i);
      let value = i === -1 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data')
        this.cur.data = this.cur.data === undefined ? value : `${this.cur.data}\n${value}`;
      else if (field === 'id') this.cur.id = value;
      else if (field === 'event') this.cur.event = value;
      else if (field === 'retry') this.cur.retry = Number(value);
    }
    return out;
  }
}

export interface SseStream {
  status: number;
  headers: http.IncomingHttpHeaders;
  frames: SseFrame[];
  /** Resolves when `pred` holds for the frames received so far (checked on every chunk). */
  until: (pred: (frames: SseFrame[]) => boolean, timeoutMs?: number) => Promise<SseFrame[]>;
  /** Frames that carry events (not notices). */
  events: () => Array<{ topic: string; seq: number; id: string; data: unknown; type?: string }>;
  body: () => string;
  /** Comment lines (heartbeats) received so far. */
  comments: () => number;
  close: () => void;
  ended: Promise<void>;
  res: http.IncomingMessage;
  parser: SseParser;
}

/** Opens an SSE stream over raw HTTP and parses it as it arrives. */
export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  return new Promise((resolveStream, reject) => {
    const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const parser = new SseParser();
      const frames: SseFrame[] = [];
      let raw = '';
      const waiters: Array<() => void> = [];
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        raw += chunk;
        frames.push(...parser.push(chunk));
        for (const w of [...waiters]) w();
      });
      const ended = new Promise<void>((r) => {
        res.on('close', () => {
          r();
          for (const w of [...waiters]) w();
        });
      });
      const stream: SseStream = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        frames,
        res,
        parser,
        ended,
        body: () => raw,
        comments: () => parser.comments,
        events: () =>
          frames
            .filter((f) => f.event === undefined || (f.event !== 'reset' && f.event !== 'error'))
            .map((f) => JSON.parse(f.data!) as ReturnType<SseStream['events']>[number]),
        close: () => req.destroy(),
        until: (pred, timeoutMs = 15_000) =>
          new Promise((ok, fail) => {
            const check = (): void => {
              if (pred(frames)) {
                clearTimeout(timer);
                waiters.splice(waiters.indexOf(check), 1);
                ok(frames);
              } else if (res.closed) {
                clearTimeout(timer);
                waiters.splice(waiters.indexOf(check), 1);
                fail(new Error(`stream ended before condition; got ${frames.length} frames`));
              }
            };
            const timer = setTimeout(() => {
              waiters.splice(waiters.indexOf(check), 1);
              fail(new Error(`timed out after ${timeoutMs} ms with ${frames.length} frames`));
            }, timeoutMs);
            waiters.push(check);
            check();
          }),
      };
      resolveStream(stream);
    });
    req.on('error', reject);
  });
}

/** Resolves when `fn` returns true, polling each `everyMs`; fails after `timeoutMs`. */
export async function waitFor(
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  everyMs = 20,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Per-test cleanups for a describe block: `cleanups` run after each test, last added first;
 * `track(child)` adds one that SIGKILLs a child server still running and waits for it.
 */
export function useCleanups(): {
  cleanups: Array<() => unknown>;
  track: (child: ChildServer) => ChildServer;
} {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return {
    cleanups,
    track(child) {
      cleanups.push(async () => {
        if (child.proc.exitCode === null && child.proc.signalCode === null) {
          child.proc.kill('SIGKILL');
          await child.exited;
        }
      });
      return child;
    },
  };
}

/**
 * The path of a system binary (`redis-server`, `nats-server`, `nginx`): on PATH, else in the sbin
 * directories Debian installs daemons to (not on a normal user's PATH). Throws when missing, so
 * the test needing it fails rather than skips.
 */
export function systemBinary(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) {
    if (d !== '' && existsSync(join(d, name))) return join(d, name);
  }
  throw new Error(`${name} is not installed (apt-get install -y ${name})`);
}

/** What `fn` throws (fails when it returns). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

/** The anonymous resident memory of a process (Linux), in bytes. */
export function rssAnon(pid: number): number {
  const m = /RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no RssAnon in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** What a {@link pageServer} answers at one path: a fixed body, or one made per request. */
export type PageRoute = { type: string; body: string | (() => string | Promise<string>) };

/**
 * A loopback HTTP server for browser test pages on an origin of their own (another port than the
 * Rill server they use): each path answers its route, anything else 404.
 */
export async function pageServer(
  routes: Record<string, PageRoute>,
): Promise<{ url: string; close: () => Promise<void> }> {
  const srv = http.createServer((req, res) => {
    const route = routes[new URL(req.url ?? '/', 'http://x').pathname];
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    void (async () => {
      const body = typeof route.body === 'string' ? route.body : await route.body();
      res.writeHead(200, { 'content-type': route.type, 'cache-control': 'no-store' }).end(body);
    })().catch((err: unknown) => res.destroy(err as Error));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

/**
 * Samples a process's RssAnon every 20 ms from construction on; `peak` is the highest seen.
 * `stop()` ends sampling (after one last sample) and returns the growth, peak minus the first
 * sample.
 */
export class RssSampler {
  readonly base: number;
  peak: number;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.base = rssAnon(pid);
    this.peak = this.base;
    this.timer = setInterval(() => this.sample(), 20);
  }

  sample(): void {
    try {
      this.peak = Math.max(this.peak, rssAnon(this.pid));
    } catch {
      // The process is gone; the test's assertions report it.
    }
  }

  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak - this.base;
  }
}
