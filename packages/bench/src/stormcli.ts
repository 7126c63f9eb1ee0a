import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import type { StormOptions, StormResult } from './storm.js';

/** Most connections one storm worker holds: this machine allows 20,000 open files per process. */
export const MAX_STORM_CONNECTIONS_PER_PROCESS = 15_000;
/**
 * Most connections per source address: ~28,000 ephemeral ports per address (32768–60999), and the
 * reconnect storm needs fresh ones while the dropped connections' ports sit in TIME_WAIT.
 */
export const MAX_CONNECTIONS_PER_ADDRESS = 12_500;

function int(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`an integer >= ${min}`);
    return n;
  };
}

function pids(v: string): number[] {
  return v.split(',').map((s) => int(1)(s.trim()));
}

/** `4` → 127.0.0.1…127.0.0.4; `127.0.0.1,127.0.0.9` → those. */
export function parseAddresses(v: string): string[] | number {
  if (/^\d+$/.test(v)) return int(1)(v);
  const list = v.split(',').map((s) => s.trim());
  for (const a of list) {
    if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a)) {
      throw new InvalidArgumentError(`${a} is not a 127.x.x.x address`);
    }
  }
  return list;
}

interface StormFlags {
  url: string;
  target: 'rill' | 'generic';
  subUrl?: string;
  subscribers: number;
  processes?: number;
  sourceAddresses?: string[] | number;
  topics?: number;
  hold: number;
  storm: boolean;
  gap: number;
  purgeDuringDrop?: boolean;
  connectConcurrency: number;
  stormConcurrency: number;
  localPortBase: number;
  serverPid?: number[];
  phaseTimeout: number;
  minFreeMib: number;
  topicPrefix?: string;
  token?: string;
  json?: boolean;
  quiet?: boolean;
}

/** `rill bench storm`: idle connections held with heartbeats, then a reconnect storm. */
export function configureStorm(cmd: Command, name: () => string): Command {
  return cmd
    .description(
      'hold many idle SSE connections (several processes, several 127.0.0.x source addresses), count heartbeats and server RSS, then drop them all and resume with Last-Event-ID, checking gaps',
    )
    .option('--url <url>', 'server base URL (127.x.x.x only)', 'http://127.0.0.1:8080')
    .addOption(
      new Option('--target <kind>', 'rill (with the storm) or a generic SSE URL (hold only)')
        .choices(['rill', 'generic'])
        .default('rill'),
    )
    .option('--sub-url <template>', 'generic: SSE URL with {topic}')
    .option('-s, --subscribers <n>', 'idle SSE connections', int(1), 1000)
    .option(
      '-p, --processes <n>',
      `generator processes (default: <= ${MAX_STORM_CONNECTIONS_PER_PROCESS} connections each)`,
      int(1),
    )
    .option(
      '--source-addresses <n|list>',
      `loopback source addresses: a count (127.0.0.2, .3, …) or a list (default: <= ${MAX_CONNECTIONS_PER_ADDRESS} connections each)`,
      parseAddresses,
    )
    .option(
      '--topics <n>',
      'topics; connection i follows topic i mod n (default: min(N, 1000))',
      int(1),
    )
    .option(
      '--hold <s>',
      'seconds the idle connections are held (make it > the heartbeat interval)',
      int(1),
      12,
    )
    .option('--no-storm', 'hold only: no drop and reconnect')
    .option(
      '--gap <n>',
      'events per topic published while away, and again during the storm',
      int(1),
      5,
    )
    .option(
      '--purge-during-drop',
      'purge every topic while the connections are away (the check must then report gaps)',
    )
    .option('--connect-concurrency <n>', 'connection attempts in flight per process', int(1), 200)
    .option('--storm-concurrency <n>', 'reconnect attempts in flight per process', int(1), 1000)
    .option(
      '--local-port-base <n>',
      'first local port the generator binds itself (0: the kernel picks, slow past ~8,000 connections per address)',
      int(0),
      10_000,
    )
    .option('--server-pid <pids>', 'server root pids: RSS/PSS of their whole process trees', pids)
    .option('--phase-timeout <s>', 'deadline of each phase, seconds', int(1), 300)
    .option(
      '--min-free-mib <n>',
      'abort when the machine has less memory available, MiB',
      int(0),
      4096,
    )
    .option('--topic-prefix <p>', 'topic name prefix (default: random per run)')
    .option(
      '--token <token>',
      'a JWT or API key for a Rill with authentication (default: $RILL_TOKEN)',
    )
    .option('--json', 'print the result as JSON on stdout')
    .option('-q, --quiet', 'no progress line')
    .action(async (f: StormFlags) => {
      process.exitCode = await storm(f, name());
    });
}

async function storm(f: StormFlags, name: string): Promise<number> {
  const processes =
    f.processes ?? Math.max(1, Math.ceil(f.subscribers / MAX_STORM_CONNECTIONS_PER_PROCESS));
  const fail = (msg: string): number => {
    process.stderr.write(`${name}: ${msg}\n`);
    return 2;
  };
  if (Math.ceil(f.subscribers / processes) > MAX_STORM_CONNECTIONS_PER_PROCESS) {
    return fail(
      `${f.subscribers} connections need at least ${Math.ceil(f.subscribers / MAX_STORM_CONNECTIONS_PER_PROCESS)} processes`,
    );
  }
  if (f.target === 'generic' && !f.subUrl) return fail('--target generic needs --sub-url');
  const { loopbackAddresses, runStorm, formatStorm } = await import('./storm.js');
  const sa = f.sourceAddresses ?? Math.ceil(f.subscribers / MAX_CONNECTIONS_PER_ADDRESS);
  let result: StormResult;
  try {
    const addresses = typeof sa === 'number' ? loopbackAddresses(sa) : sa;
    const token = f.token ?? (process.env.RILL_TOKEN || undefined);
    const tty = process.stderr.isTTY;
    const options: StormOptions = {
      target: f.target,
      url: f.url,
      ...(f.subUrl === undefined ? {} : { subUrl: f.subUrl }),
      subscribers: f.subscribers,
      processes,
      addresses,
      topics: f.topics ?? Math.min(f.subscribers, 1000),
      hold: f.hold,
      storm: f.storm && f.target === 'rill',
      gap: f.gap,
      purgeDuringDrop: f.purgeDuringDrop ?? false,
      connectConcurrency: f.connectConcurrency,
      stormConcurrency: f.stormConcurrency,
      portBase: f.localPortBase,
      serverPids: f.serverPid ?? [],
      phaseTimeout: f.phaseTimeout,
      minFreeMiB: f.minFreeMib,
      ...(f.topicPrefix === undefined ? {} : { topicPrefix: f.topicPrefix }),
      ...(token === undefined ? {} : { token }),
      ...(f.quiet
        ? {}
        : {
            onProgress: (line: string) => {
              const stamp = `[${name}] ${line}`;
              process.stderr.write(tty ? `\r\x1b[K${stamp}` : `${stamp}\n`);
            },
          }),
    };
    result = await runStorm(options);
    if (tty && !f.quiet) process.stderr.write('\n');
  } catch (err) {
    process.stderr.write(`\n${name}: ${(err as Error).message}\n`);
    return 1;
  }
  if (f.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else process.stdout.write(formatStorm(result));
  return result.ok ? 0 : 1;
}
