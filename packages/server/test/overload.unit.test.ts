import { afterEach, describe, expect, it } from 'vitest';
import { LoadMonitor, type OverloadSettings } from '../src/net/overload.js';
import { resolveConfig } from '../src/config.js';

/** Keeps the event loop busy for `ms`: what an overloaded process looks like from inside. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

/** Lets the loop idle for `ms` (a timer, so the loop is really idle meanwhile). */
const idle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
const log = {
  warn: (obj: object, msg: string) =>
    lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
  info: (obj: object, msg: string) =>
    lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
};
const monitors: LoadMonitor[] = [];
function monitor(s: Partial<OverloadSettings>, random = () => 0.5): LoadMonitor {
  // The interval is long: every sample in these tests is taken by the test itself.
  const m = new LoadMonitor(
    { maxEventLoopDelay: 0, maxEventLoopUtilization: 0, sampleInterval: 60_000, ...s },
    log,
    random,
  );
  monitors.push(m);
  m.start();
  return m;
}
afterEach(() => {
  for (const m of monitors.splice(0)) m.stop();
  lines.length = 0;
});

describe('LoadMonitor', () => {
  it('enters overload on a busy sample (utilisation) and leaves on the first idle one', async () => {
    const m = monitor({ maxEventLoopUtilization: 0.5 });
    expect(m.refuse()).toBeNull();
    busy(200);
    const s = m.sample();
    expect(s.utilization).toBeGreaterThan(0.5);
    expect(m.overloaded).toBe(true);
    const e = m.refuse();
    expect(e?.code).toBe('overloaded');
    expect(e?.status).toBe(503);
    expect(e?.retryAfter).toBe(3);
    await idle(200);
    expect(m.sample().utilization).toBeLessThan(0.5);
    expect(m.overloaded).toBe(false);
    expect(m.refuse()).toBeNull();
    expect(lines.map((l) => l.level)).toEqual(['warn', 'info']);
    expect(lines[0]!.msg).toMatch(/^overloaded: refusing/);
    expect(lines[1]!.obj.refused).toBe(1);
  });

  it('enters overload on a late loop (mean delay), not on one long pause among many turns', async () => {
    const m = monitor({ maxEventLoopDelay: 40 });
    // Many turns, each blocked 80 ms: every timer is late.
    for (let i = 0; i < 8; i++) {
      busy(80);
      await idle(0);
    }
    expect(m.sample().delay).toBeGreaterThan(40);
    expect(m.overloaded).toBe(true);
    await idle(300);
    expect(m.sample().delay).toBeLessThan(40);
    expect(m.overloaded).toBe(false);
    // One 150 ms pause among a second of idle turns: the mean stays low.
    await idle(300);
    busy(150);
    await idle(700);
    expect(m.sample().delay).toBeLessThan(40);
    expect(m.overloaded).toBe(false);
  });

  it('spreads Retry-After over 1–5 s', () => {
    const seen = new Set<number>();
    for (const r of [0, 0.2, 0.4, 0.6, 0.8, 0.999]) {
      const m = monitor({ maxEventLoopUtilization: 0.01 }, () => r);
      busy(50);
      m.sample();
      seen.add(m.refuse()!.retryAfter!);
    }
    expect([...seen].sort()).toEqual([1, 2, 3, 4, 5]);
  });

  it('logs a minute of repeated episodes as one line, not one each', async () => {
    const m = monitor({ maxEventLoopUtilization: 0.5 });
    for (let i = 0; i < 3; i++) {
      busy(120);
      m.sample();
      m.refuse();
      await idle(150);
      m.sample();
    }
    expect(m.overloaded).toBe(false);
    // The first episode in full; the two after it wait for the minute's summary.
    expect(lines.map((l) => l.msg.slice(0, 20))).toEqual([
      'overloaded: refusing',
      'overload over after ',
    ]);
  });

  it('measures nothing with both thresholds 0, and the defaults are on', () => {
    const off = monitor({});
    expect(off.enabled).toBe(false);
    busy(100);
    off.sample();
    expect(off.overloaded).toBe(false);
    const d = resolveConfig({}).overload;
    expect(d).toEqual({
      maxEventLoopDelay: 1000,
      maxEventLoopUtilization: 0,
      sampleInterval: 1000,
    });
    expect(
      resolveConfig({ overload: { maxEventLoopDelay: '200ms' } }).overload.maxEventLoopDelay,
    ).toBe(200);
    expect(() => resolveConfig({ overload: { maxEventLoopUtilization: 2 } })).toThrow(
      /overload.maxEventLoopUtilization/,
    );
  });
});
