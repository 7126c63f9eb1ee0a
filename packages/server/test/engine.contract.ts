import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { isEpoch } from '../src/model/cursor.js';
import {
  hasCoordination,
  type AppendResult,
  type Engine,
  type EngineOptions,
  type TopicSignal,
} from '../src/engine/engine.js';
import { RillError } from '../src/model/errors.js';
import type { EventInput, RillEvent } from '../src/model/event.js';

/** What a factory hands the suite: an engine, and how to remove what it left behind. */
export interface EngineUnderTest {
  engine: Engine;
  cleanup?: () => Promise<void>;
}

export type EngineFactory = (opts: EngineOptions) => Promise<EngineUnderTest>;

/** What an engine promises beyond the common contract (documented in docs/operations.md). */
export interface EngineTraits {
  /**
   * `exact`: `retention.maxBytes` keeps exactly the newest events that fit. `batches`: whole
   * appends are dropped once the topic is 10% over, so it keeps between `maxBytes` minus one
   * append and 110% of `maxBytes` plus one append.
   */
  byteRetention: 'exact' | 'batches';
  /** Whether the engine enforces `maxStoreBytes` (the broker engines leave it to the broker). */
  storeBudget: boolean;
}

/** Every event stored on `topic`, read page by page. */
export async function readAll(engine: Engine, topic: string): Promise<RillEvent[]> {
  const out: RillEvent[] = [];
  for (;;) {
    const page = await engine.read(topic, out.at(-1)?.seq ?? 0, 10_000);
    if (page.events.length === 0) return out;
    out.push(...page.events);
  }
}

/** How long the suite waits for a watched event before failing. */
const WAIT_MS = 5_000;

/** A clock the test moves by hand. */
class Clock {
  constructor(public t = 1_700_000_000_000) {}
  readonly now = (): number => this.t;
}

/** Collects what a watch delivers; `until(n)` waits for the n-th event, never by sleeping. */
interface Collector<T> {
  readonly items: T[];
  until(count: number, timeoutMs?: number): Promise<T[]>;
  stop(): void;
}

function collector<T>(
  subscribe: (push: (items: readonly T[]) => void) => () => void,
): Collector<T> {
  const items: T[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  const stop = subscribe((batch) => {
    items.push(...batch);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i] as (typeof waiters)[number];
      if (items.length >= w.count) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
  });
  return {
    items,
    stop,
    until(count, timeoutMs = WAIT_MS) {
      if (items.length >= count) return Promise.resolve(items);
      return new Promise<T[]>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`timed out waiting for ${count} items; got ${items.length}`));
        }, timeoutMs);
        waiters.push({
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve(items);
          },
        });
      });
    },
  };
}

function watchEvents(engine: Engine, topic: string): Collector<RillEvent> {
  return collector<RillEvent>((push) => engine.watch(topic, push));
}

/** Polls `check` until it holds (for effects with no event to wait on, like a retention sweep). */
async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function ev(data: unknown, extra: { type?: string; key?: string } = {}): EventInput {
  return { data: JSON.stringify(data), ...extra };
}

