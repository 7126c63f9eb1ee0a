import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiscardPolicy, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { pino, type Logger } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { openSse, useCleanups, waitFor } from '@rill/testkit';
import { SHARED_NATS_URL, dropStreams, uniqueNatsPrefix } from '@rill/testkit/nats';
import { OwnRedis } from '@rill/testkit/redis';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import type { RillConfigInput } from '../src/config.js';
import type { Engine } from '../src/engine/engine.js';
import { MemoryEngine } from '../src/engine/memory.js';
import { NatsEngine } from '../src/engine/nats/engine.js';
import { Streams } from '../src/engine/nats/streams.js';
import { RedisEngine } from '../src/engine/redis/engine.js';
import { createServer } from '../src/server.js';

/**
 * A full store, end to end over HTTP, SSE and WebSocket, for each engine on a store that really
 * fills: lmdb on a 4 MiB tmpfs of its own, Redis at a 2 MB `maxmemory` with `noeviction`, a
 * JetStream stream with `max_bytes` and `discard: new`, the memory engine's byte budget.
 * Publishes answer 507 with nothing stored, streams and reads go on, and publishing works again
 * once space is freed, by retention or by an operator.
 */

const TOPIC = 'full.t';
const PAD = 'x'.repeat(1_000);
/** Age retention of the stores that free space by retention; their clocks jump past it. */
const MAX_AGE_MS = 60_000;

/** The tmpfs mounts this file made and has not unmounted yet. */
const mounted = new Set<string>();

/** Unmounts (lazily: a store a failed test left open cannot keep it) and removes the directory. */
function unmount(mnt: string): void {
  if (!mounted.delete(mnt)) return;
  execFileSync('umount', ['-l', mnt]);
  rmdirSync(mnt);
}

// A cleanup that threw skips the ones after it: unmount whatever is left in any case.
afterAll(() => {
  for (const mnt of [...mounted]) unmount(mnt);
});

/** A clock the test moves by hand. */
function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = Date.now();
  return { now: () => t, advance: (ms) => (t += ms) };
}

interface Store {
  /** The server's configuration, or the engine it is given. */
  config: RillConfigInput;
  engine?: Engine;
  /** Runs once the topic exists (a JetStream limit is set on its stream). */
  afterFirst?: () => Promise<void>;
  /** Makes room, as retention or an operator would. */
  free: () => Promise<void>;
}

interface FullStore {
  name: string;
  /** What makes room, for the test name. */
  freedBy: string;
  /** A full store refuses every topic (true) or only the one whose stream is full (false). */
  wholeStore: boolean;
  create(cleanups: Array<() => unknown>, logger: Logger): Promise<Store>;
}

