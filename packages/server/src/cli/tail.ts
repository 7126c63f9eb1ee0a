import { styleText } from 'node:util';
import type { Command } from 'commander';
import { Option } from 'commander';
import { WebSocket } from 'ws';
import { CLI_MAX_RETRY_AFTER, describeRefusal, formatDelay } from './refusal.js';
import {
  createClient,
  RillError,
  type RillEvent,
  type RillNotice,
  type StartFrom,
  type StateChange,
  type TransportName,
} from '@rill/client';
import { cannotReach, unreachableCause } from './reach.js';

/** Default server URL of the client commands (`--url`, env `RILL_URL`). */
export const DEFAULT_URL = 'http://127.0.0.1:8080';

interface TailFlags {
  url?: string;
  token?: string;
  from?: string;
  since?: string;
  format?: 'pretty' | 'json';
  transport?: TransportName;
}

export { formatDelay } from './refusal.js';

export function urlOption(): Option {
  return new Option('--url <url>', `server URL (default ${DEFAULT_URL}, env RILL_URL)`);
}

/** `--token`: a JWT or API key, sent as the client SDK carries it; never printed. */
export function tokenOption(): Option {
  return new Option(
    '--token <token>',
    'JWT or API key (env RILL_TOKEN, which keeps it out of the process list)',
  );
}

/** The token of a client command: `--token`, else `RILL_TOKEN`; an empty one is none. */
export function tokenFrom(flags: { token?: string }): string | undefined {
  return flags.token || process.env.RILL_TOKEN || undefined;
}

export function registerTail(program: Command): void {
  program
    .command('tail')
    .description('print events of topics and patterns as they arrive; reconnects and resumes')
    .argument('<topics...>', 'topics and patterns (a.b, prices.*, logs.>)')
    .addOption(urlOption())
    .addOption(tokenOption())
    .option('--from <from>', 'now (default), earliest, or a seq (inclusive)')
    .option('--since <since>', 'after a seq, or from a time (ms or ISO 8601); wins over --from')
    .addOption(
      new Option('--format <format>', 'pretty on a terminal, json lines otherwise').choices([
        'pretty',
        'json',
      ]),
    )
    .addOption(
      new Option('--transport <transport>', 'auto (default), sse, ws or poll').choices([
        'auto',
        'sse',
        'ws',
        'poll',
      ]),
    )
    .action(async (topics: string[], flags: TailFlags) => {
      process.exitCode = await tail(topics, flags);
    });
}

function parseFrom(raw: string | undefined): StartFrom | undefined {
  if (raw === undefined || raw === 'now' || raw === 'earliest') return raw;
  if (/^[1-9]\d*$/.test(raw)) return Number(raw);
  throw new RillError('invalid_parameter', '--from must be now, earliest or a seq (1 or more)');
}

const COLOURS = ['cyan', 'magenta', 'yellow', 'green', 'blue', 'red'] as const;

/** Renders events for a person: time, topic (aligned), seq, type, data; colours on a TTY. */
class Pretty {
  private width = 0;
  private readonly colour = new Map<string, (typeof COLOURS)[number]>();
  constructor(private readonly tty: boolean) {}

  private paint(style: Parameters<typeof styleText>[0], s: string): string {
    return this.tty ? styleText(style, s) : s;
  }

  event(ev: RillEvent): string {
    this.width = Math.max(this.width, ev.topic.length);
    let c = this.colour.get(ev.topic);
    if (!c) this.colour.set(ev.topic, (c = COLOURS[this.colour.size % COLOURS.length]!));
    const time = new Date(ev.time).toISOString().slice(11, 23);
    const type = ev.type ? ` ${this.paint('bold', ev.type)}` : '';
    return `${this.paint('gray', time)} ${this.paint(c, ev.topic.padEnd(this.width))} ${this.paint('dim', `#${ev.seq}`.padStart(7))}${type} ${JSON.stringify(ev.data)}\n`;
  }

