#!/usr/bin/env node
// Append throughput of each engine, from the server's build (npm run build first; its engines
// modules, as the public API exports neither the Redis nor the NATS engine):
//   node packages/bench/scripts/bench-engines.mjs [engine ...]
// Engines: memory lmdb redis nats (redis/nats use RILL_REDIS_URL / RILL_NATS_URL or the defaults,
// under a fresh prefix that is deleted afterwards). Each engine appends N single events from one
// caller (latency), from 64 concurrent callers (throughput), and N events in batches of 100.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { LmdbEngine } from '../../server/dist/engine/lmdb.js';
import { MemoryEngine } from '../../server/dist/engine/memory.js';
import { NatsEngine } from '../../server/dist/engine/nats/engine.js';
import { RedisEngine } from '../../server/dist/engine/redis/engine.js';

const N = Number(process.env.N ?? 5000);
const wanted = process.argv.slice(2);
const tag = randomBytes(4).toString('hex');

async function open(name) {
  switch (name) {
    case 'memory':
      return { engine: new MemoryEngine(), done: async () => {} };
    case 'lmdb': {
      const dir = mkdtempSync(join(tmpdir(), 'rill-bench-'));
      return {
        engine: new LmdbEngine({ path: dir }),
        done: async () => rmSync(dir, { recursive: true }),
      };
    }
    case 'redis': {
      const engine = new RedisEngine({ url: process.env.RILL_REDIS_URL, prefix: `bench:${tag}` });
      await engine.ready();
      return {
        engine,
        done: async () => {
          const { Redis } = await import('ioredis');
          const r = new Redis(process.env.RILL_REDIS_URL ?? 'redis://127.0.0.1:6379');
          let cursor = '0';
          do {
            const [next, keys] = await r.scan(cursor, 'MATCH', `bench:${tag}:*`, 'COUNT', 1000);
            cursor = next;
            if (keys.length) await r.del(...keys);
          } while (cursor !== '0');
          r.disconnect();
        },
      };
    }
    case 'nats': {
      const engine = new NatsEngine({ url: process.env.RILL_NATS_URL, prefix: `bench${tag}` });
      await engine.ready();
      return {
        engine,
        done: async () => {
          const { connect } = await import('@nats-io/transport-node');
          const { jetstreamManager } = await import('@nats-io/jetstream');
          const nc = await connect({
            servers: process.env.RILL_NATS_URL ?? 'nats://127.0.0.1:4222',
          });
          const jsm = await jetstreamManager(nc);
          for await (const n of jsm.streams.names())
            if (n.startsWith(`bench${tag}_`)) await jsm.streams.delete(n);
          await nc.close();
        },
      };
    }
    default:
      throw new Error(`unknown engine ${name}`);
  }
}

const data = JSON.stringify({ price: 42.5, sym: 'BTC-USD', note: 'x'.repeat(64) });
const rate = (n, ms) => `${Math.round(n / (ms / 1000)).toLocaleString('en')} ev/s`;

for (const name of wanted.length ? wanted : ['memory', 'lmdb', 'redis', 'nats']) {
  const { engine, done } = await open(name);
  let t = performance.now();
  for (let i = 0; i < N / 5; i++) await engine.append('bench.seq', [{ data }]);
  const seqMs = performance.now() - t;
  t = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next++ < N) await engine.append('bench.conc', [{ data, key: `k${next}` }]);
    }),
  );
  const concMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < N; i += 100) {
    await engine.append(
      'bench.batch',
      Array.from({ length: 100 }, () => ({ data })),
    );
  }
  const batchMs = performance.now() - t;
  console.log(
    `${name.padEnd(6)} 1 caller: ${rate(N / 5, seqMs)} (${((seqMs / (N / 5)) * 1000).toFixed(0)} µs/append) | ` +
      `64 callers, keyed: ${rate(N, concMs)} | batches of 100: ${rate(N, batchMs)}`,
  );
  await engine.close();
  await done();
}