const stores: FullStore[] = [
  {
    name: 'lmdb on a 4 MiB tmpfs',
    freedBy: 'an operator deleting a file on the full filesystem',
    wholeStore: true,
    async create(cleanups) {
      const mnt = mkdtempSync(join(tmpdir(), 'rill-full-'));
      try {
        // Root only, as on CI; a failure here fails the test.
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
      } catch (err) {
        rmdirSync(mnt);
        throw err;
      }
      mounted.add(mnt);
      cleanups.push(() => unmount(mnt));
      const ballast = join(mnt, 'ballast');
      writeFileSync(ballast, Buffer.alloc(1024 * 1024, 1));
      mkdirSync(join(mnt, 'data'));
      return {
        config: {
          engine: 'lmdb',
          dataDir: join(mnt, 'data'),
          retention: { maxEvents: 0, maxAge: 0 },
        },
        free: async () => rmSync(ballast),
      };
    },
  },
  {
    name: 'redis with maxmemory 2mb and noeviction',
    freedBy: "age retention's sweep",
    wholeStore: true,
    async create(cleanups, logger) {
      const r = await OwnRedis.create(['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction']);
      cleanups.push(() => r.destroy());
      const c = clock();
      const engine = new RedisEngine({
        url: r.url,
        prefix: 'full',
        now: c.now,
        sweepIntervalMs: 50,
        retention: { maxEvents: 0, maxAgeMs: MAX_AGE_MS, rules: [] },
        log: logger,
      });
      await engine.ready(5_000);
      return { config: { engine: 'redis' }, engine, free: async () => c.advance(2 * MAX_AGE_MS) };
    },
  },
  {
    name: 'nats with a stream limited by max_bytes, discard new',
    freedBy: "age retention's sweep",
    wholeStore: false,
    async create(cleanups, logger) {
      const prefix = uniqueNatsPrefix();
      cleanups.push(() => dropStreams(SHARED_NATS_URL, prefix));
      const c = clock();
      const engine = new NatsEngine({
        url: SHARED_NATS_URL,
        prefix,
        now: c.now,
        sweepIntervalMs: 50,
        retention: { maxEvents: 0, maxAgeMs: MAX_AGE_MS, rules: [] },
        log: logger,
      });
      await engine.ready(5_000);
      return {
        config: { engine: 'nats' },
        engine,
        // As an operator would: `nats stream edit --max-bytes 128KiB --discard new`.
        async afterFirst() {
          const nc = await connect({ servers: SHARED_NATS_URL });
          try {
            const jsm = await jetstreamManager(nc);
            await jsm.streams.update(new Streams(prefix, 1, 0).streamName(TOPIC), {
              max_bytes: 128 * 1024,
              discard: DiscardPolicy.New,
            });
          } finally {
            await nc.close();
          }
        },
        free: async () => c.advance(2 * MAX_AGE_MS),
      };
    },
  },
  {
    name: 'memory with a byte budget',
    freedBy: "age retention's sweep",
    wholeStore: true,
    async create(_cleanups, logger) {
      const c = clock();
      const engine = new MemoryEngine({
        maxStoreBytes: 200 * 1024,
        now: c.now,
        sweepIntervalMs: 20,
        retention: { maxEvents: 0, maxAgeMs: MAX_AGE_MS, rules: [] },
        log: logger,
      });
      return { config: { engine: 'memory' }, engine, free: async () => c.advance(2 * MAX_AGE_MS) };
    },
  },
];

/** Events `{n, pad}` for n = from..from+count-1. */
function batch(from: number, count: number): { data: { n: number; pad: string } }[] {
  return Array.from({ length: count }, (_, i) => ({ data: { n: from + i, pad: PAD } }));
}

interface Answer {
  status: number;
  retryAfter: string | null;
  body: {
    events?: { seq: number }[];
    error?: { code: string; message: string; retryable: boolean; closeCode: number };
  };
}

async function post(url: string, topic: string, body: unknown): Promise<Answer> {
  const res = await fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    body: (await res.json()) as Answer['body'],
  };
}

/** Every event stored on `topic` as `[seq, n]`, page by page, and the head. */
async function stored(
  url: string,
  topic: string,
): Promise<{ firstSeq: number; lastSeq: number; events: [number, number][] }> {
  const events: [number, number][] = [];
  let after = 0;
  for (;;) {
    const res = await fetch(`${url}/v1/topics/${topic}/events?after=${after}&limit=1000`);
    expect(res.status).toBe(200);
    const page = (await res.json()) as {
      firstSeq: number;
      lastSeq: number;
      events: { seq: number; data: { n: number } }[];
      next: number;
      more: boolean;
    };
    events.push(...page.events.map((e): [number, number] => [e.seq, e.data.n]));
    if (!page.more) return { firstSeq: page.firstSeq, lastSeq: page.lastSeq, events };
    after = page.next;
  }
}

function logLines(): { logger: Logger; messages: (prefix: string) => string[] } {
  const lines: { msg?: string }[] = [];
  const logger = pino(
    { level: 'info' },
    { write: (line: string) => void lines.push(JSON.parse(line) as { msg?: string }) },
  );
  return {
    logger,
    messages: (prefix) => lines.map((l) => l.msg ?? '').filter((m) => m.startsWith(prefix)),
  };
}

