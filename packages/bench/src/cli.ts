import { cpus } from 'node:os';
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import type { BenchOptions, BenchResult } from './run.js';
import { configureStorm } from './stormcli.js';

/** Commander's parsed flags: the run's options, with the CLI's own names and switches. */
type BenchFlags = Omit<
  BenchOptions,
  'rates' | 'workers' | 'serverPids' | 'stopOnFail' | 'onProgress'
> & {
  rate?: number[];
  workers?: number;
  serverPid?: number[];
  stopOnFail?: boolean;
  json?: boolean;
  quiet?: boolean;
};

/** Most connections one worker holds: this machine allows 20,000 open files per process. */
export const MAX_CONNECTIONS_PER_WORKER = 15_000;

function int(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`an integer >= ${min}`);
    return n;
  };
}

function nonNegative(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('a number >= 0');
  return n;
}

function num(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('a positive number');
  return n;
}

/** `1000,2000,4k,max` → events/s per step (max = 0: unthrottled). */
export function parseRates(v: string): number[] {
  return v.split(',').map((s) => {
    const t = s.trim().toLowerCase();
    if (t === 'max') return 0;
    const m = /^(\d+(?:\.\d+)?)(k|m)?$/.exec(t);
    if (!m) throw new InvalidArgumentError(`"${s}" is not a rate (a number, 5k, 1.5m or max)`);
    const n = Number(m[1]) * (m[2] === 'k' ? 1e3 : m[2] === 'm' ? 1e6 : 1);
    return Math.round(n);
  });
}

function pids(v: string): number[] {
  return v.split(',').map((s) => int(1)(s.trim()));
}

/** `rill bench`: the generator as a subcommand of another program (the server's `rill`). */
export function registerBench(program: Command): void {
  configureBench(program.command('bench'));
}

/**
 * The generator's flags and action on `cmd`: the `bench` subcommand of `rill`, or the whole
 * program of the `rill-bench` bin. Messages are prefixed with the command's full name.
 */