  notice(n: RillNotice): string {
    const what =
      n.kind === 'gap'
        ? `gap: events ${n.missing.from}–${n.missing.to} of ${n.topic} are gone (retention)`
        : `reset: ${n.topic} ${n.reason}${n.missing ? ` (missing ${n.missing.from}–${n.missing.to})` : ''}, continuing after seq ${n.seq}`;
    return `${this.paint('yellow', `! ${what}`)}\n`;
  }
}

async function tail(topics: string[], flags: TailFlags): Promise<number> {
  const url = flags.url ?? process.env.RILL_URL ?? DEFAULT_URL;
  const format = flags.format ?? (process.stdout.isTTY ? 'pretty' : 'json');
  const tty = Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
  const pretty = new Pretty(tty);
  const errTty = Boolean(process.stderr.isTTY);
  let from: StartFrom | undefined;
  try {
    from = parseFrom(flags.from);
  } catch (err) {
    process.stderr.write(`rill: ${(err as Error).message}\n`);
    return 2;
  }
  const token = tokenFrom(flags);
  const client = createClient({
    url,
    maxRetryAfter: CLI_MAX_RETRY_AFTER,
    transport: flags.transport ?? 'auto',
    WebSocket,
    ...(token !== undefined ? { token } : {}),
  });
  /** Whether the terminal was last told of a problem (then it is told when it is over). */
  let troubled = false;
  let lastState = '';
  const sub = client.subscribe(topics, {
    ...(from !== undefined ? { from } : {}),
    ...(flags.since !== undefined ? { since: flags.since } : {}),
    notices: true,
    onState: (s: StateChange) => {
      // Not a terminal: one JSON line per state change. A terminal: what is wrong and what next.
      if (!errTty) {
        // Retries in the same state for the same reason are one state, not a line each.
        const key = `${s.state} ${s.error?.code ?? ''}`;
        if (key === lastState) return;
        lastState = key;
        process.stderr.write(
          `${JSON.stringify({
            state: s.state,
            url,
            transport: s.transport,
            ...(s.delay !== undefined ? { delay: s.delay, attempt: s.attempt } : {}),
            ...(s.error ? { error: s.error.code, message: s.error.message } : {}),
            ...(s.error?.code === 'connection_failed'
              ? { cause: unreachableCause(s.error, url) }
              : {}),
            ...(s.error?.limit !== undefined ? { limit: s.error.limit } : {}),
            ...(s.error?.scope !== undefined ? { scope: s.error.scope } : {}),
            ...(s.error?.limitValue !== undefined ? { limitValue: s.error.limitValue } : {}),
            ...(s.error?.retryAfter !== undefined ? { retryAfter: s.error.retryAfter } : {}),
          })}\n`,
        );
      } else if (s.state === 'reconnecting' || (s.state === 'connecting' && s.error)) {
        const why =
          s.error?.code === 'connection_failed'
            ? cannotReach(url, s.error)
            : `${url}: ${s.error ? `${describeRefusal(s.error) ?? s.error.message}, ` : ''}`;
        const delay = s.delay === undefined ? '' : ` in ${formatDelay(s.delay)}`;
        process.stderr.write(
          styleText(
            'dim',
            `~ ${why}${s.error?.code === 'connection_failed' ? ', ' : ''}reconnecting${delay}\n`,
          ),
        );
        troubled = true;
      } else if (s.state === 'open' && troubled) {
        process.stderr.write(styleText('dim', `~ connected to ${url} (${s.transport})\n`));
        troubled = false;
      }
    },
  });
  let stopped = false;
  const stop = (): void => {
    stopped = true;
    sub.close('interrupted');
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // A closed pipe (`rill tail … | head`) is a normal way to stop.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') stop();
  });
  try {
    for await (const item of sub) {
      const line =
        'kind' in item
          ? format === 'pretty'
            ? pretty.notice(item)
            : `${JSON.stringify({ notice: item })}\n`
          : format === 'pretty'
            ? pretty.event(item)
            : `${JSON.stringify(item)}\n`;
      if (!process.stdout.write(line)) {
        await new Promise((r) => process.stdout.once('drain', r));
      }
    }
  } catch (err) {
    const e = err as RillError;
    process.stderr.write(`rill: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    client.close();
  }
  return stopped ? 0 : 1;
}
