import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import type { RillConfigInput } from '../src/config.js';
import { openSse, startServer, type SseStream, useCleanups } from '@rill/testkit';
import { OwnNats } from '@rill/testkit/nats';
import { OwnRedis } from '@rill/testkit/redis';

/** A private broker this test may kill, the server config that uses it, and how to wipe a topic. */
interface Broker {
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  destroy(): Promise<void>;
  config: RillConfigInput;
  /** Removes the topic's log behind the server's back (FLUSHALL, a deleted stream). */
  wipe(topic: string): Promise<void>;
  /** What `wipe` does, for the test name. */
  wipeName: string;
}

const brokers: { name: string; create: (prefix: string) => Promise<Broker> }[] = [
  {
    name: 'redis (appendonly yes, appendfsync always)',
    async create(prefix) {
      const r = await OwnRedis.create();
      return Object.assign(r, {
        config: { engine: 'redis', redis: { url: r.url, prefix } } as RillConfigInput,
        wipeName: 'FLUSHALL',
        async wipe() {
          const admin = await r.client();
          try {
            await admin.flushall();
          } finally {
            admin.disconnect();
          }
        },
      });
    },
  },
  {
    name: 'nats (JetStream file storage)',
    async create(prefix) {
      const n = await OwnNats.create();
      return Object.assign(n, {
        config: { engine: 'nats', nats: { url: n.url, prefix } } as RillConfigInput,
        wipeName: "deleting the topic's JetStream stream",
        async wipe(topic: string) {
          const nc = await connect({ servers: n.url });
          try {
            // The engine's stream name: `<prefix>_T_<topic>` with `.` written `~d`.
            const jsm = await jetstreamManager(nc);
            await jsm.streams.delete(`${prefix}_T_${topic.replaceAll('.', '~d')}`);
          } finally {
            await nc.close();
          }
        },
      });
    },
  },
];

/** One POST; the status, the error code and Retry-After, or the seq. */
async function post(url: string, topic: string, i: number) {
  const res = await fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': `k${i}` },
    body: JSON.stringify({ data: { i } }),
  });
  const json = (await res.json()) as {
    events?: { seq: number }[];
    error?: { code: string };
  };
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    code: json.error?.code,
    seq: json.events?.[0]?.seq,
  };
}

function eventSeqs(s: SseStream): number[] {
  return s.events().map((e) => e.seq);
}

describe('shared engines behind the HTTP API: broker restart and wipe', () => {
  const { cleanups } = useCleanups();

  for (const b of brokers) {
    it(`answers 503 engine_unavailable with Retry-After while the broker is down, keeps streams open, and delivers every acknowledged event exactly once after a SIGKILL and restart: ${b.name}`, async () => {
      const redis = await b.create('http');
      cleanups.push(() => redis.destroy());
      const { url, close } = await startServer(redis.config);
      cleanups.push(close);
      const topic = 'restart.t';
      const first = await post(url, topic, 0);
      expect(first.status).toBe(201);
      const sse = await openSse(`${url}/v1/topics/${topic}/stream?from=earliest`);
      cleanups.push(() => sse.close());
      await sse.until(() => eventSeqs(sse).includes(1));

      const TOTAL = 300;
      const acked = new Map<number, number>();
      acked.set(0, first.seq!);
      const refused: { status: number; code?: string; retryAfter: string | null }[] = [];
      let restarted: Promise<void> | undefined;
      let late: SseStream | undefined;
      for (let i = 1; i < TOTAL; i++) {
        if (i === 100) await redis.stop('SIGKILL');
        for (;;) {
          const r = await post(url, topic, i);
          if (r.status === 201) {
            acked.set(i, r.seq!);
            break;
          }
          refused.push(r);
          if (refused.length === 1) {
            // A stream opened while the broker is down: its catch-up fails until the broker is
            // back, and it must wait for it rather than end.
            late = await openSse(`${url}/v1/topics/${topic}/stream?from=earliest`);
            cleanups.push(() => late?.close());
          }
          if (refused.length === 3) restarted = redis.start();
          if (restarted) await restarted;
        }
      }
      expect(refused.length).toBeGreaterThanOrEqual(3);
      for (const r of refused) {
        expect(r).toEqual({
          status: 503,
          code: 'engine_unavailable',
          retryAfter: '1',
          seq: undefined,
        });
      }
      const lastSeq = Math.max(...acked.values());
      expect(lastSeq).toBe(TOTAL);
      await sse.until(() => eventSeqs(sse).includes(lastSeq), 20_000);
      // The same connection carried everything: never ended, no error frame, each event once.
      expect(sse.res.closed).toBe(false);
      expect(sse.frames.filter((f) => f.event === 'error' || f.event === 'reset')).toEqual([]);
      expect(eventSeqs(sse)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1));
      const data = new Map(sse.events().map((e) => [e.seq, (e.data as { i: number }).i]));
      for (const [i, seq] of acked) expect(data.get(seq)).toBe(i);
      expect(late).toBeDefined();
      await late!.until(() => eventSeqs(late!).includes(lastSeq), 20_000);
      expect(late!.res.closed).toBe(false);
      expect(late!.frames.filter((f) => f.event === 'error' || f.event === 'reset')).toEqual([]);
      expect(eventSeqs(late!)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1));
    }, 60_000);
  }

  for (const { name, create } of brokers) {
    it(`${name}: tells subscribers of the epoch change instead of replaying silently`, async () => {
      const broker = await create('wipe');
      cleanups.push(() => broker.destroy());
      const { url, close } = await startServer(broker.config);
      cleanups.push(close);
      const topic = 'wiped.t';
      for (let i = 0; i < 3; i++) expect((await post(url, topic, i)).status).toBe(201);
      const sse = await openSse(`${url}/v1/topics/${topic}/stream?from=earliest`);
      cleanups.push(() => sse.close());
      await sse.until(() => eventSeqs(sse).includes(3));
      const oldEpoch = (sse.events()[0]!.id as string).split(':').at(-2);

      await broker.wipe(topic);
      for (let i = 10; i < 12; i++) expect((await post(url, topic, i)).status).toBe(201);
      await sse.until((frames) => frames.filter((f) => f.event !== 'reset').length >= 5);

      const reset = sse.frames.find((f) => f.event === 'reset');
      expect(reset, `a reset notice after ${broker.wipeName}`).toBeDefined();
      const notice = JSON.parse(reset!.data!) as {
        reason: string;
        epoch: string;
        cursorEpoch: string;
      };
      expect(notice).toMatchObject({ reason: 'epoch', cursorEpoch: oldEpoch });
      expect(notice.epoch).not.toBe(oldEpoch);
      // After the notice: the new log from its start, seq 1 and 2, and nothing of the old one again.
      const after = sse.frames.slice(sse.frames.indexOf(reset!) + 1);
      expect(after.map((f) => JSON.parse(f.data!) as { seq: number; data: { i: number } })).toEqual(
        [
          expect.objectContaining({ seq: 1, data: { i: 10 } }),
          expect.objectContaining({ seq: 2, data: { i: 11 } }),
        ],
      );
      expect(sse.res.closed).toBe(false);
    }, 30_000);
  }
});
