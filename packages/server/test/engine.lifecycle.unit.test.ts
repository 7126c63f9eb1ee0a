import { afterEach, describe, expect, it, vi } from 'vitest';
import { thrown } from '@rill/testkit';
import { Lifecycle, quietly } from '../src/engine/lifecycle.js';
import { isRillError } from '../src/model/errors.js';

/** A promise settled from outside. */
function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every pending promise reaction run (one macrotask later). */
function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

describe('Lifecycle (the engines close sequence)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('is open until close is called, then every operation gets engine_unavailable at once', () => {
    const life = new Lifecycle('demo');
    expect(life.closed).toBe(false);
    life.assertOpen();
    void life.close({ release: () => {} });
    expect(life.closed).toBe(true);
    const err = thrown(() => life.assertOpen());
    expect(isRillError(err) && err.code).toBe('engine_unavailable');
    expect((err as Error).message).toBe('The demo engine is closed');
  });

  it('closes once: a second close returns the same promise and runs nothing again', async () => {
    const life = new Lifecycle('demo');
    const steps: string[] = [];
    const first = life.close({
      wake: () => steps.push('wake'),
      release: () => void steps.push('release'),
    });
    const second = life.close({
      wake: () => steps.push('wake 2'),
      release: () => void steps.push('release 2'),
    });
    expect(second).toBe(first);
    await first;
    expect(steps).toEqual(['wake', 'release']);
  });

  it('wakes sleepers first, waits for every tracked operation (failed ones too) and only then releases', async () => {
    const life = new Lifecycle('demo');
    const steps: string[] = [];
    const ok = deferred<number>();
    const failing = deferred();
    expect(life.track(ok.promise)).toBe(ok.promise);
    life.track(failing.promise).catch(() => undefined);
    const closed = life.close({
      wake: () => steps.push('wake'),
      release: () => void steps.push('release'),
    });
    await settle();
    expect(steps).toEqual(['wake']);
    failing.reject(new Error('store failed'));
    await settle();
    expect(steps).toEqual(['wake']);
    ok.resolve(1);
    await closed;
    expect(steps).toEqual(['wake', 'release']);
  });

  it('also waits for an operation tracked while it was waiting', async () => {
    const life = new Lifecycle('demo');
    let released = false;
    const first = deferred();
    const second = deferred();
    life.track(first.promise).catch(() => undefined);
    const closed = life.close({ release: () => void (released = true) });
    // The first operation's end starts another (as a drained queue runs its next step).
    void first.promise.then(() => life.track(second.promise));
    first.resolve();
    await settle();
    expect(released).toBe(false);
    second.resolve();
    await closed;
    expect(released).toBe(true);
  });

  it('forgets an operation once it settled: a later close does not wait for anything', async () => {
    const life = new Lifecycle('demo');
    const op = deferred();
    life.track(op.promise).catch(() => undefined);
    op.resolve();
    await op.promise;
    let released = false;
    await life.close({ release: () => void (released = true) });
    expect(released).toBe(true);
  });

  it('runs its timers until close, then never again', async () => {
    vi.useFakeTimers();
    const life = new Lifecycle('demo');
    let ticks = 0;
    life.every(100, () => ticks++);
    vi.advanceTimersByTime(250);
    expect(ticks).toBe(2);
    await life.close({ release: () => {} });
    vi.advanceTimersByTime(1_000);
    expect(ticks).toBe(2);
  });

  it('quietly waits for a promise and swallows its error', async () => {
    await expect(quietly(Promise.reject(new Error('closed already')))).resolves.toBeUndefined();
    await expect(quietly(undefined)).resolves.toBeUndefined();
  });
});
