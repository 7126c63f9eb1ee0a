import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { fromResponse, networkError, RillError } from '@rill/client';
import { ConfigError, parseDuration, parseSize } from '../config.js';
import { isTopic } from '../model/topic.js';
import { cannotReach } from './reach.js';
import { describeRefusal } from './refusal.js';
import { EXIT } from './serve.js';
import { DEFAULT_URL, tokenFrom, tokenOption, urlOption } from './tail.js';

/** The flags every `rill topics` command takes. */
interface ClientFlags {
  url?: string;
  token?: string;
  json?: boolean;
}

interface ListFlags extends ClientFlags {
  pattern?: string;
  prefix?: string;
  limit?: string;
}

interface PurgeFlags extends ClientFlags {
  before?: string;
  beforeTime?: string;
}

interface RetentionFlags extends ClientFlags {
  maxEvents?: string;
  maxAge?: string;
  maxBytes?: string;
  clear?: boolean;
}

/** A topic as `GET /v1/topics` and `GET /v1/topics/{topic}` answer it. */
interface TopicInfo {
  topic: string;
  epoch: string;
  firstSeq: number;
  lastSeq: number;
  count: number;
  created: number;
  lastTime: number | null;
  rate: number;
  retention: Limits;
}

interface Limits {
  maxEvents: number;
  maxAgeMs: number;
  maxBytes: number;
}

/** What the retention routes answer: the limits in force and the topic's own override. */
interface RetentionInfo extends Limits {
  topic: string;
  override: Partial<Limits> | null;
}

/** A mistake in the command line: exit code 2, as commander's own usage errors. */
class UsageError extends Error {}

/** Topics per request while listing (the server's maximum page). */
const PAGE = 1000;

export function registerTopics(program: Command): void {
  const topics = program
    .command('topics')
    .description('list topics and administer them: info, delete, purge, retention');
  const command = (name: string, description: string): Command =>
    topics
      .command(name)
      .description(description)
      .addOption(urlOption())
      .addOption(tokenOption())
      .option('--json', 'print JSON instead of a table');

  command('list', 'list the topics the token may read, in name order')
    .option('--pattern <pattern>', 'only topics this pattern matches (prices.*, logs.>)')
    .option('--prefix <prefix>', 'only topics starting with this')
    .option('--limit <n>', 'at most this many topics (default: all)')
    .action((flags: ListFlags) => run(flags, (api) => list(api, flags)));

  command('info', "a topic's seqs, epoch, rate and retention")
    .argument('<topic>', 'topic name')
    .action((topic: string, flags: ClientFlags) => run(flags, (api) => info(api, topic, flags)));

  command('delete', "delete a topic's log; the next publish starts a new epoch (admin)")
    .argument('<topic>', 'topic name')
    .option('--yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .action((topic: string, flags: ClientFlags & { yes?: boolean }) =>
      run(flags, (api) => remove(api, topic, flags)),
    );

  command('purge', "drop a topic's events before a seq or a time (admin)")
    .argument('<topic>', 'topic name')
    .option('--before <seq>', 'drop the events with a lower seq')
    .option('--before-time <time>', 'drop the events older than this ISO 8601 time (or ms)')
    .action((topic: string, flags: PurgeFlags) => run(flags, (api) => purge(api, topic, flags)));

  command(
    'retention',
    "show a topic's retention, or replace its override (fields left out come from the rules) (admin)",
  )
    .argument('<topic>', 'topic name')
    .option('--max-events <n>', 'keep at most this many events')
    .option('--max-age <duration>', 'keep events this long (30s, 1h, 7d, or ms)')
    .option('--max-bytes <size>', 'keep at most this many bytes (64KiB, 10MB, or bytes)')
    .option('--clear', "remove the topic's override: the configured rules apply again")
    .action((topic: string, flags: RetentionFlags) =>
      run(flags, (api) => retention(api, topic, flags)),
    );
}

/** Requests to one server with the command's token; a refusal or an unreachable server throws. */
class Api {
  readonly url: string;
  private readonly token: string | undefined;

  constructor(flags: ClientFlags) {
    this.url = (flags.url ?? process.env.RILL_URL ?? DEFAULT_URL).replace(/\/+$/, '');
    this.token = tokenFrom(flags);
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T | undefined> {
    const headers: Record<string, string> = {};
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(this.url + path, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      throw networkError(err, undefined, this.url);
    }
    if (!res.ok) throw await fromResponse(res);
    return res.status === 204 ? undefined : ((await res.json()) as T);
  }
}

/** Runs one command and sets the exit code: 0 done, 1 refused or unreachable, 2 usage. */
async function run(flags: ClientFlags, body: (api: Api) => Promise<void>): Promise<void> {
  const api = new Api(flags);
  try {
    await body(api);
    process.exitCode = EXIT.ok;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`rill: ${err.message}\n`);
      process.exitCode = EXIT.config;
    } else if (err instanceof RillError) {
      process.stderr.write(`rill: ${describe(err, api.url)}\n`);
      process.exitCode = EXIT.runtime;
    } else {
      throw err;
    }
  }
}

