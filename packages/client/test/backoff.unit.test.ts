/**
 * Reconnect timing, with fake timers and a scripted transport that fails on demand: exponential
 * growth with full jitter, the cap, the server's `retry:` hint, `Retry-After`, reset after a
 * healthy period, and the close-code ranges (4000–4499 reconnect, 4500–4999 stop).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  Backoff,
  backoffDelay,
  RillClient,
  rillError,
  closeCodeRetryable,
  type StateChange,
  type StreamHandlers,
  type Transport,
} from '../src/index.js';

/** A transport whose every connection the test drives through `conns`. */
function scripted(): { transport: Transport; conns: Array<{ h: StreamHandlers; at: number }> } {
  const conns: Array<{ h: StreamHandlers; at: number }> = [];
  return {
    conns,
    transport: (_req, h) => {
      conns.push({ h, at: Date.now() });
      return () => {};
    },
  };
}

describe('backoffDelay', () => {
  it('is random(0, min(cap, base·2^attempt))', () => {
    expect(backoffDelay(0, 100, 10_000, () => 0.999)).toBe(99);
    expect(backoffDelay(3, 100, 10_000, () => 0.5)).toBe(400);
    expect(backoffDelay(10, 100, 10_000, () => 0.5)).toBe(5000);
    expect(backoffDelay(50, 100, 10_000, () => 0.999)).toBe(9990);
    expect(backoffDelay(4, 100, 10_000, () => 0)).toBe(0);
  });
});

describe('Backoff', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('grows, caps, honours a floor and starts over after a healthy period', () => {
    const b = new Backoff({ initialDelay: 100, maxDelay: 1000, healthyAfter: 5000 }, () => 0.5);
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([
      50, 100, 200, 400, 500, 500,
    ]);
    expect(b.next(3000)).toBe(3000);
    b.opened();
    vi.advanceTimersByTime(4999);
    expect(b.next()).toBe(500);
    b.opened();
    vi.advanceTimersByTime(5000);
    expect(b.next()).toBe(50);
    b.hint = 1000;
    expect(b.next()).toBe(500);
  });
});

describe('subscription reconnects', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  function setup(): {
    conns: Array<{ h: StreamHandlers; at: number }>;
    states: StateChange[];
    client: RillClient;
    sub: ReturnType<RillClient['subscribe']>;
  } {
    const { transport, conns } = scripted();
    const client = new RillClient(
      {
        url: 'http://rill.test',
        backoff: { initialDelay: 1000, maxDelay: 8000, healthyAfter: 20_000 },
      },
      { sse: transport },
    );
    const states: StateChange[] = [];
    const sub = client.subscribe('t', { onState: (s) => states.push(s) });
    return { conns, states, client, sub };
  }

  const drop = (h: StreamHandlers, code?: number): void =>
    h.close(
      rillError(
        'connection_failed',
        'cut',
        code === undefined ? { retryable: true } : { closeCode: code },
      ),
    );

  it('waits base·2^n·random between attempts, capped', async () => {
    const { conns, states } = setup();
    await vi.advanceTimersByTimeAsync(0);
    expect(conns).toHaveLength(1);
    const t0 = Date.now();
    for (let i = 0; i < 6; i++) {
      drop(conns.at(-1)!.h);
      const n = conns.length;
      const expected = Math.min(8000, 1000 * 2 ** i) * 0.5;
      await vi.advanceTimersByTimeAsync(expected - 1);
      expect(conns).toHaveLength(n);
      await vi.advanceTimersByTimeAsync(1);
      expect(conns).toHaveLength(n + 1);
    }
    expect(Date.now() - t0).toBe(500 + 1000 + 2000 + 4000 + 4000 + 4000);
    expect(states.map((s) => s.delay)).toEqual([500, 1000, 2000, 4000, 4000, 4000]);
    expect(states.map((s) => s.state)).toEqual(Array(6).fill('connecting'));
  });

  it("uses the server's retry hint as the base, Retry-After as a floor, and resets when healthy", async () => {
    const { conns, states } = setup();
    await vi.advanceTimersByTimeAsync(0);
    conns[0]!.h.open({});
    conns[0]!.h.retry(200);
    drop(conns[0]!.h);
    expect(states.at(-1)).toMatchObject({ state: 'reconnecting', delay: 100, attempt: 1 });
    await vi.advanceTimersByTimeAsync(100);
    expect(conns).toHaveLength(2);
    conns[1]!.h.close(rillError('engine_unavailable', 'down', { status: 503 }), 3000);
    expect(states.at(-1)).toMatchObject({ state: 'reconnecting', delay: 3000 });
    await vi.advanceTimersByTimeAsync(3000);
    expect(conns).toHaveLength(3);
    conns[2]!.h.open({});
    await vi.advanceTimersByTimeAsync(20_000);
    drop(conns[2]!.h);
    expect(states.at(-1)).toMatchObject({ state: 'reconnecting', delay: 100, attempt: 1 });
  });

  it('reconnects on 4000–4499 and 1006, stops on 4500–4999 with the error', async () => {
    const { conns, states, sub } = setup();
    await vi.advanceTimersByTimeAsync(0);
    drop(conns[0]!.h, 4001);
    await vi.advanceTimersByTimeAsync(10_000);
    drop(conns[1]!.h, 1006);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(conns).toHaveLength(3);
    drop(conns[2]!.h, 4502);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(conns).toHaveLength(3);
    expect(sub.state).toBe('closed');
    expect(states.at(-1)).toMatchObject({
      state: 'closed',
      error: { closeCode: 4502, retryable: false },
    });
    await expect(sub[Symbol.asyncIterator]().next()).rejects.toMatchObject({ closeCode: 4502 });
  });

  it('maps close codes to reconnect or stop', () => {
    expect([4000, 4001, 4499, 1000, 1001, 1006, 1011].map(closeCodeRetryable)).toEqual(
      Array(7).fill(true),
    );
    expect([4500, 4999, 1002, 1003, 1007, 1008, 1009].map(closeCodeRetryable)).toEqual(
      Array(7).fill(false),
    );
  });
});