describe('a full store', () => {
  const { cleanups } = useCleanups();

  for (const s of stores) {
    it(`answers 507 with nothing stored, keeps streams and reads going, and stores again once ${s.freedBy} makes room: ${s.name}`, async () => {
      const log = logLines();
      const store = await s.create(cleanups, log.logger);
      const server = await createServer(
        { port: 0, ...store.config },
        { logger: log.logger, ...(store.engine ? { engine: store.engine } : {}) },
      );
      const url = await server.listen();
      cleanups.push(() => server.close());

      /** What was acknowledged, as `[seq, n]`, in order. */
      const acked: [number, number][] = [];
      const record = (a: Answer, first: number): void => {
        a.body.events!.forEach((e, i) => acked.push([e.seq, first + i]));
      };
      let n = 0;
      const first = await post(url, TOPIC, batch(n, 10));
      expect(first.status).toBe(201);
      record(first, n);
      n += 10;
      await store.afterFirst?.();
      const sse = await openSse(`${url}/v1/topics/${TOPIC}/stream?from=earliest`);
      cleanups.push(() => sse.close());
      const ws = await WsClient.open(wsUrl(url));
      cleanups.push(() => ws.ws.terminate());

      // Fill it.
      let refused: Answer | undefined;
      for (let i = 0; i < 1_000 && refused === undefined; i++) {
        const a = await post(url, TOPIC, batch(n, 10));
        if (a.status === 201) record(a, n);
        else refused = a;
        n += 10;
      }
      expect(refused).toMatchObject({
        status: 507,
        retryAfter: '1',
        body: { error: { code: 'insufficient_storage', retryable: true, closeCode: 4007 } },
      });
      expect(refused!.body.error!.message).toMatch(/full/);

      // Full: concurrent publishes and a WebSocket publish of one event larger than a refused
      // batch are refused too; the socket stays open.
      const burst = await Promise.all(
        [0, 1, 2, 3].map((i) => post(url, TOPIC, batch(n + i * 10, 10))),
      );
      for (const [i, a] of burst.entries()) {
        if (a.status === 201) record(a, n + i * 10);
        else expect([a.status, a.body.error?.code]).toEqual([507, 'insufficient_storage']);
      }
      n += 40;
      const big = { n: n++, pad: 'y'.repeat(11_000) };
      const wsRefused = await ws.request({ op: 'publish', topic: TOPIC, data: big });
      expect(wsRefused).toMatchObject({
        op: 'error',
        error: { code: 'insufficient_storage', retryable: true, closeCode: 4007 },
      });
      const other = await post(url, 'full.other', batch(0, 10));
      if (s.wholeStore) {
        expect(other.status).toBe(507);
        expect((await fetch(`${url}/v1/topics/full.other`)).status).toBe(404);
      } else {
        expect(other.status).toBe(201);
      }

      // Every acknowledged event is readable, in order, and nothing else was stored.
      const full = await stored(url, TOPIC);
      expect(full.events).toEqual(acked);
      expect(full.lastSeq).toBe(acked.at(-1)![0]);
      // The live subscriber has them all, with no error, and its stream is open.
      await sse.until(() => sse.events().length >= acked.length);
      expect(sse.events().map((e) => [e.seq, (e.data as { n: number }).n])).toEqual(acked);
      expect(sse.frames.filter((f) => f.event === 'error' || f.event === 'reset')).toEqual([]);
      expect(sse.res.closed).toBe(false);
      // Said once in the log, not once per refusal.
      expect(log.messages('Storage is full')).toHaveLength(1);

      // Make room: the next publish is stored, right after the last acknowledged one.
      await store.free();
      let back: Answer | undefined;
      await waitFor(
        async () => {
          const a = await post(url, TOPIC, batch(n, 1));
          if (a.status !== 201) {
            expect(a.status).toBe(507);
            return false;
          }
          back = a;
          return true;
        },
        20_000,
        50,
      );
      record(back!, n++);
      const lastBefore = full.lastSeq;
      expect(acked.at(-1)![0]).toBe(lastBefore + 1);
      const wsAck = await ws.request({ op: 'publish', topic: TOPIC, data: big });
      expect(wsAck).toMatchObject({ op: 'ack', seq: lastBefore + 2 });
      acked.push([lastBefore + 2, big.n]);
      const more = await post(url, TOPIC, batch(n, 10));
      expect(more.status).toBe(201);
      record(more, n);
      expect(log.messages('Storage has room again')).toHaveLength(1);

      // The subscriber goes on from where it was, without a gap or a notice.
      await sse.until(() => sse.events().length >= acked.length);
      expect(sse.events().map((e) => [e.seq, (e.data as { n: number }).n])).toEqual(acked);
      expect(sse.frames.filter((f) => f.event === 'error' || f.event === 'reset')).toEqual([]);
      // What is stored is the newest acknowledged events (retention may have dropped older ones).
      const after = await stored(url, TOPIC);
      expect(after.lastSeq).toBe(acked.at(-1)![0]);
      expect(after.events).toEqual(acked.filter(([seq]) => seq >= after.firstSeq));
      expect(after.events.length).toBeGreaterThanOrEqual(12);
    });
  }
});