/** A server's refusal or an unreachable server in words, with the error code first. */
function describe(err: RillError, url: string): string {
  if (err.code === 'connection_failed') return cannotReach(url, err);
  const refusal = describeRefusal(err, null);
  if (refusal !== undefined) return refusal;
  const hint =
    err.code === 'forbidden' || err.code === 'unauthorized'
      ? ' (--token or RILL_TOKEN: a token or API key with the admin permission)'
      : '';
  return `${err.code}: ${err.message}${hint}`;
}

function topicPath(topic: string, rest = ''): string {
  if (!isTopic(topic)) {
    throw new UsageError(
      `${JSON.stringify(topic)} is not a topic name (1–200 of A-Z a-z 0-9 _ . ~ -, dot-separated)`,
    );
  }
  return `/v1/topics/${encodeURIComponent(topic)}${rest}`;
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A whole number ≥ `min` from a flag, or a usage error naming the flag. */
function wholeNumber(raw: string, flag: string, min: number): number {
  if (!/^\d{1,16}$/.test(raw) || !Number.isSafeInteger(Number(raw)) || Number(raw) < min) {
    throw new UsageError(
      `${flag} must be a whole number of at least ${min} (got ${JSON.stringify(raw)})`,
    );
  }
  return Number(raw);
}

async function list(api: Api, flags: ListFlags): Promise<void> {
  const max = flags.limit === undefined ? Infinity : wholeNumber(flags.limit, '--limit', 1);
  const out: TopicInfo[] = [];
  let after: string | null = null;
  do {
    const q = new URLSearchParams({ limit: String(Math.min(PAGE, max - out.length)) });
    if (flags.pattern !== undefined) q.set('pattern', flags.pattern);
    if (flags.prefix !== undefined) q.set('prefix', flags.prefix);
    if (after !== null) q.set('after', after);
    const page = (await api.call<{ topics: TopicInfo[]; next: string | null }>(
      'GET',
      `/v1/topics?${q}`,
    ))!;
    out.push(...page.topics);
    after = page.next;
  } while (after !== null && out.length < max);
  if (flags.json) return print(out);
  if (out.length === 0) {
    process.stderr.write('no topics\n');
    return;
  }
  process.stdout.write(
    table(
      ['TOPIC', 'EVENTS', 'FIRST', 'LAST', 'RATE/S', 'LAST EVENT'],
      out.map((t) => [
        t.topic,
        String(t.count),
        String(t.firstSeq),
        String(t.lastSeq),
        String(t.rate),
        t.lastTime ? new Date(t.lastTime).toISOString() : '-',
      ]),
      [false, true, true, true, true, false],
    ),
  );
}

async function info(api: Api, topic: string, flags: ClientFlags): Promise<void> {
  const t = (await api.call<TopicInfo>('GET', topicPath(topic)))!;
  // The override is admin-only: without the permission, the configured limits are shown.
  let r: RetentionInfo | undefined;
  try {
    r = await api.call<RetentionInfo>('GET', topicPath(topic, '/retention'));
  } catch (err) {
    if (!(err instanceof RillError && err.code === 'forbidden')) throw err;
  }
  const retention = r ? { ...pick(r), override: r.override } : t.retention;
  if (flags.json) return print({ ...t, retention });
  const rows: Array<[string, string]> = [
    ['topic', t.topic],
    ['events', String(t.count)],
    ['first seq', String(t.firstSeq)],
    ['last seq', String(t.lastSeq)],
    ['epoch', t.epoch],
    ['created', new Date(t.created).toISOString()],
    ['last event', t.lastTime ? new Date(t.lastTime).toISOString() : '-'],
    ['rate', `${t.rate}/s over the last minute`],
    ...limitRows(r ?? { ...t.retention, override: null }),
  ];
  process.stdout.write(table(['', ''], rows, [false, false], false));
}

async function remove(
  api: Api,
  topic: string,
  flags: ClientFlags & { yes?: boolean },
): Promise<void> {
  const path = topicPath(topic);
  if (!flags.yes) {
    if (!process.stdin.isTTY) {
      throw new UsageError(`refusing to delete ${topic} without --yes (stdin is not a terminal)`);
    }
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(
      `Delete topic ${topic} and all its events? Subscribers are told. Type its name to confirm: `,
    );
    rl.close();
    if (answer.trim() !== topic) throw new UsageError('not confirmed: nothing deleted');
  }
  await api.call('DELETE', path);
  if (flags.json) return print({ topic, deleted: true });
  process.stdout.write(`deleted ${topic}\n`);
}

async function purge(api: Api, topic: string, flags: PurgeFlags): Promise<void> {
  const path = topicPath(topic, '/purge');
  let body: { before: number } | { beforeTime: number };
  if (flags.before !== undefined && flags.beforeTime === undefined) {
    body = { before: wholeNumber(flags.before, '--before', 1) };
  } else if (flags.beforeTime !== undefined && flags.before === undefined) {
    const raw = flags.beforeTime;
    const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
    if (!Number.isSafeInteger(ms) || ms < 0) {
      throw new UsageError(
        `--before-time must be an ISO 8601 time or ms since 1970 (got ${JSON.stringify(raw)})`,
      );
    }
    body = { beforeTime: ms };
  } else {
    throw new UsageError('give one of --before <seq> or --before-time <time>');
  }
  const r = (await api.call<{ topic: string; epoch: string; firstSeq: number; lastSeq: number }>(
    'POST',
    path,
    body,
  ))!;
  if (flags.json) return print(r);
  const left = Math.max(0, r.lastSeq - r.firstSeq + 1);
  process.stdout.write(
    `purged ${topic}: ${left} events left (seq ${r.firstSeq}–${r.lastSeq}, epoch ${r.epoch})\n`,
  );
}

async function retention(api: Api, topic: string, flags: RetentionFlags): Promise<void> {
  const path = topicPath(topic, '/retention');
  const set: Partial<Limits> = {};
  if (flags.maxEvents !== undefined) {
    set.maxEvents = wholeNumber(flags.maxEvents, '--max-events', 0);
  }
  if (flags.maxAge !== undefined)
    set.maxAgeMs = withUnits(parseDuration, flags.maxAge, '--max-age');
  if (flags.maxBytes !== undefined)
    set.maxBytes = withUnits(parseSize, flags.maxBytes, '--max-bytes');
  const setting = Object.keys(set).length > 0;
  if (flags.clear && setting) {
    throw new UsageError('--clear takes no --max-events, --max-age or --max-bytes');
  }
  let r: RetentionInfo;
  if (flags.clear) {
    r = (await api.call<RetentionInfo>('DELETE', path))!;
  } else if (setting) {
    const body: Record<string, number> = {};
    if (set.maxEvents !== undefined) body.maxEvents = set.maxEvents;
    if (set.maxAgeMs !== undefined) body.maxAge = set.maxAgeMs;
    if (set.maxBytes !== undefined) body.maxBytes = set.maxBytes;
    r = (await api.call<RetentionInfo>('PUT', path, body))!;
  } else {
    r = (await api.call<RetentionInfo>('GET', path))!;
  }
  if (flags.json) return print(r);
  process.stdout.write(table(['', ''], limitRows(r), [false, false], false));
}

/** A duration or size flag through the config's parser, or a usage error naming the flag. */
function withUnits(parse: (v: string) => number, raw: string, flag: string): number {
  try {
    return parse(raw);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`${flag}: ${err.message}`);
    throw err;
  }
}