function seqs(events: readonly { seq: number }[]): number[] {
  return events.map((e) => e.seq);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

/**
 * The engine conformance suite: the executable form of the contract in `src/engine/engine.ts`.
 * Every engine runs it unchanged. Topics get a fresh random prefix per test, so engines over a
 * shared backend (Redis, NATS) may reuse one namespace across tests.
 */
export function engineContract(
  name: string,
  factory: EngineFactory,
  traits: EngineTraits = { byteRetention: 'exact', storeBudget: false },
): void {
  describe(`engine contract: ${name}`, () => {
    let opened: EngineUnderTest[] = [];
    let prefix = '';

    async function make(opts: EngineOptions = {}): Promise<Engine> {
      const handle = await factory(opts);
      opened.push(handle);
      return handle.engine;
    }

    /** A topic name unique to this test. */
    function topic(suffix: string): string {
      if (prefix === '') prefix = `t${randomBytes(6).toString('hex')}`;
      return `${prefix}.${suffix}`;
    }

    afterEach(async () => {
      const handles = opened;
      opened = [];
      prefix = '';
      for (const h of handles) {
        await h.engine.close();
        await h.cleanup?.();
      }
    });

    describe('append and seq', () => {
      it('assigns seq 1, 2, 3 … and returns results in input order', async () => {
        const engine = await make();
        const t = topic('orders');
        const before = Date.now();
        const first = await engine.append(t, [
          ev({ n: 1 }, { type: 'order.created' }),
          ev({ n: 2 }),
        ]);
        const second = await engine.append(t, [ev({ n: 3 }, { key: 'k3' })]);
        expect(first.map((r) => [r.event.seq, r.duplicate])).toEqual([
          [1, false],
          [2, false],
        ]);
        expect(second.map((r) => r.event.seq)).toEqual([3]);
        const [a, b] = first.map((r) => r.event) as [RillEvent, RillEvent];
        expect(a).toMatchObject({ topic: t, seq: 1, type: 'order.created', data: '{"n":1}' });
        expect(a.key).toBeUndefined();
        expect(b.type).toBeUndefined();
        expect(second[0]?.event).toMatchObject({ seq: 3, key: 'k3', data: '{"n":3}' });
        expect(a.epoch).toBe(b.epoch);
        expect(a.time).toBeGreaterThanOrEqual(before - 1_000);
        expect(a.time).toBeLessThanOrEqual(Date.now() + 1_000);
      });

      it('keeps seq contiguous under many concurrent appends, each batch consecutive', async () => {
        const engine = await make();
        const t = topic('busy');
        const sizes = Array.from({ length: 50 }, (_, i) => 1 + ((i * 7) % 5));
        const total = sizes.reduce((a, b) => a + b, 0);
        const results = await Promise.all(
          sizes.map((size, b) =>
            engine.append(
              t,
              Array.from({ length: size }, (_, i) => ev({ b, i })),
            ),
          ),
        );
        const all = results.flat().map((r) => r.event.seq);
        expect([...all].sort((x, y) => x - y)).toEqual(range(1, total));
        for (const batch of results) {
          const s = seqs(batch.map((r) => r.event));
          expect(s).toEqual(range(s[0] as number, (s[0] as number) + s.length - 1));
        }
        const read = await engine.read(t, 0, 1_000);
        expect(seqs(read.events)).toEqual(range(1, total));
        // Each stored event is the one its append was told about.
        const bySeq = new Map(results.flat().map((r) => [r.event.seq, r.event.data]));
        for (const e of read.events) expect(e.data).toBe(bySeq.get(e.seq));
        expect(read.head?.lastSeq).toBe(total);
      });

      it('keeps topics independent', async () => {
        const engine = await make();
        const [x, y] = [topic('x'), topic('y')];
        await Promise.all([
          engine.append(x, [ev(1), ev(2)]),
          engine.append(y, [ev(1)]),
          engine.append(x, [ev(3)]),
        ]);
        expect((await engine.head(x))?.lastSeq).toBe(3);
        expect((await engine.head(y))?.lastSeq).toBe(1);
        expect(seqs((await engine.read(y, 0, 10)).events)).toEqual([1]);
      });

      it('uses the clock for time, which never decreases within a topic', async () => {
        const clock = new Clock(5_000_000);
        const engine = await make({ now: clock.now });
        const t = topic('time');
        const [a] = await engine.append(t, [ev(1)]);
        expect(a?.event.time).toBe(5_000_000);
        clock.t = 4_000_000; // the wall clock stepped back
        const [b] = await engine.append(t, [ev(2)]);
        expect(b?.event.time).toBe(5_000_000);
        clock.t = 6_000_000;
        const [c, d] = await engine.append(t, [ev(3), ev(4)]);
        expect([c?.event.time, d?.event.time]).toEqual([6_000_000, 6_000_000]);
        expect((await engine.head(t))?.lastTime).toBe(6_000_000);
        const times = (await engine.read(t, 0, 10)).events.map((e) => e.time);
        expect(times).toEqual([5_000_000, 5_000_000, 6_000_000, 6_000_000]);
      });
    });

    describe('read', () => {
      it('returns events in seq order, paged by afterSeq and limit', async () => {
        const engine = await make();
        const t = topic('paged');
        for (let i = 0; i < 5; i++) {
          await engine.append(
            t,
            Array.from({ length: 5 }, (_, j) => ev({ n: i * 5 + j + 1 })),
          );
        }
        const head = await engine.head(t);
        const pages: number[][] = [];
        let after = 0;
        for (;;) {
          const page = await engine.read(t, after, 10);
          expect(page.head).toEqual(head);
          if (page.events.length === 0) break;
          pages.push(seqs(page.events));
          after = page.events.at(-1)?.seq as number;
        }
        expect(pages).toEqual([range(1, 10), range(11, 20), range(21, 25)]);
        const some = await engine.read(t, 7, 3);
        expect(some.events.map((e) => [e.seq, e.data])).toEqual([
          [8, '{"n":8}'],
          [9, '{"n":9}'],
          [10, '{"n":10}'],
        ]);
        expect((await engine.read(t, 25, 10)).events).toEqual([]);
        expect((await engine.read(t, 1_000, 10)).events).toEqual([]);
        expect((await engine.read(t, 0, 0)).events).toEqual([]);
      });

      it('reads an unknown topic as empty with head null', async () => {
        const engine = await make();
        expect(await engine.read(topic('nothing'), 0, 10)).toEqual({ events: [], head: null });
      });
    });

    describe('head', () => {
      it('is null for an unknown topic and tracks firstSeq, lastSeq, epoch, created, lastTime', async () => {
        const clock = new Clock(1_000_000);
        const engine = await make({ now: clock.now });
        const t = topic('head');
        expect(await engine.head(t)).toBeNull();
        const [r] = await engine.append(t, [ev(1)]);
        clock.t = 1_000_500;
        await engine.append(t, [ev(2), ev(3)]);
        const head = await engine.head(t);
        expect(head).toEqual({
          topic: t,
          epoch: r?.event.epoch,
          firstSeq: 1,
          lastSeq: 3,
          created: 1_000_000,
          lastTime: 1_000_500,
        });
      });

      it('keeps one alphanumeric epoch per topic, stable across calls', async () => {
        const engine = await make();
        const [x, y] = [topic('x'), topic('y')];
        const a = await engine.append(x, [ev(1)]);
        const b = await engine.append(x, [ev(2)]);
        const c = await engine.append(y, [ev(1)]);
        const epoch = a[0]?.event.epoch as string;
        expect(isEpoch(epoch)).toBe(true);
        expect(epoch).toMatch(/^[A-Za-z0-9]+$/);
        expect(b[0]?.event.epoch).toBe(epoch);
        expect((await engine.head(x))?.epoch).toBe(epoch);
        expect((await engine.read(x, 0, 10)).events.map((e) => e.epoch)).toEqual([epoch, epoch]);
        expect(isEpoch(c[0]?.event.epoch as string)).toBe(true);
        expect(c[0]?.event.epoch).not.toBe(epoch);
      });
    });

    describe('watch', () => {
      it('delivers every append in seq order, each once, including concurrent appends', async () => {
        const engine = await make();
        const t = topic('live');
        const w = watchEvents(engine, t);
        const sizes = Array.from({ length: 40 }, (_, i) => 1 + ((i * 3) % 5));
        const total = sizes.reduce((a, b) => a + b, 0);
        const results = await Promise.all(
          sizes.map((n, b) =>
            engine.append(
              t,
              Array.from({ length: n }, (_, i) => ev({ b, i })),
            ),
          ),
        );
        await engine.append(t, [ev('last')]);
        const got = await w.until(total + 1);
        expect(seqs(got)).toEqual(range(1, total + 1));
        const sent = new Map(results.flat().map((r) => [r.event.seq, r.event.data]));
        for (const e of got.slice(0, total)) {
          expect(e).toMatchObject({ topic: t, data: sent.get(e.seq) });
        }
        expect(got.at(-1)).toMatchObject({ seq: total + 1, data: '"last"' });
        w.stop();
      });

      it('delivers events committed after watch returned, never skipping one', async () => {
        const engine = await make();
        const t = topic('later');
        await engine.append(t, [ev(1), ev(2), ev(3)]);
        const w = watchEvents(engine, t);
        await engine.append(t, [ev(4)]);
        await engine.append(t, [ev(5), ev(6)]);
        await w.until(1);
        await eventuallyHas(w, 6);
        const got = seqs(w.items);
        // Some events committed before the watch may come too, but in order and without a hole.
        expect(got).toEqual(range(got[0] as number, 6));
        expect(got).toEqual(expect.arrayContaining([4, 5, 6]));
        w.stop();
      });

      it('delivers only events that a read already returns', async () => {
        const engine = await make();
        const t = topic('visible');
        const reads: Promise<string | undefined>[] = [];
        const w = collector<RillEvent>((push) =>
          engine.watch(t, (events) => {
            for (const e of events) {
              reads.push(engine.read(t, e.seq - 1, 1).then((r) => r.events[0]?.data));
            }
            push(events);
          }),
        );
        await Promise.all(
          Array.from({ length: 10 }, (_, i) => engine.append(t, [ev(i), ev(i + 100)])),
        );
        const got = await w.until(20);
        expect(await Promise.all(reads)).toEqual(got.map((e) => e.data));
        w.stop();
      });

      it('serves several watchers, and unwatch stops only its own delivery', async () => {
        const engine = await make();
        const t = topic('fan');
        const a = watchEvents(engine, t);
        const b = watchEvents(engine, t);
        await engine.append(t, [ev(1), ev(2)]);
        await Promise.all([a.until(2), b.until(2)]);
        a.stop();
        await engine.append(t, [ev(3)]);
        await engine.append(t, [ev(4)]);
        await b.until(4);
        expect(seqs(b.items)).toEqual([1, 2, 3, 4]);
        expect(seqs(a.items)).toEqual([1, 2]);
        b.stop();
      });

      it('does not deliver duplicates of idempotent appends', async () => {
        const engine = await make();
        const t = topic('dupes');
        const w = watchEvents(engine, t);
        await engine.append(t, [ev(1, { key: 'a' })]);
        await engine.append(t, [ev(1, { key: 'a' }), ev(2, { key: 'b' })]);
        await engine.append(t, [ev(3)]);
        await w.until(3);
        expect(seqs(w.items)).toEqual([1, 2, 3]);
        expect(w.items.map((e) => e.key)).toEqual(['a', 'b', undefined]);
        w.stop();
      });

      it('reports each new topic once to watchTopics', async () => {
        const engine = await make();
        const mine = (name: string): boolean => name.startsWith(topic(''));
        const w = collector<string>((push) =>
          engine.watchTopics((name) => {
            if (mine(name)) push([name]);
          }),
        );
        const [x, y, z] = [topic('x'), topic('y'), topic('z')];
        await engine.append(x, [ev(1)]);
        await engine.append(x, [ev(2)]);
        await Promise.all([engine.append(y, [ev(1)]), engine.append(y, [ev(2)])]);
        await engine.append(x, [ev(3)]);
        await engine.append(z, [ev(1)]);
        await w.until(3);
        expect([...w.items].sort()).toEqual([x, y, z]);
        w.stop();
      });
    });

    describe('trace context', () => {
      const A = { traceparent: `00-${'a1'.repeat(16)}-${'b2'.repeat(8)}-01` };
      const B = {
        traceparent: `00-${'c3'.repeat(16)}-${'d4'.repeat(8)}-00`,
        tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE',
      };

      it("stores an event's trace and returns it from append, read and watch; none when absent", async () => {
        const engine = await make();
        const t = topic('traced');
        const w = watchEvents(engine, t);
        const appended = await engine.append(t, [
          { ...ev(1), trace: A },
          ev(2, { type: 'plain' }),
          { ...ev(3, { key: 'k3' }), trace: B },
        ]);
        const expected = [A, undefined, B];
        expect(appended.map((r) => r.event.trace)).toEqual(expected);
        expect((await readAll(engine, t)).map((e) => e.trace)).toEqual(expected);
        expect((await w.until(3)).map((e) => e.trace)).toEqual(expected);
        // An event without one has no `trace` member at all.
        expect('trace' in (await engine.read(t, 1, 1)).events[0]!).toBe(false);
        w.stop();
        // And again from a fresh read after more appends (a page spanning both kinds).
        await engine.append(t, [ev(4), { ...ev(5), trace: A }]);
        expect((await engine.read(t, 2, 10)).events.map((e) => e.trace)).toEqual([B, undefined, A]);
      });

      it('counts the trace in retention.maxBytes', async () => {
        // 45 bytes of data and a 55-byte traceparent: 100 bytes an event.
        const engine = await make({
          retention: { maxEvents: 0, maxAgeMs: 0, maxBytes: 1000, rules: [] },
        });
        const t = topic('tracebytes');
        for (let i = 0; i < 20; i++) {
          await engine.append(t, [{ data: JSON.stringify('a'.repeat(43)), trace: A }]);
        }
        const kept = seqs(await readAll(engine, t));
        if (traits.byteRetention === 'exact') expect(kept).toEqual(range(11, 20));
        else expect(kept.length).toBeLessThanOrEqual(12);
      });
    });

    describe('idempotency', () => {
      it('returns the original for a key seen within the window, without appending twice', async () => {
        const engine = await make();
        const t = topic('keys');
        const [first] = await engine.append(t, [ev({ v: 1 }, { key: 'order-1', type: 'o' })]);
        await engine.append(t, [ev({ v: 2 })]);
        const [again] = await engine.append(t, [ev({ v: 1 }, { key: 'order-1', type: 'o' })]);
        expect(first?.duplicate).toBe(false);
        expect(again?.duplicate).toBe(true);
        expect(again?.event).toMatchObject({
          seq: first?.event.seq,
          time: first?.event.time,
          epoch: first?.event.epoch,
          key: 'order-1',
          type: 'o',
          data: '{"v":1}',
        });
        expect((await engine.head(t))?.lastSeq).toBe(2);
        expect(seqs((await engine.read(t, 0, 10)).events)).toEqual([1, 2]);
      });

      it('dedupes within one batch: the second occurrence returns the first', async () => {
        const engine = await make();
        const t = topic('batch');
        const results = await engine.append(t, [
          ev('a', { key: 'k' }),
          ev('b'),
          ev('a', { key: 'k' }),
          ev('c', { key: 'other' }),
        ]);
        expect(results.map((r) => [r.event.seq, r.duplicate])).toEqual([
          [1, false],
          [2, false],
          [1, true],
          [3, false],
        ]);
        expect(results[2]?.event.data).toBe('"a"');
        expect((await engine.head(t))?.lastSeq).toBe(3);
      });

      it('stores a key once under concurrent retries', async () => {
        const engine = await make();
        const t = topic('race');
        const results = await Promise.all(
          Array.from({ length: 20 }, () => engine.append(t, [ev('x', { key: 'once' })])),
        );
        const flat = results.flat();
        expect(flat.filter((r) => !r.duplicate)).toHaveLength(1);
        expect(new Set(flat.map((r) => r.event.seq))).toEqual(new Set([1]));
        expect((await engine.head(t))?.lastSeq).toBe(1);
      });

      it('does not share keys between topics', async () => {
        const engine = await make();
        const [x, y] = [topic('x'), topic('y')];
        const [a] = await engine.append(x, [ev(1, { key: 'same' })]);
        const [b] = await engine.append(y, [ev(1, { key: 'same' })]);
        expect(a?.duplicate).toBe(false);
        expect(b?.duplicate).toBe(false);
        expect(b?.event.topic).toBe(y);
      });

      it('appends a key anew once the window has passed', async () => {
        const clock = new Clock();
        const engine = await make({ now: clock.now, idempotencyWindowMs: 1_000 });
        const t = topic('window');
        const start = clock.t;
        const [a] = await engine.append(t, [ev(1, { key: 'k' })]);
        clock.t = start + 500;
        const [b] = await engine.append(t, [ev(1, { key: 'k' })]);
        expect([b?.event.seq, b?.duplicate]).toEqual([a?.event.seq, true]);
        clock.t = start + 2_500;
        const [c] = await engine.append(t, [ev(1, { key: 'k' })]);
        expect([c?.event.seq, c?.duplicate]).toEqual([2, false]);
        // The key now stands for the new event, for a fresh window.
        clock.t = start + 3_000;
        const [d] = await engine.append(t, [ev(1, { key: 'k' })]);
        expect([d?.event.seq, d?.duplicate]).toEqual([2, true]);
      });

      it('still dedupes after retention dropped the original event', async () => {
        const engine = await make({ retention: { maxEvents: 2, maxAgeMs: 0, rules: [] } });
        const t = topic('gone');
        const [a] = await engine.append(t, [ev('x', { key: 'k' })]);
        await engine.append(t, [ev(2), ev(3), ev(4)]);
        expect((await engine.head(t))?.firstSeq).toBe(3);
        const [b] = await engine.append(t, [ev('x', { key: 'k' })]);
        expect(b?.duplicate).toBe(true);
        expect(b?.event).toMatchObject({ seq: a?.event.seq, key: 'k', data: '"x"' });
        expect((await engine.head(t))?.lastSeq).toBe(4);
      });

      it('matches a model of seqs and keys for random sequential appends (property)', async () => {
        const engine = await make();
        let run = 0;
        const batch = fc.array(
          fc.record({
            key: fc.option(fc.constantFrom('a', 'b', 'c', 'd', 'e'), { nil: undefined }),
          }),
          { minLength: 1, maxLength: 6 },
        );
        await fc.assert(
          fc.asyncProperty(fc.array(batch, { minLength: 1, maxLength: 12 }), async (batches) => {
            const t = topic(`model${run++}`);
            const model = new Map<string, number>();
            let last = 0;
            for (const [b, inputs] of batches.entries()) {
              const results = await engine.append(
                t,
                inputs.map((x, i) => ev({ b, i }, x.key === undefined ? {} : { key: x.key })),
              );
              expect(results).toHaveLength(inputs.length);
              for (const [i, x] of inputs.entries()) {
                const r = results[i];
                const known = x.key === undefined ? undefined : model.get(x.key);
                if (known !== undefined) {
                  expect([r?.event.seq, r?.duplicate]).toEqual([known, true]);
                } else {
                  expect([r?.event.seq, r?.duplicate]).toEqual([++last, false]);
                  if (x.key !== undefined) model.set(x.key, last);
                }
              }
            }
            const stored = (await engine.read(t, 0, 1_000)).events;
            expect(seqs(stored)).toEqual(range(1, last));
            for (const [key, seq] of model) expect(stored[seq - 1]?.key).toBe(key);
          }),
          { numRuns: 25 },
        );
      });

      it('keeps seqs contiguous and keys unique for random concurrent appends (property)', async () => {
        const engine = await make();
        let run = 0;
        const batch = fc.array(fc.option(fc.constantFrom('a', 'b', 'c', 'd'), { nil: undefined }), {
          minLength: 1,
          maxLength: 5,
        });
        await fc.assert(
          fc.asyncProperty(fc.array(batch, { minLength: 1, maxLength: 15 }), async (batches) => {
            const t = topic(`conc${run++}`);
            const all = await Promise.all(
              batches.map((keys) =>
                engine.append(
                  t,
                  keys.map((key) => ev(key ?? null, key === undefined ? {} : { key })),
                ),
              ),
            );
            const distinctKeys = new Set(batches.flat().filter((k) => k !== undefined));
            const unkeyed = batches.flat().filter((k) => k === undefined).length;
            const total = distinctKeys.size + unkeyed;
            const fresh = all.flat().filter((r) => !r.duplicate);
            expect(fresh.map((r) => r.event.seq).sort((a, b) => a - b)).toEqual(range(1, total));
            const seqOfKey = new Map<string, number>();
            for (const r of fresh)
              if (r.event.key !== undefined) seqOfKey.set(r.event.key, r.event.seq);
            expect(seqOfKey.size).toBe(distinctKeys.size);
            for (const r of all.flat()) {
              if (r.event.key !== undefined) expect(r.event.seq).toBe(seqOfKey.get(r.event.key));
            }
            for (const results of all) {
              const s = seqs(results.filter((r) => !r.duplicate).map((r) => r.event));
              if (s.length > 0)
                expect(s).toEqual(range(s[0] as number, (s[0] as number) + s.length - 1));
            }
            expect(seqs((await engine.read(t, 0, 1_000)).events)).toEqual(range(1, total));
          }),
          { numRuns: 20 },
        );
      });
    });

    describe('retention', () => {
      it('keeps the newest maxEvents events, and firstSeq advances', async () => {
        const engine = await make({ retention: { maxEvents: 5, maxAgeMs: 0, rules: [] } });
        const t = topic('count');
        await engine.append(t, [ev(1), ev(2), ev(3)]);
        await engine.append(t, [ev(4), ev(5), ev(6), ev(7)]);
        await engine.append(t, [ev(8)]);
        const head = await engine.head(t);
        expect([head?.firstSeq, head?.lastSeq]).toEqual([4, 8]);
        expect(seqs((await engine.read(t, 0, 100)).events)).toEqual([4, 5, 6, 7, 8]);
        expect(seqs((await engine.read(t, 2, 2)).events)).toEqual([4, 5]);
        expect(seqs((await engine.read(t, 6, 100)).events)).toEqual([7, 8]);
        const [next] = await engine.append(t, [ev(9)]);
        expect(next?.event.seq).toBe(9);
        // A batch larger than the limit keeps its newest events.
        await engine.append(
          t,
          Array.from({ length: 7 }, (_, i) => ev(10 + i)),
        );
        expect(seqs((await engine.read(t, 0, 100)).events)).toEqual(range(12, 16));
      });

      it('applies the first matching rule, with unspecified fields from the default', async () => {
        const engine = await make({
          retention: {
            maxEvents: 3,
            maxAgeMs: 0,
            rules: [
              { pattern: `${topic('big')}.*`, maxEvents: 10 },
              { pattern: `${topic('big')}.>`, maxEvents: 1 },
              { pattern: topic('aged'), maxAgeMs: 60_000 },
            ],
          },
        });
        const fill = async (name: string): Promise<[number, number]> => {
          await engine.append(
            name,
            Array.from({ length: 12 }, (_, i) => ev(i)),
          );
          const head = await engine.head(name);
          return [head?.firstSeq ?? -1, head?.lastSeq ?? -1];
        };
        expect(await fill(topic('big.one'))).toEqual([3, 12]);
        expect(await fill(topic('big.one.two'))).toEqual([12, 12]);
        expect(await fill(topic('aged'))).toEqual([10, 12]);
        expect(await fill(topic('other'))).toEqual([10, 12]);
      });

      it('drops events older than maxAgeMs on the next append', async () => {
        const clock = new Clock();
        const engine = await make({
          now: clock.now,
          retention: { maxEvents: 0, maxAgeMs: 1_000, rules: [] },
          sweepIntervalMs: 60_000,
        });
        const t = topic('age');
        const start = clock.t;
        await engine.append(t, [ev(1), ev(2), ev(3)]);
        clock.t = start + 600;
        await engine.append(t, [ev(4), ev(5)]);
        clock.t = start + 1_500;
        await engine.append(t, [ev(6)]);
        await eventually(async () => (await engine.head(t))?.firstSeq === 4, 'firstSeq is 4');
        const head = await engine.head(t);
        expect([head?.firstSeq, head?.lastSeq]).toEqual([4, 6]);
        expect(seqs((await engine.read(t, 0, 100)).events)).toEqual([4, 5, 6]);
        const [next] = await engine.append(t, [ev(7)]);
        expect(next?.event.seq).toBe(7);
      });

      it('drops old events in the background sweep, without appends', async () => {
        const clock = new Clock();
        const engine = await make({
          now: clock.now,
          retention: { maxEvents: 0, maxAgeMs: 1_000, rules: [] },
          sweepIntervalMs: 20,
        });
        const t = topic('sweep');
        const start = clock.t;
        await engine.append(t, [ev(1), ev(2)]);
        clock.t = start + 800;
        await engine.append(t, [ev(3)]);
        clock.t = start + 1_200;
        await eventually(async () => (await engine.head(t))?.firstSeq === 3, 'firstSeq is 3');
        clock.t = start + 5_000;
        await eventually(async () => (await engine.head(t))?.firstSeq === 4, 'all expired');
        const head = await engine.head(t);
        expect([head?.firstSeq, head?.lastSeq]).toEqual([4, 3]);
        expect(await engine.read(t, 0, 10)).toEqual({ events: [], head });
        const [next] = await engine.append(t, [ev(4)]);
        expect([next?.event.seq, next?.event.epoch]).toEqual([4, head?.epoch]);
        expect(seqs((await engine.read(t, 0, 10)).events)).toEqual([4]);
      });
    });

    describe('retention by bytes', () => {
      /**
       * Event `i` of 100 UTF-8 bytes — data 96 (47 × "é" quoted), type 2, key 2 — but only 53
       * characters: an engine counting characters keeps about twice as many.
       */
      const sized = (i: number): EventInput => ({
        data: JSON.stringify('é'.repeat(47)),
        type: 'ty',
        key: String.fromCharCode(65 + Math.floor(i / 26), 97 + (i % 26)),
      });
      const batchOf = (from: number, n: number): EventInput[] =>
        Array.from({ length: n }, (_, i) => sized(from + i));

      /** Checks what `t` keeps: a contiguous newest range of the expected size. */
      async function expectKept(
        engine: Engine,
        t: string,
        lastSeq: number,
        maxBytes: number,
        largestAppend: number,
      ): Promise<void> {
        const head = await engine.head(t);
        expect(head?.lastSeq).toBe(lastSeq);
        const kept = seqs(await readAll(engine, t));
        expect(kept).toEqual(range(head?.firstSeq ?? -1, lastSeq));
        const bytes = kept.length * 100;
        if (traits.byteRetention === 'exact') {
          expect(bytes).toBe(Math.min(lastSeq * 100, Math.floor(maxBytes / 100) * 100));
        } else {
          expect(bytes).toBeLessThanOrEqual(maxBytes * 1.1 + largestAppend * 100);
          expect(bytes).toBeGreaterThanOrEqual(
            Math.min(lastSeq * 100, maxBytes - largestAppend * 100),
          );
        }
      }

      it('keeps the newest events within maxBytes (UTF-8 bytes of data, type and key), seqs contiguous', async () => {
        const engine = await make({
          retention: { maxEvents: 0, maxAgeMs: 0, maxBytes: 1000, rules: [] },
        });
        const t = topic('bytes');
        for (let i = 0; i < 30; i += 3) await engine.append(t, batchOf(i, 3));
        await expectKept(engine, t, 30, 1000, 3);
        if (traits.byteRetention === 'exact') {
          expect((await engine.head(t))?.firstSeq).toBe(21);
          expect(seqs((await engine.read(t, 5, 3)).events)).toEqual([21, 22, 23]);
        }
        // One append larger than the limit.
        const results = await engine.append(t, batchOf(30, 15));
        expect(results.map((r) => r.event.seq)).toEqual(range(31, 45));
        await expectKept(engine, t, 45, 1000, 15);
        if (traits.byteRetention === 'exact') expect((await engine.head(t))?.firstSeq).toBe(36);
        const [next] = await engine.append(t, [sized(45)]);
        expect(next?.event.seq).toBe(46);
        await expectKept(engine, t, 46, 1000, 15);
      });

      it('takes maxBytes from the first matching rule, unlimited by default', async () => {
        const engine = await make({
          retention: {
            maxEvents: 0,
            maxAgeMs: 0,
            rules: [{ pattern: `${topic('small')}.*`, maxBytes: 300 }],
          },
        });
        const small = topic('small.a');
        const other = topic('other');
        for (let i = 0; i < 8; i++) {
          await engine.append(small, [sized(i)]);
          await engine.append(other, [sized(i)]);
        }
        await expectKept(engine, small, 8, 300, 1);
        expect(seqs(await readAll(engine, other))).toEqual(range(1, 8));
      });

      it('is announced like the other limits: a read from before firstSeq starts at firstSeq', async () => {
        const engine = await make({
          retention: { maxEvents: 0, maxAgeMs: 0, maxBytes: 500, rules: [] },
        });
        const t = topic('behind');
        for (let i = 0; i < 12; i++) await engine.append(t, [sized(i)]);
        const head = await engine.head(t);
        expect(head?.firstSeq).toBeGreaterThan(1);
        const page = await engine.read(t, 0, 3);
        expect(page.head).toEqual(head);
        expect(seqs(page.events)).toEqual(range(head?.firstSeq ?? -1, (head?.firstSeq ?? -1) + 2));
      });
    });

    if (traits.storeBudget) {
      describe('store budget (maxStoreBytes)', () => {
        /** 100 bytes; with `key`, 100 bytes of data and the key. */
        const hundred = (i: number, key?: string): EventInput => ({
          data: JSON.stringify(`${i}`.padEnd(98, '.')),
          ...(key === undefined ? {} : { key }),
        });
        const hundreds = (from: number, n: number): EventInput[] =>
          Array.from({ length: n }, (_, i) => hundred(from + i));
        const keyed = (from: number, n: number): EventInput[] =>
          Array.from({ length: n }, (_, i) => hundred(from + i, `r${from + i}`));
        const refusal = (p: Promise<unknown>): Promise<unknown> =>
          p.then(
            () => 'stored',
            (e: unknown) => e,
          );

        it('refuses an append past it with insufficient_storage, storing none of it, until retention frees space', async () => {
          const clock = new Clock();
          const engine = await make({
            now: clock.now,
            maxStoreBytes: 1_000,
            sweepIntervalMs: 20,
            retention: {
              maxEvents: 0,
              maxAgeMs: 60_000,
              rules: [{ pattern: topic('rolling'), maxEvents: 2 }],
            },
          });
          const a = topic('a');
          const rolling = topic('rolling');
          const w = watchEvents(engine, a);
          // One event per append: the store counts what is stored, and lmdb drops whole appends.
          await engine.append(rolling, [hundred(0, 'k')]); // 101 bytes
          await engine.append(rolling, hundreds(1, 1));
          await engine.append(a, hundreds(0, 5));
          await engine.append(topic('b'), [...hundreds(0, 2), { data: '"'.padEnd(98, '.') + '"' }]);
          // 1000 bytes (101 + 100 + 500 + 299): full.

          const err = await refusal(engine.append(a, keyed(5, 2)));
          expect(err).toBeInstanceOf(RillError);
          expect((err as RillError).code).toBe('insufficient_storage');
          expect((err as RillError).retryable).toBe(true);
          expect((await engine.head(a))?.lastSeq).toBe(5);
          expect(seqs(await readAll(engine, a))).toEqual(range(1, 5));
          // A topic the refused append would have created does not exist.
          const fresh = topic('fresh');
          expect(((await refusal(engine.append(fresh, hundreds(0, 1)))) as RillError).code).toBe(
            'insufficient_storage',
          );
          expect(await engine.head(fresh)).toBeNull();
          expect(
            (await engine.listTopics({ prefix: topic('') })).map((h) => h.topic),
          ).not.toContain(fresh);
          // An append whose own retention makes the room goes in.
          const [rolled] = await engine.append(rolling, hundreds(2, 1));
          expect(rolled?.event.seq).toBe(3);
          expect((await engine.head(rolling))?.firstSeq).toBe(2);
          // A duplicate adds nothing: answered as usual.
          const [dup] = await engine.append(rolling, [hundred(0, 'k')]);
          expect([dup?.duplicate, dup?.event.seq]).toEqual([true, 1]);

          // Age retention empties the store; the next append goes in by itself, and the keys of
          // the refused one were never stored.
          clock.t += 61_000;
          let stored: AppendResult[] = [];
          await eventually(async () => {
            stored = await engine.append(a, keyed(5, 2)).catch(() => []);
            return stored.length > 0;
          }, 'an append is stored again');
          expect(stored.map((r) => [r.event.seq, r.duplicate])).toEqual([
            [6, false],
            [7, false],
          ]);
          expect(seqs(await readAll(engine, a))).toEqual([6, 7]);
          await eventuallyHas(w, 7);
          expect(seqs(w.items)).toEqual(range(1, 7));
        });
      });
    }

    describe('seqAtTime', () => {
      it('finds the first retained event at or after a time', async () => {
        const clock = new Clock(10_000);
        const engine = await make({ now: clock.now });
        const t = topic('when');
        expect(await engine.seqAtTime(t, 0)).toBeNull();
        await engine.append(t, [ev(1), ev(2)]);
        clock.t = 20_000;
        await engine.append(t, [ev(3)]);
        clock.t = 30_000;
        await engine.append(t, [ev(4), ev(5)]);
        const cases: [number, number][] = [
          [0, 1],
          [10_000, 1],
          [10_001, 3],
          [20_000, 3],
          [25_000, 4],
          [30_000, 4],
          [30_001, 6],
        ];
        for (const [ms, seq] of cases)
          expect([ms, await engine.seqAtTime(t, ms)]).toEqual([ms, seq]);
      });

      it('never points before firstSeq', async () => {
        const engine = await make({ retention: { maxEvents: 2, maxAgeMs: 0, rules: [] } });
        const t = topic('trimmed');
        await engine.append(t, [ev(1), ev(2), ev(3), ev(4)]);
        expect(await engine.seqAtTime(t, 0)).toBe(3);
      });
    });

    describe('listTopics', () => {
      it('lists topics in name order with prefix, after and limit', async () => {
        const engine = await make();
        const names = ['c', 'a', 'b.x', 'b', 'a-b', 'b.y.z'].map((s) => topic(s));
        for (const [i, name] of names.entries()) {
          await engine.append(
            name,
            Array.from({ length: i + 1 }, (_, j) => ev(j)),
          );
        }
        const p = topic('');
        const sorted = [...names].sort();
        const all = await engine.listTopics({ prefix: p });
        expect(all.map((h) => h.topic)).toEqual(sorted);
        for (const h of all) expect(h).toEqual(await engine.head(h.topic));
        expect((await engine.listTopics({ prefix: topic('b') })).map((h) => h.topic)).toEqual([
          topic('b'),
          topic('b.x'),
          topic('b.y.z'),
        ]);
        expect(
          (await engine.listTopics({ prefix: p, after: topic('b') })).map((h) => h.topic),
        ).toEqual(sorted.slice(sorted.indexOf(topic('b')) + 1));

        const paged: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await engine.listTopics({
            prefix: p,
            limit: 4,
            ...(after === undefined ? {} : { after }),
          });
          expect(page.length).toBeLessThanOrEqual(4);
          if (page.length === 0) break;
          paged.push(...page.map((h) => h.topic));
          after = page.at(-1)?.topic;
        }
        expect(paged).toEqual(sorted);
        expect(await engine.listTopics({ prefix: `${p}zzz` })).toEqual([]);
        expect(await engine.listTopics({ prefix: p, after: `${p}zzz` })).toEqual([]);
        expect(await engine.listTopics({ prefix: topic('b.'), after: topic('a') })).toEqual(
          await engine.listTopics({ prefix: topic('b.') }),
        );
      });
    });

    describe('ephemeral events and administration', () => {
      /** A watch whose stored events and signals are collected; ready once `warm` came through. */
      async function watchAll(engine: Engine, t: string) {
        const signals: TopicSignal[] = [];
        const events = collector<RillEvent>((push) =>
          engine.watch(t, push, (s) => signals.push(s)),
        );
        return { events, signals };
      }

      async function until(check: () => boolean, what: string): Promise<void> {
        await eventually(async () => check(), what);
      }

      it('broadcast reaches watchers only: nothing stored, no seq consumed', async () => {
        const engine = await make();
        const t = topic('eph');
        const w = await watchAll(engine, t);
        await engine.append(t, [ev('warm')]);
        await w.events.until(1);
        await engine.broadcast(t, [{ topic: t, time: 5, type: 'typing', data: '{"u":"a"}' }]);
        await until(() => w.signals.length === 1, 'the ephemeral event arrived');
        expect(w.signals[0]).toEqual({
          kind: 'ephemeral',
          events: [{ topic: t, time: 5, type: 'typing', data: '{"u":"a"}' }],
        });
        const [next] = await engine.append(t, [ev('after')]);
        expect(next?.event.seq).toBe(2);
        expect((await readAll(engine, t)).map((e) => e.data)).toEqual(['"warm"', '"after"']);
        expect((await engine.head(t))?.lastSeq).toBe(2);
        w.events.stop();
      });

      it('deleteTopic removes the log, tells watchers, and the next append starts a new epoch', async () => {
        const engine = await make();
        const t = topic('del');
        await engine.append(t, [ev(1), ev(2), ev(3)]);
        const old = (await engine.head(t))!.epoch;
        const w = await watchAll(engine, t);
        await engine.append(t, [ev(4)]);
        await w.events.until(1);
        expect(await engine.deleteTopic(t)).toBe(true);
        await until(
          () => w.signals.some((s) => s.kind === 'deleted'),
          'the deletion was signalled',
        );
        expect(w.signals).toContainEqual({ kind: 'deleted', epoch: old });
        expect(await engine.head(t)).toBeNull();
        expect(await engine.read(t, 0, 10)).toEqual({ events: [], head: null });
        expect((await engine.listTopics({ prefix: t })).map((h) => h.topic)).not.toContain(t);
        const [first] = await engine.append(t, [ev('new')]);
        expect(first?.event.seq).toBe(1);
        expect(first?.event.epoch).not.toBe(old);
        expect(isEpoch(first!.event.epoch)).toBe(true);
        expect((await readAll(engine, t)).map((e) => e.data)).toEqual(['"new"']);
        // The watch goes on into the new log.
        await eventuallyHas(w.events, 1);
        expect(w.events.items.at(-1)).toMatchObject({ seq: 1, epoch: first!.event.epoch });
        expect(await engine.deleteTopic(topic('never'))).toBe(false);
        w.events.stop();
      });

      it('purge drops the events before a seq; appends go on', async () => {
        const engine = await make();
        const t = topic('purge');
        await engine.append(
          t,
          Array.from({ length: 6 }, (_, i) => ev(i + 1)),
        );
        await engine.append(
          t,
          Array.from({ length: 4 }, (_, i) => ev(i + 7)),
        );
        const head = await engine.purge(t, 5);
        expect([head?.firstSeq, head?.lastSeq]).toEqual([5, 10]);
        expect(seqs(await readAll(engine, t))).toEqual(range(5, 10));
        expect(seqs((await engine.read(t, 0, 2)).events)).toEqual([5, 6]);
        // Purging before an earlier seq changes nothing; past the head empties the log.
        expect((await engine.purge(t, 2))?.firstSeq).toBe(5);
        const all = await engine.purge(t, 1_000);
        expect([all?.firstSeq, all?.lastSeq]).toEqual([11, 10]);
        expect(await readAll(engine, t)).toEqual([]);
        const [next] = await engine.append(t, [ev(11)]);
        expect(next?.event.seq).toBe(11);
        expect(seqs(await readAll(engine, t))).toEqual([11]);
        expect(await engine.purge(topic('never'), 3)).toBeNull();
      });

      it('setRetention overrides the configured limits for one topic, and can be cleared', async () => {
        const engine = await make({ retention: { maxEvents: 100, maxAgeMs: 0, rules: [] } });
        const t = topic('ret');
        const other = topic('other');
        await engine.append(
          t,
          Array.from({ length: 10 }, (_, i) => ev(i + 1)),
        );
        await engine.append(other, [ev(1), ev(2), ev(3), ev(4)]);
        expect(await engine.getRetention(t)).toEqual({
          maxEvents: 100,
          maxAgeMs: 0,
          maxBytes: 0,
          override: null,
        });
        const set = await engine.setRetention(t, { maxEvents: 3 });
        expect(set).toEqual({ maxEvents: 3, maxAgeMs: 0, maxBytes: 0, override: { maxEvents: 3 } });
        expect(await engine.getRetention(t)).toEqual(set);
        expect((await engine.head(t))?.firstSeq).toBe(8);
        expect(seqs(await readAll(engine, t))).toEqual([8, 9, 10]);
        await engine.append(t, [ev(11), ev(12)]);
        expect(seqs(await readAll(engine, t))).toEqual([10, 11, 12]);
        // Other topics keep the configured limits.
        expect((await engine.head(other))?.firstSeq).toBe(1);
        const cleared = await engine.setRetention(t, null);
        expect(cleared).toEqual({ maxEvents: 100, maxAgeMs: 0, maxBytes: 0, override: null });
        await engine.append(
          t,
          Array.from({ length: 5 }, (_, i) => ev(i + 13)),
        );
        expect(seqs(await readAll(engine, t))).toEqual(range(10, 17));
        expect(await engine.setRetention(topic('never'), { maxEvents: 1 })).toBeNull();
        expect(await engine.getRetention(topic('never'))).toBeNull();
      });

      it('an override looser than the configuration keeps more', async () => {
        const engine = await make({ retention: { maxEvents: 2, maxAgeMs: 0, rules: [] } });
        const t = topic('loose');
        await engine.append(t, [ev(1), ev(2)]);
        await engine.setRetention(t, { maxEvents: 50 });
        for (let i = 3; i <= 30; i++) await engine.append(t, [ev(i)]);
        expect(seqs(await readAll(engine, t))).toEqual(range(1, 30));
      });

      it('deleting a topic drops its override', async () => {
        const engine = await make({ retention: { maxEvents: 100, maxAgeMs: 0, rules: [] } });
        const t = topic('delret');
        await engine.append(t, [ev(1)]);
        await engine.setRetention(t, { maxEvents: 1 });
        await engine.deleteTopic(t);
        await engine.append(t, [ev(1), ev(2), ev(3)]);
        expect((await engine.getRetention(t))?.override).toBeNull();
        expect(seqs(await readAll(engine, t))).toEqual([1, 2, 3]);
      });
    });

    describe('coordination (leases and state records)', () => {
      function coord(engine: Engine) {
        if (!hasCoordination(engine)) throw new Error(`${engine.name} has no Coordination`);
        return engine;
      }

      it('one owner holds a lease until it expires or is released; tokens grow each time it changes hands', async () => {
        const engine = coord(await make());
        const name = topic('lease');
        const a = await engine.acquireLease(name, 'node-a', 60_000);
        expect(a).not.toBeNull();
        expect(await engine.acquireLease(name, 'node-b', 60_000)).toBeNull();
        // Renewal by the holder keeps it (the token never goes down).
        const renewed = await engine.acquireLease(name, 'node-a', 60_000);
        expect(renewed).not.toBeNull();
        expect(renewed!).toBeGreaterThanOrEqual(a!);
        expect(await engine.acquireLease(name, 'node-b', 60_000)).toBeNull();
        // Released by another owner: nothing happens.
        await engine.releaseLease(name, 'node-b');
        expect(await engine.acquireLease(name, 'node-b', 60_000)).toBeNull();
        await engine.releaseLease(name, 'node-a');
        const b = await engine.acquireLease(name, 'node-b', 60_000);
        expect(b).not.toBeNull();
        expect(b!).toBeGreaterThan(renewed!);
        // Another name is another lease.
        expect(await engine.acquireLease(topic('other'), 'node-a', 60_000)).not.toBeNull();
      });

      it('a lease not renewed expires and another owner takes it with a greater token', async () => {
        const engine = coord(await make());
        const name = topic('expiry');
        const a = await engine.acquireLease(name, 'node-a', 1_000);
        expect(a).not.toBeNull();
        expect(await engine.acquireLease(name, 'node-b', 1_000)).toBeNull();
        let b: number | null = null;
        await eventually(async () => {
          b = await engine.acquireLease(name, 'node-b', 1_000);
          return b !== null;
        }, 'the lease expired');
        expect(b!).toBeGreaterThan(a!);
        expect(await engine.acquireLease(name, 'node-a', 1_000)).toBeNull();
      });

      it('state records are read back, and a write under a smaller fence than the last is refused', async () => {
        const engine = coord(await make());
        const key = topic('state');
        expect(await engine.getState(key)).toBeNull();
        expect(await engine.putState(key, 'one', 5)).toBe(true);
        expect(await engine.getState(key)).toBe('one');
        expect(await engine.putState(key, 'two', 5)).toBe(true);
        expect(await engine.getState(key)).toBe('two');
        expect(await engine.putState(key, 'three', 7)).toBe(true);
        expect(await engine.putState(key, 'stale', 6)).toBe(false);
        expect(await engine.getState(key)).toBe('three');
        // Keys are independent and take any printable characters.
        const odd = `${key}:weird/key*>~`;
        expect(await engine.putState(odd, '{"a":1}', 1)).toBe(true);
        expect(await engine.getState(odd)).toBe('{"a":1}');
        expect(await engine.getState(key)).toBe('three');
      });

      it('refuses an oversized record or an empty key, storing nothing', async () => {
        const engine = coord(await make());
        const key = topic('bounded');
        expect(await engine.putState(key, 'kept', 1)).toBe(true);
        const big = await engine.putState(key, 'x'.repeat(70 * 1024), 1).catch((e: unknown) => e);
        expect((big as RillError).code).toBe('invalid_parameter');
        expect(await engine.getState(key)).toBe('kept');
        const empty = await engine.getState('').catch((e: unknown) => e);
        expect((empty as RillError).code).toBe('invalid_parameter');
      });
    });

    describe('close', () => {
      it('rejects appends after close with engine_unavailable', async () => {
        const engine = await make();
        const t = topic('closed');
        const pending = engine.append(t, [ev(1)]);
        await engine.close();
        // Pending appends finish before close resolves.
        expect((await pending)[0]?.event.seq).toBe(1);
        const err: unknown = await engine.append(t, [ev(2)]).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(RillError);
        expect((err as RillError).code).toBe('engine_unavailable');
        await engine.close();
      });
    });
  });
}

async function eventuallyHas(w: Collector<RillEvent>, lastSeq: number): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (w.items.at(-1)?.seq !== lastSeq) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for seq ${lastSeq}`);
    await w.until(w.items.length + 1, Math.max(1, deadline - Date.now()));
  }
}
