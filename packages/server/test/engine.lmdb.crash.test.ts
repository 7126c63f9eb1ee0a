/**
 * The lmdb engine in a child process (test/fixtures/lmdb-appender.mjs, on the built engine) is
 * SIGKILLed while it appends: every event it acknowledged is in the reopened log.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '@rill/testkit';
import { LmdbEngine } from '../src/engine/lmdb.js';
import { readAll } from './engine.contract.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const APPENDER = join(HERE, 'fixtures/lmdb-appender.mjs');
const BUILT = join(HERE, '../dist/engine/lmdb.js');
/** Acknowledged events before the appender is killed. */
const ACKS = 2_000;

describe('lmdb engine killed mid-stream', () => {
  const dirs: Array<() => void> = [];
  const engines: LmdbEngine[] = [];

  afterEach(async () => {
    for (const e of engines.splice(0)) await e.close();
    for (const remove of dirs.splice(0)) remove();
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

    const engine = new LmdbEngine({ path, idempotencyWindowMs: 60_000 });
    engines.push(engine);
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

  it('loses no acknowledged event when the process is SIGKILLed mid-stream', async () => {
    expect(existsSync(BUILT), `${BUILT} missing: build first (npx tsc -b packages/server)`).toBe(
      true,
    );
    const { path, remove } = tempDir('rill-lmdb-');
    dirs.push(remove);
    await crashAndCheck(path, false);
    // Crashing right after an acknowledgement leaves no time for an unfinished commit to land.
    await crashAndCheck(path, true);
  });
});
