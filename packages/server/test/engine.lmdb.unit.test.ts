import { open } from 'lmdb';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '@rill/testkit';
import { LmdbEngine } from '../src/engine/lmdb.js';
import { engineContract, readAll } from './engine.contract.js';

function seqs(events: readonly { seq: number }[]): number[] {
  return events.map((e) => e.seq);
}

engineContract(
  'lmdb',
  async (opts) => {
    const { path, remove } = tempDir('rill-lmdb-');
    return { engine: new LmdbEngine({ ...opts, path }), cleanup: async () => remove() };
  },
  { byteRetention: 'exact', storeBudget: true },
);

// The same contract with the engine in the mode the workers of `rill serve --workers` use.
engineContract(
  'lmdb shared by workers',
  async (opts) => {
    const { path, remove } = tempDir('rill-lmdb-');
    const engine = new LmdbEngine({ ...opts, path, peers: { announce: () => undefined } });
    return { engine, cleanup: async () => remove() };
  },
  { byteRetention: 'exact', storeBudget: true },
);

describe('lmdb engines sharing a directory (workers)', () => {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  /** Two engines on one directory, each telling the other of its commits as workers do. */
  function pair(options: { maxStoreBytes?: number } = {}): [LmdbEngine, LmdbEngine, number[]] {
    const { path, remove } = tempDir('rill-lmdb-');
    cleanups.push(remove);
    const announced: number[] = [];
    const engines: LmdbEngine[] = [];
    for (let k = 0; k < 2; k++) {
      engines.push(
        new LmdbEngine({
          ...options,
          path,
          peers: {
            announce: (notices) => {
              announced.push(notices.length);
              engines[1 - k]!.peerAppended(notices);
            },
          },
        }),
      );
    }
    cleanups.push(async () => {
      for (const e of engines) await e.close();
    });
    return [engines[0]!, engines[1]!, announced];
  }

  it("feeds one engine's watchers with the other's appends, in seq order, one notice per batch", async () => {
    const [a, b, announced] = pair();
    const seen: number[] = [];
    b.watch('t', (events) => seen.push(...events.map((e) => e.seq)));
    await Promise.all([
      a.append('t', [{ data: '1' }, { data: '2' }]),
      a.append('t', [{ data: '3' }]),
      b.append('t', [{ data: '4' }]),
    ]);
    await a.append('t', [{ data: '5' }]);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    // Batches, not appends: fewer notices than appends.
    expect(announced.reduce((x, y) => x + y, 0)).toBeLessThan(4);
  });

  it('keeps one store budget over both', async () => {
    const [a, b] = pair({ maxStoreBytes: 1_000 });
    const hundreds = (n: number): { data: string }[] =>
      Array.from({ length: n }, () => ({ data: JSON.stringify(''.padEnd(98, '.')) }));
    await a.append('a', hundreds(6));
    const err: unknown = await b.append('b', hundreds(5)).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('insufficient_storage');
    await b.append('b', hundreds(4));
  });
});

