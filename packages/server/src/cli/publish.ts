import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import {
  createClient,
  RillError,
  type EventInput,
  type PublishResult,
  type PublishRetry,
} from '@rill/client';
import { cannotReach } from './reach.js';
import { CLI_MAX_RETRY_AFTER, describeRefusal } from './refusal.js';
import { DEFAULT_URL, formatDelay, tokenFrom, tokenOption, urlOption } from './tail.js';

interface PublishFlags {
  url?: string;
  token?: string;
  type?: string;
  key?: string;
  batchSize?: string;
}

/** Events per request when streaming stdin. */
export const DEFAULT_BATCH_SIZE = 500;

export function registerPublish(program: Command): void {
  program
    .command('publish')
    .description(
      'publish one event (its data as JSON), or stream NDJSON events {type?, key?, data} from stdin',
    )
    .argument('<topic>', 'topic name')
    .argument('[json]', "the event's data as JSON; without it, events are read from stdin")
    .addOption(urlOption())
    .addOption(tokenOption())
    .option('--type <type>', 'event type (single event)')
    .option('--key <key>', 'idempotency key (single event)')
    .option('--batch-size <n>', `events per request from stdin (default ${DEFAULT_BATCH_SIZE})`)
    .action(async (topic: string, json: string | undefined, flags: PublishFlags) => {
      process.exitCode = await publish(topic, json, flags);
    });
}

class InputError extends Error {}

/** Parses one stdin line into an event, or says exactly what is wrong with it. */
function parseLine(line: string, n: number): EventInput {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new InputError(`line ${n}: not JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v) || !('data' in v)) {
    throw new InputError(`line ${n}: expected an event object {"type"?, "key"?, "data"}`);
  }
  return v as EventInput;
}

async function publish(
  topic: string,
  json: string | undefined,
  flags: PublishFlags,
): Promise<number> {
  const url = flags.url ?? process.env.RILL_URL ?? DEFAULT_URL;
  const token = tokenFrom(flags);
  const client = createClient({
    url,
    maxRetryAfter: CLI_MAX_RETRY_AFTER,
    ...(token !== undefined ? { token } : {}),
  });
  const fail = (msg: string, code = 1): number => {
    process.stderr.write(`rill: ${msg}\n`);
    return code;
  };
  const describe = (err: unknown): string =>
    err instanceof RillError
      ? (describeRefusal(err, null) ?? `${err.code}: ${err.message}`)
      : String((err as Error)?.message ?? err);
  // A server that cannot be reached is not a rejection: say where and why, and that it gave up.
  const failure = (err: unknown): string =>
    err instanceof RillError && err.code === 'connection_failed'
      ? `${cannotReach(url, err)}, gave up after ${retries} attempts`
      : `rejected: ${describe(err)}`;
  // Retries take seconds: on a terminal, say what is happening meanwhile.
  let retries = 1;
  const onRetry = (r: PublishRetry): void => {
    retries = r.attempt + 1;
    // Asked to wait (429, overloaded): always said, with the limit, as it slows the command down.
    const refusal = describeRefusal(r.error, r.delay);
    if (refusal !== undefined) {
      process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}rill: ${refusal}\n`);
      return;
    }
    if (!process.stderr.isTTY) return;
    const why =
      r.error.code === 'connection_failed' ? cannotReach(url, r.error) : describe(r.error);
    process.stderr.write(`rill: ${why}, retrying in ${formatDelay(r.delay)}\n`);
  };

  if (json !== undefined) {
    let data: unknown;
    try {
      data = JSON.parse(json);
    } catch {
      return fail('the event data is not JSON', 2);
    }
    try {
      const r = await client.publish(topic, data, {
        ...(flags.type !== undefined ? { type: flags.type } : {}),
        ...(flags.key !== undefined ? { key: flags.key } : {}),
        onRetry,
      });
      process.stdout.write(`${JSON.stringify(r)}\n`);
      return 0;
    } catch (err) {
      return fail(failure(err));
    }
  }

  const size = flags.batchSize === undefined ? DEFAULT_BATCH_SIZE : Number(flags.batchSize);
  if (!Number.isInteger(size) || size < 1)
    return fail('--batch-size must be a positive integer', 2);
  const tty = Boolean(process.stderr.isTTY);
  const started = Date.now();
  let sent = 0;
  let duplicates = 0;
  let first: PublishResult | undefined;
  let last: PublishResult | undefined;
  let batch: EventInput[] = [];
  let batchStart = 1;
  let lineNo = 0;
  const progress = (): void => {
    if (!tty) return;
    const secs = (Date.now() - started) / 1000;
    process.stderr.write(
      `\r\x1b[Kpublished ${sent} events (${Math.round(sent / Math.max(secs, 0.001))}/s)`,
    );
  };
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    let results: PublishResult[];
    try {
      results = await client.publishBatch(topic, batch, { onRetry });
    } catch (err) {
      throw new InputError(
        err instanceof RillError && err.code === 'connection_failed'
          ? `lines ${batchStart}–${lineNo} not sent: ${failure(err)}`
          : `lines ${batchStart}–${lineNo} rejected (nothing of them stored): ${describe(err)}`,
      );
    }
    first ??= results[0];
    last = results.at(-1);
    sent += results.length;
    duplicates += results.filter((r) => r.duplicate).length;
    batch = [];
    batchStart = lineNo + 1;
    progress();
  };
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  try {
    for await (const line of rl) {
      lineNo++;
      if (line.trim() === '') {
        if (batch.length === 0) batchStart = lineNo + 1;
        continue;
      }
      batch.push(parseLine(line, lineNo));
      if (batch.length >= size) await flush();
    }
    await flush();
  } catch (err) {
    if (tty && sent > 0) process.stderr.write('\n');
    rl.close();
    return fail(
      `${(err as Error).message}${sent > 0 ? ` (${sent} events before were stored)` : ''}`,
    );
  }
  if (tty) process.stderr.write('\r\x1b[K');
  const secs = ((Date.now() - started) / 1000).toFixed(2);
  const range = first && last ? ` (seq ${first.seq}–${last.seq})` : '';
  process.stderr.write(
    `published ${sent} events to ${topic}${range}${duplicates ? `, ${duplicates} duplicates` : ''} in ${secs} s\n`,
  );
  return 0;
}
