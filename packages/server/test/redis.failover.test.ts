import net from 'node:net';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { useCleanups } from '@rill/testkit';
import { RedisEngine, type RedisEngineOptions } from '../src/engine/redis/engine.js';
import { APPEND } from '../src/engine/redis/scripts.js';
import { RillError } from '../src/model/errors.js';
import type { RillEvent } from '../src/model/event.js';
import { OwnRedis, SHARED_REDIS_URL, dropPrefix, uniquePrefix } from '@rill/testkit/redis';

/** Collects a watch; `until` resolves once `pred` holds (checked on every delivery). */
function collect(engine: RedisEngine, topic: string) {
  const items: RillEvent[] = [];
  const waiters = new Set<() => void>();
  const stop = engine.watch(topic, (evs) => {
    items.push(...evs);
    for (const w of [...waiters]) w();
  });
  const until = (pred: (items: RillEvent[]) => boolean, ms = 15_000): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!pred(items)) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out; got seqs ${items.map((e) => e.seq).join(',')}`));
      }, ms);
      waiters.add(check);
      check();
    });
  return { items, until, stop };
}

/** A TCP proxy whose existing connections can be frozen: open, but nothing goes through. */
async function freezableProxy(target: number) {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const frozen: net.Socket[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    /** Existing connections stop forwarding in both directions but stay open. */
    freeze(): void {
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
        frozen.push(a, b);
      }
      pairs.clear();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of frozen) s.destroy();
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        server.close(() => r());
      }),
  };
}

describe('redis engine: failures', () => {
  const { cleanups } = useCleanups();

  async function engine(opts: RedisEngineOptions): Promise<RedisEngine> {
    const e = new RedisEngine(opts);
    cleanups.push(() => e.close());
    await e.ready(5_000);
    return e;
  }

  it('repairs a lost pub/sub message from the stream before delivering later events', async () => {
    const prefix = uniquePrefix();
    cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
    const e = await engine({ url: SHARED_REDIS_URL, prefix });
    const t = 'lost.msg';
    await e.append(t, [{ data: '1' }]);
    const w = collect(e, t);
    await e.append(t, [{ data: '2' }]);
    await w.until((xs) => xs.some((x) => x.seq === 2));
    // Seq 3 is appended by the real script, but its message goes to a channel nobody hears.
    const raw = new Redis(SHARED_REDIS_URL);
    cleanups.push(async () => raw.disconnect());
    const base = `${prefix}:{${t}}`;
    await raw.eval(
      APPEND,
      6,
      `${base}:m`,
      `${base}:s`,
      `${base}:k`,
      `${base}:x`,
      `${prefix}:topics`,
      `${prefix}:new`,
      t,
      String(Date.now()),
      '60000',
      '0',
      '0',
      'unusedEpoch0',
      'nobody-listens',
      'nobody-listens',
      '65536',
      '0',
      '1',
      // One event: type, key, data, trace context.
      '',
      '',
      '3',
      '',
    );
    await e.append(t, [{ data: '4' }, { data: '5' }]);
    await w.until((xs) => xs.some((x) => x.seq === 5));
    const seqs = w.items.map((x) => x.seq);
    expect(seqs.slice(seqs.indexOf(2))).toEqual([2, 3, 4, 5]);
    expect(w.items.find((x) => x.seq === 3)?.data).toBe('3');
  });

  it('starts a new epoch when the stream was deleted, and the watch follows it', async () => {
    const prefix = uniquePrefix();
    cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
    const e = await engine({ url: SHARED_REDIS_URL, prefix });
    const t = 'wiped';
    const [a] = await e.append(t, [{ data: '1' }, { data: '2' }]);
    const w = collect(e, t);
    const raw = new Redis(SHARED_REDIS_URL);
    cleanups.push(async () => raw.disconnect());
    await raw.del(`${prefix}:{${t}}:s`);
    const [b] = await e.append(t, [{ data: '"new"' }]);
    expect(b?.event.seq).toBe(1);
    expect(b?.event.epoch).not.toBe(a?.event.epoch);
    expect(await e.head(t)).toMatchObject({ epoch: b?.event.epoch, firstSeq: 1, lastSeq: 1 });
    await w.until((xs) => xs.some((x) => x.epoch === b?.event.epoch));
    expect(w.items.at(-1)).toMatchObject({ seq: 1, data: '"new"', epoch: b?.event.epoch });
  });

  it('replaces a pub/sub connection that is open but silent (liveness probe)', async () => {
    const prefix = uniquePrefix();
    cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
    const port = Number(new URL(SHARED_REDIS_URL).port || 6379);
    const proxy = await freezableProxy(port);
    cleanups.push(() => proxy.close());
    const writer = await engine({ url: SHARED_REDIS_URL, prefix });
    const reader = await engine({
      url: `redis://127.0.0.1:${proxy.port}`,
      prefix,
      probeIntervalMs: 200,
      probeTimeoutMs: 300,
      commandTimeoutMs: 500,
    });
    const t = 'silent';
    const w = collect(reader, t);
    // Appended through the reader's own connection, so after its watch started: once delivered,
    // the subscription is in place.
    await reader.append(t, [{ data: '1' }]);
    await w.until((xs) => xs.length === 1);
    proxy.freeze();
    await writer.append(t, [{ data: '2' }]);
    await writer.append(t, [{ data: '3' }]);
    // Only a replaced connection can bring these: the frozen one stays open and silent.
    await w.until((xs) => xs.some((x) => x.seq === 3), 10_000);
    expect(w.items.map((x) => x.seq)).toEqual([1, 2, 3]);
  });

  it('fails appends with engine_unavailable while Redis is down, and loses no acknowledged event across a SIGKILL and restart (AOF, fsync always)', async () => {
    const redis = await OwnRedis.create();
    cleanups.push(() => redis.destroy());
    const prefix = 'failover';
    const writer = await engine({ url: redis.url, prefix, connectWaitMs: 100 });
    const reader = await engine({ url: redis.url, prefix, probeIntervalMs: 250 });
    const t = 'orders';
    const w = collect(reader, t);

    const TOTAL = 600;
    const KILL_AT = 200;
    const acked = new Map<number, number>(); // i -> seq
    const failures: unknown[] = [];
    let next = 0;
    let killed: Promise<void> | undefined;
    let restarted: Promise<void> | undefined;
    const publisher = async (): Promise<void> => {
      for (;;) {
        const i = next++;
        if (i >= TOTAL) return;
        for (;;) {
          try {
            const [r] = await writer.append(t, [{ key: `k${i}`, data: String(i) }]);
            acked.set(i, r!.event.seq);
            break;
          } catch (err) {
            failures.push(err);
            if (failures.length >= 5 && killed !== undefined) {
              restarted ??= killed.then(() => redis.start());
            }
            await new Promise((r) => setTimeout(r, 20));
          }
        }
        if (acked.size >= KILL_AT && killed === undefined) killed = redis.stop('SIGKILL');
      }
    };
    await Promise.all([publisher(), publisher(), publisher(), publisher()]);
    await restarted;

    expect(killed).toBeDefined();
    expect(failures.length).toBeGreaterThanOrEqual(5);
    for (const f of failures) {
      expect(f).toBeInstanceOf(RillError);
      expect((f as RillError).code).toBe('engine_unavailable');
    }
    // Every acknowledged event is in the log, once, under its seq.
    const log: RillEvent[] = [];
    for (;;) {
      const page = await reader.read(t, log.at(-1)?.seq ?? 0, 10_000);
      if (page.events.length === 0) break;
      log.push(...page.events);
    }
    expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
    expect(log).toHaveLength(TOTAL);
    const bySeq = new Map(log.map((e) => [e.seq, e.data]));
    const lost = [...acked].filter(([i, seq]) => bySeq.get(seq) !== String(i));
    expect(lost).toEqual([]);
    // The watch saw every event exactly once, in order, across the outage.
    await w.until((xs) => xs.some((x) => x.seq === TOTAL));
    const seqs = w.items.map((x) => x.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(new Set(w.items.map((x) => x.epoch)).size).toBe(1);
  }, 60_000);
});