describe('lmdb engine on disk', () => {
  const dirs: Array<() => void> = [];
  const engines: LmdbEngine[] = [];

  afterEach(async () => {
    for (const e of engines.splice(0)) await e.close();
    for (const remove of dirs.splice(0)) remove();
  });

  async function openAt(path: string, now?: () => number): Promise<LmdbEngine> {
    const engine = new LmdbEngine({ path, idempotencyWindowMs: 60_000, ...(now ? { now } : {}) });
    engines.push(engine);
    return engine;
  }

  it('keeps events, epoch and idempotency keys across close and reopen', async () => {
    const { path, remove } = tempDir('rill-lmdb-');
    dirs.push(remove);
    let t = 1_000_000;
    const now = (): number => t;
    const first = await openAt(path, now);
    await first.append('orders', [
      { data: '{"n":1}', key: 'a', type: 'order.created' },
      { data: '{"n":2}' },
    ]);
    await first.append('orders.eu', [{ data: '{"n":1}' }]);
    await first.append('orders', [{ data: '{"n":3}', key: 'b' }]);
    const head = await first.head('orders');
    const events = await readAll(first, 'orders');
    await first.close();

    t = 1_030_000;
    const second = await openAt(path, now);
    expect(await second.head('orders')).toEqual(head);
    expect(await readAll(second, 'orders')).toEqual(events);
    expect((await second.listTopics()).map((h) => h.topic)).toEqual(['orders', 'orders.eu']);
    const [dup, fresh] = await second.append('orders', [
      { data: '{"n":3}', key: 'b' },
      { data: '{"n":4}', key: 'c' },
    ]);
    expect([dup?.duplicate, dup?.event.seq, dup?.event.time]).toEqual([true, 3, 1_000_000]);
    expect([fresh?.duplicate, fresh?.event.seq, fresh?.event.epoch]).toEqual([
      false,
      4,
      head?.epoch,
    ]);
    await second.close();

    t = 1_100_000; // past the 60 s window: the key appends anew
    const third = await openAt(path, now);
    const [again] = await third.append('orders', [{ data: '{"n":1}', key: 'a' }]);
    expect([again?.duplicate, again?.event.seq]).toEqual([false, 5]);
  });

  it('stores data with line breaks (JSON text from the engine API) unchanged', async () => {
    const { path, remove } = tempDir('rill-lmdb-');
    dirs.push(remove);
    const first = await openAt(path);
    const data = ['{"n":1}', '{\n  "n": 2\n}', '[\r\n3]', '"\\n"'];
    await first.append(
      'lines',
      data.map((d) => ({ data: d })),
    );
    await first.append('lines', [{ data: '{"n":5}' }, { data: '{"n":6}' }]);
    await first.close();
    const second = await openAt(path);
    expect((await readAll(second, 'lines')).map((e) => e.data)).toEqual([
      ...data,
      '{"n":5}',
      '{"n":6}',
    ]);
    expect((await second.read('lines', 2, 2)).events.map((e) => e.data)).toEqual(data.slice(2));
  });

  /** `n` events of 100 bytes each. */
  const hundreds = (from: number, n: number): { data: string }[] =>
    Array.from({ length: n }, (_, i) => ({ data: JSON.stringify(`${from + i}`.padEnd(98, '.')) }));

  it('keeps counting the store budget across close and reopen', async () => {
    const { path, remove } = tempDir('rill-lmdb-');
    dirs.push(remove);
    const first = new LmdbEngine({ path, maxStoreBytes: 1_000 });
    engines.push(first);
    await first.append('a', hundreds(0, 5));
    await first.append('b', hundreds(0, 4));
    await first.close();
    const second = new LmdbEngine({ path, maxStoreBytes: 1_000 });
    engines.push(second);
    const err: unknown = await second.append('a', hundreds(5, 2)).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('insufficient_storage');
    expect((await second.append('a', hundreds(5, 1)))[0]?.event.seq).toBe(6);
  });

  it('counts the events of a database from before byte offsets as 0 bytes', async () => {
    const { path, remove } = tempDir('rill-lmdb-');
    dirs.push(remove);
    const before = new LmdbEngine({ path });
    engines.push(before);
    await before.append('old', hundreds(0, 3));
    await before.append('old', hundreds(3, 3));
    await before.close();
    // What an older version wrote: no offsets in topics and blocks.
    const raw = open({ path, maxDbs: 8 });
    const topics = raw.openDB<Record<string, unknown>, string>('topics', {});
    const blocks = raw.openDB<Record<string, unknown>, [string, number]>('blocks', {});
    await raw.transaction(() => {
      for (const { key, value } of topics.getRange({})) {
        const rest = { ...value };
        delete rest.o;
        delete rest.fo;
        delete rest.ro;
        void topics.put(key, rest);
      }
      for (const { key, value } of blocks.getRange({})) {
        const rest = { ...value };
        delete rest.o;
        void blocks.put(key, rest);
      }
    });
    await raw.close();

    const after = new LmdbEngine({
      path,
      maxStoreBytes: 450,
      retention: { maxEvents: 0, maxAgeMs: 0, maxBytes: 300, rules: [] },
    });
    engines.push(after);
    expect(seqs(await readAll(after, 'old'))).toEqual([1, 2, 3, 4, 5, 6]);
    await after.append('old', hundreds(6, 2));
    expect(seqs(await readAll(after, 'old'))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    await after.append('old', hundreds(8, 2));
    // 400 bytes counted: the old events and the first new one go (its block, shared with seq 8,
    // stays stored, and the store counts it: 400 of 450 bytes).
    expect(seqs(await readAll(after, 'old'))).toEqual([8, 9, 10]);
    const err: unknown = await after.append('new', hundreds(0, 1)).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('insufficient_storage');
  });

  it('refuses a directory written in the older one-record-per-event format', async () => {
    const { path, remove } = tempDir('rill-lmdb-');
    dirs.push(remove);
    const old = open({ path, maxDbs: 8 });
    await old.openDB('events', {}).put(['orders', 1], { t: 1, d: '{"n":1}' });
    await old.close();
    expect(() => new LmdbEngine({ path })).toThrow(
      expect.objectContaining({
        code: 'engine_unavailable',
        message: expect.stringMatching(/older Rill/),
      }),
    );
  });
});