describe('retention by bytes behind the HTTP API', () => {
  const { cleanups } = useCleanups();

  it('announces what maxBytes dropped to a subscriber behind it, as for the other limits', async () => {
    const server = await createServer(
      {
        engine: 'memory',
        port: 0,
        retention: { maxEvents: 0, maxAge: 0, maxBytes: '1KB', rules: [] },
      },
      { logger: pino({ level: 'silent' }) },
    );
    const url = await server.listen();
    cleanups.push(() => server.close());
    // 100 bytes each: `"` + 98 characters + `"`.
    const events = Array.from({ length: 20 }, (_, i) => ({ data: `${i}`.padEnd(98, '.') }));
    expect((await post(url, 'bytes.t', events)).status).toBe(201);
    const s = await openSse(`${url}/v1/topics/bytes.t/stream?from=1`);
    cleanups.push(() => s.close());
    await s.until(() => s.events().length === 10);
    const reset = s.frames.find((f) => f.event === 'reset')!;
    expect(JSON.parse(reset.data!)).toMatchObject({
      topic: 'bytes.t',
      reason: 'retention',
      missing: { from: 1, to: 10 },
    });
    expect(s.events().map((e) => e.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 11 + i));
  });
});

describe('redis over maxmemory', () => {
  const { cleanups } = useCleanups();

  it('refuses every append that adds, whatever it would write first, and serves reads and watches', async () => {
    const r = await OwnRedis.create(['--maxmemory-policy', 'noeviction']);
    cleanups.push(() => r.destroy());
    const admin = await r.client();
    cleanups.push(() => admin.disconnect());
    const c = clock();
    const engine = new RedisEngine({
      url: r.url,
      prefix: 'oom',
      now: c.now,
      idempotencyWindowMs: 1_000,
      retention: { maxEvents: 0, maxAgeMs: 0, rules: [] },
    });
    cleanups.push(() => engine.close());
    await engine.ready(5_000);
    await engine.append('t', [
      { data: '1', key: 'a' },
      { data: '2', key: 'b' },
    ]);
    const seen: number[] = [];
    cleanups.push(engine.watch('t', (events) => seen.push(...events.map((e) => e.seq))));
    const head = await engine.head('t');
    // The keys expire: an append would first delete them, a write Redis allows over maxmemory.
    c.advance(5_000);
    await admin.config('SET', 'maxmemory', '1');

    const refusals: [string, { data: string; key?: string }[]][] = [
      ['t', [{ data: '3', key: 'a' }]],
      ['t', [{ data: '4' }]],
      ['new', [{ data: '5' }]],
    ];
    for (const [topic, events] of refusals) {
      const err: unknown = await engine.append(topic, events).catch((e: unknown) => e);
      expect([topic, (err as { code?: string }).code]).toEqual([topic, 'insufficient_storage']);
    }
    expect((await engine.read('t', 0, 10)).events.map((e) => e.seq)).toEqual([1, 2]);
    expect((await engine.read('t', 0, 10)).head).toEqual(head);
    expect(await engine.head('t')).toEqual(head);
    expect(await engine.seqAtTime('t', 0)).toBe(1);
    expect((await engine.listTopics()).map((h) => h.topic)).toEqual(['t']);
    expect(await engine.head('new')).toBeNull();

    // An operator raises the limit: the next append goes in, and its key was never taken.
    await admin.config('SET', 'maxmemory', '0');
    const [stored] = await engine.append('t', [{ data: '6', key: 'a' }]);
    expect([stored?.event.seq, stored?.duplicate]).toEqual([3, false]);
    await waitFor(() => seen.length > 0);
    expect(seen).toEqual([3]);
  });

  it('warns at start when Redis would evict keys at maxmemory instead of refusing writes', async () => {
    const r = await OwnRedis.create(['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru']);
    cleanups.push(() => r.destroy());
    const log = logLines();
    const engine = new RedisEngine({ url: r.url, prefix: 'evict', log: log.logger });
    cleanups.push(() => engine.close());
    await engine.ready(5_000);
    await waitFor(() => log.messages('Redis evicts keys').length > 0);
    expect(log.messages('Redis evicts keys')).toEqual([
      expect.stringMatching(/allkeys-lru.*noeviction/),
    ]);
  });
});