export function configureBench(cmd: Command): Command {
  // `storm` has flags of its own under the same names (--url, -s, …): the bench command's flags
  // are only read before it.
  cmd.enablePositionalOptions();
  configureStorm(cmd.command('storm'), () => `${commandName(cmd)} storm`);
  return cmd
    .description(
      'load-test a Rill server (or a peer): subscribers over SSE/WS/NDJSON in worker processes, publishers at a fixed rate, latency and loss',
    )
    .option('--url <url>', 'server base URL', 'http://127.0.0.1:8080')
    .addOption(
      new Option('--target <kind>', 'what the URL points at')
        .choices(['rill', 'generic', 'socketio'])
        .default('rill'),
    )
    .option(
      '--sub-url <template>',
      'generic: subscribe URL with {topic}, and {shared} or {topics} (comma-separated) with --shared-rate (http: stream, ws: WebSocket)',
    )
    .option('--pub-url <template>', 'generic/socketio: URL with {topic} the payload is POSTed to')
    .addOption(
      new Option('--transport <t>', 'subscriber transport (rill)')
        .choices(['sse', 'ws', 'ndjson'])
        .default('sse'),
    )
    .addOption(
      new Option(
        '--publish <mode>',
        'rill publisher: one event per POST, NDJSON batches, or WebSocket',
      )
        .choices(['http', 'batch', 'ws'])
        .default('http'),
    )
    .option('-s, --subscribers <n>', 'subscriber connections', int(0), 100)
    .option('--topics <n>', 'topics; subscriber i listens to topic i mod n', int(1), 1)
    .option(
      '--shared-rate <n>',
      'every subscriber also listens to one shared topic, published at n events/s besides --rate',
      nonNegative,
    )
    .option(
      '--publishers <n>',
      'publisher processes; topics and rate are split over them (1: in this process)',
      int(1),
      1,
    )
    .option(
      '-r, --rate <list>',
      'offered events/s per step: 500,1k,2k or max (none: idle hold)',
      parseRates,
    )
    .option('-d, --duration <s>', 'seconds per step (idle: hold time)', num, 10)
    .option('--batch <n>', 'events per request with --publish batch', int(1), 100)
    .option('--concurrency <n>', 'publish requests in flight at most, per publisher', int(1), 16)
    .option('--payload-bytes <n>', 'approximate payload size', int(16), 100)
    .option('--sample <n>', 'record the latency of one event in n per connection', int(1), 1)
    .option(
      '-w, --workers <n>',
      `subscriber worker processes (default: by count, <= ${MAX_CONNECTIONS_PER_WORKER} each)`,
      int(1),
    )
    .option(
      '--server-pid <pids>',
      'server process ids (comma-separated) for CPU and RSS from /proc',
      pids,
    )
    .option('--max-p99 <ms>', 'a step passes with zero loss and p99 below this', num, 100)
    .option(
      '--stop-on-fail',
      'stop after two steps in a row with loss, publish errors, the rate not kept, or p99 over --stop-p99',
    )
    .option('--stop-p99 <ms>', 'p99 that counts as a hard failure for --stop-on-fail', num, 1000)
    .option('--warmup <s>', 'seconds at the first rate before measuring', Number, 2)
    .option('--drain-ms <ms>', 'longest wait for deliveries after a step', int(100), 10_000)
    .option('--topic-prefix <p>', 'topic name prefix (default: random per run)')
    .option('--connect-concurrency <n>', 'connection attempts in flight per worker', int(1), 200)
    .option(
      '--token <token>',
      'rill with authentication: a JWT or API key every connection sends (default: $RILL_TOKEN)',
    )
    .option('--json', 'print the result as JSON on stdout')
    .option('-q, --quiet', 'no progress line')
    .action(async (flags: BenchFlags) => {
      process.exitCode = await bench(flags, commandName(cmd));
    });
}

function commandName(cmd: Command): string {
  return cmd.parent ? `${commandName(cmd.parent)} ${cmd.name()}` : cmd.name();
}

function defaultWorkers(subscribers: number): number {
  const needed = Math.ceil(subscribers / MAX_CONNECTIONS_PER_WORKER);
  const cores = Math.max(1, cpus().length);
  return Math.max(1, needed, Math.min(cores, Math.ceil(subscribers / 2000)));
}

