import { open } from 'lmdb';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '@rill/testkit';
import { LmdbEngine } from '../src/engine/lmdb.js';
import { engineContract, readAll } from './engine.contract.js';

engineContract(
  'lmdb',
  async (opts) => {
    const { path, remove } = tempDir('rill-lmdb-');
    return { engine: new LmdbEngine({ ...opts, path }), cleanup: async () => remove() };
  },
  { byteRetention: 'exact', storeBudget: true },
);

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