function pick(l: Limits): Limits {
  return { maxEvents: l.maxEvents, maxAgeMs: l.maxAgeMs, maxBytes: l.maxBytes };
}

/** `max events  1000 (this topic's override)`, `max age  none`. */
function limitRows(r: Limits & { override: Partial<Limits> | null }): Array<[string, string]> {
  const row = (name: string, key: keyof Limits, show: (n: number) => string): [string, string] => {
    const v = r[key];
    const own = r.override?.[key] !== undefined ? " (this topic's override)" : '';
    return [name, `${v === 0 ? 'none' : show(v)}${own}`];
  };
  return [
    row('max events', 'maxEvents', String),
    row('max age', 'maxAgeMs', formatMs),
    row('max bytes', 'maxBytes', formatBytes),
  ];
}

function formatMs(ms: number): string {
  for (const [unit, n] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}

function formatBytes(b: number): string {
  for (const [unit, n] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (b % n === 0) return `${b / n}${unit}`;
  }
  return `${b} bytes`;
}

/** Rows aligned in columns (numbers to the right), with a header line unless `header` is false. */
function table(head: string[], rows: string[][], right: boolean[], header = true): string {
  const all = header ? [head, ...rows] : rows;
  const width = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all
    .map(
      (r) =>
        r
          .map((c, i) => (right[i] ? c.padStart(width[i]!) : c.padEnd(width[i]!)))
          .join('  ')
          .trimEnd() + '\n',
    )
    .join('');
}