async function bench(f: BenchFlags, name: string): Promise<number> {
  const workers = f.workers ?? defaultWorkers(f.subscribers);
  if (Math.ceil(f.subscribers / workers) > MAX_CONNECTIONS_PER_WORKER) {
    process.stderr.write(
      `${name}: ${f.subscribers} subscribers need at least ${Math.ceil(f.subscribers / MAX_CONNECTIONS_PER_WORKER)} workers\n`,
    );
    return 2;
  }
  if (f.target === 'generic' && f.subscribers > 0 && !f.subUrl) {
    process.stderr.write(`${name}: --target generic needs --sub-url\n`);
    return 2;
  }
  const tty = process.stderr.isTTY;
  // The rest of the flags are the run's options under the same names (`json` is ignored there).
  const { rate, serverPid, stopOnFail, quiet, token: flagToken, ...shared } = f;
  const token = flagToken ?? (process.env.RILL_TOKEN || undefined);
  const options: BenchOptions = {
    ...shared,
    rates: rate ?? [],
    workers,
    ...(token === undefined ? {} : { token }),
    serverPids: serverPid ?? [],
    stopOnFail: stopOnFail ?? false,
    ...(quiet
      ? {}
      : {
          onProgress: (line: string) => {
            const stamp = `[${name}] ${line}`;
            process.stderr.write(tty ? `\r\x1b[K${stamp}` : `${stamp}\n`);
          },
        }),
  };
  let result: BenchResult;
  try {
    // Loaded on use: `rill` registers this command on every run, `rill serve` included, and
    // does not carry the generator.
    const { runBench } = await import('./run.js');
    result = await runBench(options);
  } catch (err) {
    process.stderr.write(`\n${name}: ${(err as Error).message}\n`);
    return 1;
  }
  if (tty && !f.quiet) process.stderr.write('\n');
  if (f.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else process.stdout.write(formatResult(result));
  return result.connectFailed > 0 || result.steps.some((s) => s.publishErrors > 0) ? 1 : 0;
}

/** The human-readable report: a header and one table row per step. */
export function formatResult(r: BenchResult): string {
  const lines: string[] = [];
  const sharedNote = r.sharedRate === undefined ? '' : ` + 1 shared (${r.sharedRate}/s)`;
  lines.push(
    `target ${r.target} ${r.url} | ${r.subscribers} ${r.transport} subscribers on ${r.topics} topic(s)${sharedNote} in ${r.workers} worker(s) | publish ${r.publish} from ${r.publishers} process(es) | payload ~${r.payloadBytes} B`,
  );
  lines.push(
    `connected ${r.connected}/${r.subscribers} in ${r.connectSeconds}s${r.connectFailed ? `, ${r.connectFailed} failed (${r.connectError ?? ''})` : ''}${r.dropped ? `, ${r.dropped} dropped during the run` : ''}`,
  );
  if (r.server) {
    lines.push(
      `server RSS ${(r.server.rssBeforeKiB / 1024).toFixed(1)} MiB before, ${(r.server.rssConnectedKiB / 1024).toFixed(1)} MiB connected: ${r.server.rssPerConnectionKiB} KiB per connection`,
    );
  }
  if (r.steps.length > 0) {
    const head = [
      'offered/s',
      'published/s',
      'delivered/s',
      'loss',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'p99.9 ms',
      'max ms',
      'cpu s',
      'cpu %',
      'peak MiB',
      'µs/deliv',
      'machine %',
      '',
    ];
    const rows = r.steps.map((s) => [
      s.rate === 0 ? 'max' : String(s.rate),
      String(s.publishedPerSec),
      String(s.deliveredPerSec),
      String(s.loss),
      String(s.latencyMs.p50),
      String(s.latencyMs.p90),
      String(s.latencyMs.p99),
      String(s.latencyMs.p999),
      String(s.latencyMs.max),
      s.serverCpuSeconds === undefined ? '-' : String(s.serverCpuSeconds),
      s.serverCpuPercent === undefined ? '-' : String(s.serverCpuPercent),
      s.serverPeakRssKiB === undefined ? '-' : (s.serverPeakRssKiB / 1024).toFixed(1),
      s.serverCpuMicrosPerDelivery === undefined ? '-' : String(s.serverCpuMicrosPerDelivery),
      s.machineBusyPercent === undefined ? '-' : String(s.machineBusyPercent),
      s.ok ? 'ok' : s.publishErrors > 0 ? `FAIL (${s.publishErrors} publish errors)` : 'FAIL',
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const fmt = (cells: string[]): string =>
      cells
        .map((c, i) => c.padStart(widths[i]!))
        .join('  ')
        .trimEnd();
    lines.push(fmt(head));
    for (const row of rows) lines.push(fmt(row));
  }
  if (r.best) {
    lines.push(
      `best passing step: ${r.best.deliveredPerSec} deliveries/s at ${r.best.rate === 0 ? 'max' : r.best.rate} events/s (p99 ${r.best.p99} ms)`,
    );
  } else if (r.steps.length > 0) lines.push('no step passed');
  if (r.capacity) {
    lines.push(
      `zero-loss capacity: ${r.capacity.deliveredPerSec} deliveries/s at ${r.capacity.rate === 0 ? 'max' : r.capacity.rate} events/s (p99 ${r.capacity.p99} ms)`,
    );
  }
  return lines.join('\n') + '\n';
}
