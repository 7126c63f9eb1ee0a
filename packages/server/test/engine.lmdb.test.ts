import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open } from 'lmdb';
import { afterEach, describe, expect, it } from 'vitest';
import type { RillEvent } from '../src/event.js';
import { LmdbEngine } from '../src/engine/lmdb.js';
import { engineContract } from './engine.contract.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const APPENDER = join(HERE, 'fixtures/lmdb-appender.mjs');
const BUILT = join(HERE, '../dist/engine/lmdb.js');
/** Acknowledged events before the appender is killed. */
const ACKS = 2_000;

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'rill-lmdb-'));
}

engineContract('lmdb', async (opts) => {
  const path = await tempDir();
  return {
    engine: new LmdbEngine({ ...opts, path }),
    cleanup: () => rm(path, { recursive: true, force: true }),
  };
});

async function readAll(engine: LmdbEngine, topic: string): Promise<RillEvent[]> {
  const out: RillEvent[] = [];
  for (;;) {
    const page = await engine.read(topic, out.at(-1)?.seq ?? 0, 10_000);
    if (page.events.length === 0) return out;
    out.push(...page.events);
  }
}

describe('lmdb engine on disk', () => {
  const dirs: string[] = [];
  const engines: LmdbEngine[] = [];

  afterEach(async () => {
    for (const e of engines.splice(0)) await e.close();
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  async function openAt(path: string, now?: () => number): Promise<LmdbEngine> {
    const engine = new LmdbEngine({ path, idempotencyWindowMs: 60_000, ...(now ? { now } : {}) });
    engines.push(engine);
    return engine;
  }

  it('keeps events, epoch and idempotency keys across close and reopen', async () => {
    const path = await tempDir();
    dirs.push(path);
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

  /**
   * Runs the appender until 2,000 events are acknowledged and it is SIGKILLed (by the test, or by
   * itself right after an ack), then checks every acknowledged event is in the reopened log.
   */
  async function crashAndCheck(path: string, selfKill: boolean): Promise<void> {
    const child = spawn(
      process.execPath,
      [APPENDER, path, 'crash.test', selfKill ? String(ACKS) : '0'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const acked = new Map<number, { n: number; i: number }>();
    let stderr = '';
    let partial = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const [seq, n, i] = line.split(' ').map(Number) as [number, number, number];
        acked.set(seq, { n, i });
      }
      if (!selfKill && acked.size >= ACKS && child.exitCode === null && !child.killed) {
        child.kill('SIGKILL');
      }
    });
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 30_000);
    // 'close' comes after the last stdout data: every ack the child wrote has been counted.
    const ended = await new Promise<string | number | null>((resolve) =>
      child.once('close', (code, signal) => resolve(signal ?? code)),
    );
    clearTimeout(watchdog);
    expect(ended, stderr).toBe('SIGKILL');
    expect(acked.size).toBeGreaterThanOrEqual(ACKS);

    const engine = await openAt(path);
    const stored = await readAll(engine, 'crash.test');
    expect(stored.map((e) => e.seq)).toEqual(
      Array.from({ length: stored.length }, (_, i) => i + 1),
    );
    expect((await engine.head('crash.test'))?.lastSeq).toBe(stored.length);
    const bySeq = new Map(
      stored.map((e) => [e.seq, JSON.parse(e.data) as { n: number; i: number }]),
    );
    const lost = [...acked]
      .filter(([seq, { n, i }]) => bySeq.get(seq)?.n !== n || bySeq.get(seq)?.i !== i)
      .map(([seq]) => seq);
    expect(lost).toEqual([]);
    // The log is still writable where it stopped.
    const [next] = await engine.append('crash.test', [{ data: '"after"' }]);
    expect(next?.event.seq).toBe(stored.length + 1);
    await engine.close();
    engines.splice(engines.indexOf(engine), 1);
  }

  it('stores data with line breaks (JSON text from the engine API) unchanged', async () => {
    const path = await tempDir();
    dirs.push(path);
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
    const path = await tempDir();
    dirs.push(path);
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

  it('loses no acknowledged event when the process is SIGKILLed mid-stream', async () => {
    expect(existsSync(BUILT), `${BUILT} missing: build first (npx tsc -b packages/server)`).toBe(
      true,
    );
    const path = await tempDir();
    dirs.push(path);
    await crashAndCheck(path, false);
    // Crashing right after an acknowledgement leaves no time for an unfinished commit to land.
    await crashAndCheck(path, true);
  });
});
