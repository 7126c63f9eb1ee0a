import { randomBytes } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { describe, expect, it } from 'vitest';
import { useCleanups } from '@rill/testkit';
import type { AppendResult, Engine } from '../src/engine/engine.js';
import { NatsEngine } from '../src/engine/nats/engine.js';
import { RedisEngine } from '../src/engine/redis/engine.js';
import type { RillEvent } from '../src/model/event.js';
import { SHARED_REDIS_URL, dropPrefix, uniquePrefix } from '@rill/testkit/redis';

const NATS_URL = process.env.RILL_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

interface Backend {
  name: string;
  /** `nodes` engines over one namespace, and how to remove it. */
  open(nodes: number): Promise<{ engines: Engine[]; cleanup: () => Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'redis',
    async open(nodes) {
      const prefix = uniquePrefix();
      const engines = Array.from(
        { length: nodes },
        () => new RedisEngine({ url: SHARED_REDIS_URL, prefix }),
      );
      await Promise.all(engines.map((e) => e.ready(5_000)));
      return { engines, cleanup: () => dropPrefix(SHARED_REDIS_URL, prefix) };
    },
  },
  {
    name: 'nats',
    async open(nodes) {
      const prefix = `rt${randomBytes(5).toString('hex')}`;
      const engines = Array.from(
        { length: nodes },
        () => new NatsEngine({ url: NATS_URL, prefix }),
      );
      await Promise.all(engines.map((e) => e.ready(5_000)));
      return {
        engines,
        cleanup: async () => {
          const nc = await connect({ servers: NATS_URL });
          const jsm = await jetstreamManager(nc);
          for await (const n of jsm.streams.names()) {
            if (n.startsWith(`${prefix}_`)) await jsm.streams.delete(n);
          }
          await nc.close();
        },
      };
    },
  },
];

for (const backend of backends) {
  describe(`${backend.name} engine shared by several nodes`, () => {
    const { cleanups } = useCleanups();

    it('keeps seqs contiguous, batches consecutive and keys unique across 3 nodes appending at once; every node watches the same log', async () => {
      const { engines, cleanup } = await backend.open(3);
      cleanups.push(cleanup);
      for (const e of engines) cleanups.push(() => e.close());
      const t = 'shared.orders';
      // Every node watches from before the first append.
      await engines[0]!.append(t, [{ data: '"start"' }]);
      const seen: RillEvent[][] = engines.map(() => []);
      const stops = engines.map((e, n) => e.watch(t, (evs) => seen[n]!.push(...evs)));
      cleanups.push(async () => stops.forEach((s) => s()));

      const ROUNDS = 30;
      const all: AppendResult[][] = [];
      await Promise.all(
        engines.map(async (e, n) => {
          for (let r = 0; r < ROUNDS; r++) {
            const size = 1 + ((r + n) % 3);
            // Keys k0..k(ROUNDS-1) are used by every node: each must be stored once.
            const batch = Array.from({ length: size }, (_, i) =>
              i === 0
                ? { key: `k${r}`, data: `"k${r}"` }
                : { data: JSON.stringify(`${n}.${r}.${i}`) },
            );
            all.push(await e.append(t, batch));
          }
        }),
      );
      const flat = all.flat();
      const fresh = flat.filter((x) => !x.duplicate).map((x) => x.event.seq);
      const total = fresh.length + 1;
      expect([...fresh].sort((a, b) => a - b)).toEqual(
        Array.from({ length: total - 1 }, (_, i) => i + 2),
      );
      for (const batch of all) {
        const s = batch.filter((x) => !x.duplicate).map((x) => x.event.seq);
        expect(s).toEqual(s.map((_, i) => s[0]! + i));
      }
      const keySeq = new Map<string, number>();
      for (const x of flat.filter((y) => y.event.key !== undefined)) {
        const k = x.event.key!;
        if (keySeq.has(k)) expect(x.event.seq).toBe(keySeq.get(k));
        else keySeq.set(k, x.event.seq);
      }
      expect(flat.filter((x) => x.event.key !== undefined && !x.duplicate)).toHaveLength(ROUNDS);

      const deadline = Date.now() + 15_000;
      while (seen.some((s) => s.at(-1)?.seq !== total) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const log = (await engines[2]!.read(t, 0, 10_000)).events;
      expect(log.map((e) => e.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      for (const s of seen) {
        const seqs = s.map((e) => e.seq);
        expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
        expect(seqs.at(-1)).toBe(total);
        expect(s.map((e) => e.data)).toEqual(log.slice(seqs[0]! - 1).map((e) => e.data));
      }
    }, 30_000);

    it('a node that starts later knows the idempotency keys of the window', async () => {
      const { engines, cleanup } = await backend.open(2);
      cleanups.push(cleanup);
      for (const e of engines) cleanups.push(() => e.close());
      const [a, b] = engines as [Engine, Engine];
      const t = 'shared.keys';
      const first = await a.append(
        t,
        Array.from({ length: 30 }, (_, i) => ({ key: `k${i}`, data: String(i) })),
      );
      await a.append(t, [{ data: '"unkeyed"' }]);
      // b appends to this topic for the first time: it must learn a's keys from the log.
      const again = await b.append(t, [
        { key: 'k7', data: '7' },
        { key: 'k29', data: '29' },
        { key: 'new', data: '"new"' },
      ]);
      expect(again.map((r) => [r.event.seq, r.duplicate])).toEqual([
        [first[7]!.event.seq, true],
        [first[29]!.event.seq, true],
        [32, false],
      ]);
      const [back] = await a.append(t, [{ key: 'new', data: '"new"' }]);
      expect([back?.event.seq, back?.duplicate]).toEqual([32, true]);
    });
  });
}
