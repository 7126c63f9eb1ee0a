import { afterAll, describe, expect, it } from 'vitest';
import { check, publishBatch, Subscriber, type Transport } from './cluster-harness.js';
import { spawnServer, type ChildServer } from '@rill/testkit';
import { natsBackend, redisBackend } from '@rill/testkit/brokers';

const NODES = 3;
const SUBSCRIBERS = 300;
const TOPICS = 10;
const EVENTS = 30_000;
const BATCH = 50;
const PUBLISHERS = 6;
/** The node SIGKILLed once this many events are acknowledged. */
const KILL_AFTER = 10_000;

for (const backend of [redisBackend('rillcluster'), natsBackend('rc')])
  describe(`cluster: 3 rill serve --engine ${backend.engine} nodes`, () => {
    const nodes: ChildServer[] = [];
    const subs: Subscriber[] = [];

    afterAll(async () => {
      for (const s of subs) s.close();
      for (const n of nodes)
        if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGTERM');
      await Promise.all(nodes.map((n) => n.exited));
      await backend.cleanup();
    });

    it('delivers 30,000 events published round-robin to 300 SSE/WebSocket/NDJSON subscribers exactly once and in order, across a node SIGKILLed mid-stream', async () => {
      const t0 = Date.now();
      for (let n = 0; n < NODES; n++) {
        nodes.push(
          await spawnServer(
            ['--engine', backend.engine, '--port', '0', ...backend.args],
            backend.env,
          ),
        );
      }
      const urls = nodes.map((n) => n.url);
      const dead = new Set<number>();
      const transports: Transport[] = ['sse', 'ws', 'ndjson'];
      const topics = Array.from({ length: TOPICS }, (_, k) => `cluster.t${k}`);
      for (let i = 0; i < SUBSCRIBERS; i++) {
        subs.push(
          new Subscriber(
            i,
            transports[Math.floor(i / NODES) % 3]!,
            topics[i % TOPICS]!,
            urls,
            i % NODES,
            dead,
          ),
        );
      }
      await Promise.all(subs.map((s) => s.start()));
      const tSubscribed = Date.now();

      // Requests of BATCH events of one topic, sent round-robin to the nodes by PUBLISHERS workers;
      // a failed request goes to the next node with the same keys.
      const requests: { topic: number; items: number[] }[] = [];
      for (let i = 0; i < EVENTS; i += BATCH * TOPICS) {
        for (let k = 0; k < TOPICS; k++) {
          const items: number[] = [];
          for (let j = i + k; j < Math.min(EVENTS, i + BATCH * TOPICS); j += TOPICS) items.push(j);
          requests.push({ topic: k, items });
        }
      }
      const acked = new Map<number, { topic: number; seq: number }>();
      let nextRequest = 0;
      let rr = 0;
      let retries = 0;
      let killedAt = 0;
      const worker = async (): Promise<void> => {
        for (;;) {
          const r = requests[nextRequest++];
          if (r === undefined) return;
          for (;;) {
            const node = rr++ % NODES;
            if (dead.has(node)) continue;
            try {
              const res = await publishBatch(urls[node]!, topics[r.topic]!, r.items);
              for (const x of res) acked.set(x.i, { topic: r.topic, seq: x.seq });
              break;
            } catch {
              retries++;
            }
          }
          if (killedAt === 0 && acked.size >= KILL_AFTER) {
            killedAt = Date.now();
            dead.add(0);
            nodes[0]!.proc.kill('SIGKILL');
          }
        }
      };
      await Promise.all(Array.from({ length: PUBLISHERS }, worker));
      const tPublished = Date.now();
      expect(await nodes[0]!.exited).toBe('SIGKILL');

      // Every event acknowledged once per key; per topic, seqs 1..3000 with no hole.
      expect(acked.size).toBe(EVENTS);
      const perTopic = EVENTS / TOPICS;
      const expected = topics.map(() => new Map<number, number>());
      for (const [i, { topic, seq }] of acked) expected[topic]!.set(seq, i);
      for (const m of expected)
        expect([...m.keys()].sort((a, b) => a - b)).toEqual(
          Array.from({ length: perTopic }, (_, j) => j + 1),
        );

      await Promise.all(subs.map((s) => s.until(perTopic)));
      const tDelivered = Date.now();
      const totals = { lost: 0, duplicated: 0, reordered: 0, wrong: 0, resets: 0, errors: 0 };
      for (const s of subs) {
        const c = check(s, perTopic, expected[Number(s.topic.slice('cluster.t'.length))]!);
        totals.lost += c.lost;
        totals.duplicated += c.duplicated;
        totals.reordered += c.reordered;
        totals.wrong += c.wrong;
        totals.resets += s.resets;
        totals.errors += s.errors.filter((e) => !e.includes('shutting_down')).length;
      }
      const moved = subs.filter((s) => s.reconnects > 0);
      console.log(
        `cluster(${backend.engine}): nodes+subscribers ${tSubscribed - t0} ms, publish ${EVENTS} events ${tPublished - tSubscribed} ms ` +
          `(${Math.round(EVENTS / ((tPublished - tSubscribed) / 1000))}/s, ${retries} retried requests, kill at ${killedAt - tSubscribed} ms), ` +
          `all delivered ${tDelivered - tSubscribed} ms; ${moved.length} subscribers moved; ${JSON.stringify(totals)}`,
      );
      expect(totals).toEqual({
        lost: 0,
        duplicated: 0,
        reordered: 0,
        wrong: 0,
        resets: 0,
        errors: 0,
      });
      // The killed node's subscribers (a third) moved to the others and resumed there.
      expect(moved.length).toBeGreaterThanOrEqual(SUBSCRIBERS / NODES);
      expect(new Set(moved.map((s) => s.transport))).toEqual(new Set(['sse', 'ws', 'ndjson']));
      for (const s of moved) expect(s.nodeIndex).not.toBe(0);
    }, 150_000);
  });
