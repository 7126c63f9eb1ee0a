import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from '@rill/testkit';

/** One pino line of a child's log. */
export interface LogLine {
  level: number;
  msg?: string;
  [k: string]: unknown;
}

/** `rill serve` in a child process, with its whole log kept for assertions. */
export interface LoggedServer {
  proc: ChildProcess;
  /** Resolves with the URL once the server listens; rejects if it exits first. */
  listening: Promise<string>;
  /** Everything written to stdout so far. */
  stdout(): string;
  stderr(): string;
  /** The JSON log lines written so far. */
  lines(): LogLine[];
  /** Resolves with the first log line matching `pred` (now or later); rejects after `ms`. */
  waitLog(pred: (l: LogLine) => boolean, ms?: number): Promise<LogLine>;
  /** Resolves with the exit code (or signal name) once the process ended. */
  exited: Promise<number | string>;
  /** SIGKILLs the process if it still runs and waits for it. */
  kill(): Promise<void>;
}

/**
 * Starts the built bin as `node [nodeArgs] rill.js serve args` (or under `wrap`, a command line
 * such as `prlimit --nofile=300:300 --`), with no inherited `RILL_*` setting.
 */
export function spawnLogged(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  wrap: string[] = [],
): LoggedServer {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RILL_')) clean[k] = v;
  const argv = [...wrap, process.execPath, BIN, 'serve', ...args];
  const proc = spawn(argv[0]!, argv.slice(1), {
    env: { ...clean, RILL_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const parsed: LogLine[] = [];
  let partial = '';
  const watchers = new Set<() => void>();
  proc.stdout!.on('data', (d: Buffer) => {
    const text = d.toString();
    out += text;
    partial += text;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const p of parts) {
      try {
        parsed.push(JSON.parse(p) as LogLine);
      } catch {
        // not a log line
      }
    }
    for (const w of [...watchers]) w();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of [...watchers]) w();
  });
  const exited = new Promise<number | string>((r) =>
    proc.once('exit', (code, signal) => {
      r(code ?? signal ?? -1);
      for (const w of [...watchers]) w();
    }),
  );
  const waitLog = (pred: (l: LogLine) => boolean, ms = 15_000): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const hit = parsed.find(pred);
        if (hit) {
          done();
          resolve(hit);
        } else if (proc.exitCode !== null || proc.signalCode !== null) {
          done();
          reject(new Error(`rill exited (${proc.exitCode ?? proc.signalCode}):\n${out}\n${err}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no such log line in ${ms} ms:\n${out}\n${err}`));
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        watchers.delete(check);
      };
      watchers.add(check);
      check();
    });
  // The "Rill listening on <url>" line: a broker's warnings carry a `url` too (the broker's).
  const listening = waitLog(
    (l) =>
      typeof l.url === 'string' && typeof l.msg === 'string' && l.msg.startsWith('Rill listening'),
    20_000,
  ).then((l) => l.url as string);
  listening.catch(() => undefined);
  return {
    proc,
    listening,
    stdout: () => out,
    stderr: () => err,
    lines: () => parsed,
    waitLog,
    exited,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Rejects after `ms` unless `p` settles first. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** A client command (`rill tail`, `rill topics …`) running in a child process. */
export interface Run {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | string>;
  /** Resolves once stdout has `n` lines (fails after 20 s). */
  lines: (n: number) => Promise<string[]>;
}

/**
 * Runs the built bin with `args` (`NO_COLOR` set), writing `input` to its stdin when given;
 * `command` replaces the whole command line (a wrapper such as `script`).
 */
export function rill(
  args: string[],
  input?: string,
  env: NodeJS.ProcessEnv = {},
  command: string[] = [process.execPath, BIN, ...args],
): Run {
  const proc = spawn(command[0]!, command.slice(1), {
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  });
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  if (input !== undefined) proc.stdin!.end(input);
  const exited = new Promise<number | string>((r) =>
    proc.once('exit', (code, signal) => r(code ?? signal ?? -1)),
  );
  const lines = (n: number): Promise<string[]> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const ls = out.split('\n').filter(Boolean);
        if (ls.length >= n) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(ls);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`expected ${n} lines, got:\n${out}\nstderr:\n${err}`));
      }, 20_000);
      waiters.add(check);
      check();
    });
  return { proc, stdout: () => out, stderr: () => err, exited, lines };
}

/** Kills `r` (SIGKILL) at clean-up when it is still running; returns it. */
export function killAtCleanup(cleanups: Array<() => unknown>, r: Run): Run {
  cleanups.push(async () => {
    if (r.proc.exitCode === null && r.proc.signalCode === null) {
      r.proc.kill('SIGKILL');
      await r.exited;
    }
  });
  return r;
}
