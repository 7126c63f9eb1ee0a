import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Engine, ReadResult } from '../src/engine/engine.js';
import { MemoryEngine } from '../src/engine/memory.js';
import { FlushScheduler } from '../src/fanout/flush-scheduler.js';
import type { Flushable } from '../src/fanout/flush-scheduler.js';
import { Hub } from '../src/fanout/hub.js';
import type { HubLimits } from '../src/fanout/hub.js';
import type { ResetNotice, Sink } from '../src/fanout/sink.js';
import type { SubscribeOptions, Subscription } from '../src/fanout/subscription.js';
import type { RillError } from '../src/model/errors.js';
import type { EventInput, RillEvent } from '../src/model/event.js';

/**
 * The fan-out core on its own: a hub over the memory engine feeding fake sinks. No sockets, no
 * timers of the test's own: every wait is for a condition a sink call makes true.
 */

const LIMITS: HubLimits = {
  maxSubscriberBufferBytes: 64 * 1024,
  replayBatch: 100,
  maxTopicsPerSubscription: 100,
  maxCursorTopics: 50,
};

/** One delivered frame, as the fake sink frames it. */
interface Got {
  topic: string;
  seq: number;
}

/**
 * A sink that records what it is given. Frames are `topic:seq;` (resets `!topic:seq;`), so a
 * write's content says exactly which events it carried. `buffered` is the backpressure it reports.
 */
class FakeSink implements Sink {
  readonly writes: string[] = [];
  readonly got: Got[] = [];
  readonly resets: ResetNotice[] = [];
  buffered = 0;
  ended: RillError | 'clean' | null = null;
  heartbeats = 0;
  /** Called after each write is recorded (an owner reacting to a write, in the same tick). */
  onWrite: ((chunk: string) => void) | null = null;
  private drainWaiters: Array<() => void> = [];
  private conditions: Array<{ check: () => boolean; resolve: () => void }> = [];

  frameEvent(ev: RillEvent): string {
    return `${ev.topic}:${ev.seq};`;
  }

  frameReset(n: ResetNotice): string {
    this.resets.push(n);
    return `!${n.topic}:${n.seq};`;
  }

  bytesWritten = 0;

  write(chunk: string): void {
    this.bytesWritten += Buffer.byteLength(chunk);
    this.writes.push(chunk);
    for (const frame of chunk.split(';')) {
      if (frame === '' || frame.startsWith('!')) continue;
      const i = frame.lastIndexOf(':');
      this.got.push({ topic: frame.slice(0, i), seq: Number(frame.slice(i + 1)) });
    }
    this.onWrite?.(chunk);
    this.check();
  }

  bufferedBytes(): number {
    return this.buffered;
  }

  waitDrain(): Promise<void> {
    if (this.ended) return Promise.resolve();
    const p = new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    this.check();
    return p;
  }

  /** The socket took everything: no backpressure, drain waiters released. */
  drain(): void {
    this.buffered = 0;
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of w) resolve();
  }

  get waitingForDrain(): boolean {
    return this.drainWaiters.length > 0;
  }

  heartbeat(): void {
    this.heartbeats++;
  }

  end(error?: RillError): void {
    this.ended = error ?? 'clean';
    this.drain();
    this.check();
  }

  /** The seqs of `topic` delivered so far, in order. */
  seqs(topic: string): number[] {
    return this.got.filter((g) => g.topic === topic).map((g) => g.seq);
  }

  /**
   * Resolves once `check` holds (tested now and after every call that changes the sink). Fails
   * after a while, with what the sink got, instead of leaving a broken test hanging.
   */
  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const got = this.got.map((g) => `${g.topic}:${g.seq}`).join(' ');
        reject(new Error(`condition not met; got ${got || 'nothing'}`));
      }, 5_000);
      this.conditions.push({
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  private check(): void {
    this.conditions = this.conditions.filter((c) => {
      if (!c.check()) return true;
      c.resolve();
      return false;
    });
  }
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

const inputs = (n: number, tag = 'x'): EventInput[] =>
  Array.from({ length: n }, (_, i) => ({ data: JSON.stringify(`${tag}${i}`) }));

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0).reverse()) c();
});

function setUp(
  engine: Engine = new MemoryEngine(),
  limits: HubLimits = LIMITS,
): { engine: Engine; hub: Hub } {
  const hub = new Hub(engine, { limits, heartbeatMs: 60_000 });
  closers.push(
    () => void engine.close(),
    () => hub.close(),
  );
  return { engine, hub };
}

/**
 * Subscribes and resolves once every topic of the subscription is on the live path (at once for
 * a pattern that matches no topic yet).
 */
async function subscribeLive(
  hub: Hub,
  sink: FakeSink,
  options: Omit<SubscribeOptions, 'onCaughtUp'>,
): Promise<Subscription> {
  let caughtUp!: () => void;
  const live = new Promise<void>((resolve) => (caughtUp = resolve));
  const sub = await hub.subscribe(sink, { ...options, onCaughtUp: () => caughtUp() });
  if (sub.states.size > 0) await live;
  return sub;
}

describe('hub: order', () => {
  it('hands every subscriber each topic in seq order, once, across interleaved publishes', async () => {
    const { engine, hub } = setUp();
    const one = new FakeSink();
    const both = new FakeSink();
    const pattern = new FakeSink();
    await subscribeLive(hub, one, { patterns: ['a'], start: { kind: 'now' } });
    await subscribeLive(hub, both, { patterns: ['a', 'b'], start: { kind: 'now' } });
    await subscribeLive(hub, pattern, { patterns: ['>'], start: { kind: 'now' } });

    // Batches of different sizes to both topics, all in flight at once.
    const appends: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      appends.push(engine.append('a', inputs((i % 5) + 1)));
      appends.push(engine.append('b', inputs((i % 3) + 1)));
    }
    await Promise.all(appends);
    const total = { a: 120, b: 79 };

    const done = (s: FakeSink, topics: Array<'a' | 'b'>): boolean =>
      topics.every((t) => s.seqs(t).length >= total[t]);
    await one.until(() => done(one, ['a']));
    await both.until(() => done(both, ['a', 'b']));
    await pattern.until(() => done(pattern, ['a', 'b']));

    expect(one.seqs('a')).toEqual(range(1, total.a));
    expect(one.seqs('b')).toEqual([]);
    for (const s of [both, pattern]) {
      expect(s.seqs('a')).toEqual(range(1, total.a));
      expect(s.seqs('b')).toEqual(range(1, total.b));
    }
    // Coalesced: far fewer writes than events (one per flush, not one per event).
    expect(one.writes.length).toBeLessThan(total.a);
  });

  it('writes a batch published at once as one chunk per subscriber', async () => {
    const { engine, hub } = setUp();
    const sinks = [new FakeSink(), new FakeSink(), new FakeSink()];
    for (const s of sinks) await subscribeLive(hub, s, { patterns: ['a'], start: { kind: 'now' } });
    await engine.append('a', inputs(10));
    for (const s of sinks) {
      await s.until(() => s.got.length === 10);
      expect(s.writes).toEqual([
        range(1, 10)
          .map((n) => `a:${n};`)
          .join(''),
      ]);
    }
  });
});

/**
 * The memory engine, with a hook after each read: what runs there lands after the page was taken
 * from the log but before the subscription has looked at it.
 */
class HookedEngine extends MemoryEngine {
  /** Told the topic and whether the page was full (`limit` events: more may follow). */
  afterRead: ((topic: string, full: boolean) => void) | null = null;
  reads = 0;

  override async read(topic: string, afterSeq: number, limit: number): Promise<ReadResult> {
    const r = await super.read(topic, afterSeq, limit);
    this.reads++;
    this.afterRead?.(topic, r.events.length === limit);
    return r;
  }
}

describe('hub: catch-up → live', () => {
  it('loses and repeats nothing when events land during every replay step', async () => {
    const engine = new HookedEngine();
    const { hub } = setUp(engine);
    await engine.append('a', inputs(250));
    // Reads are followed by more events: the channel sees them while the subscription is off the
    // live path. Most of all right after a short page, where the subscription would go live if it
    // did not check that the page reached what the feed has shown.
    let extra = 60;
    engine.afterRead = (topic, full) => {
      const n = Math.min(extra, full ? 1 : 3);
      extra -= n;
      if (n > 0) void engine.append(topic, inputs(n, 'late'));
    };
    const sink = new FakeSink();
    const sub = await subscribeLive(hub, sink, {
      patterns: ['a'],
      start: { kind: 'earliest' },
      replayBatch: 7,
    });
    expect(extra).toBe(0);
    await sink.until(() => sink.got.length >= 310);

    // Live now: the next events come through the channel, not a read.
    engine.afterRead = null;
    const readsBefore = engine.reads;
    await engine.append('a', inputs(5, 'live'));
    await sink.until(() => sink.got.length >= 315);
    expect(engine.reads).toBe(readsBefore);

    expect(sink.seqs('a')).toEqual(range(1, 315));
    expect(sink.resets).toEqual([]);
    expect(sub.cursor()).toMatch(/^a:[^:]+:315$/);
  });

  it('takes a multi-topic subscription live topic by topic without a gap', async () => {
    const engine = new HookedEngine();
    const { hub } = setUp(engine);
    await engine.append('a', inputs(40));
    await engine.append('b', inputs(15));
    let added = 0;
    engine.afterRead = (topic) => {
      if (added >= 12) return;
      added++;
      void engine.append(topic === 'a' ? 'b' : 'a', inputs(1, 'late'));
    };
    const sink = new FakeSink();
    await subscribeLive(hub, sink, {
      patterns: ['a', 'b'],
      start: { kind: 'earliest' },
      replayBatch: 4,
    });
    engine.afterRead = null;
    expect(added).toBe(12);
    const heads = { a: (await engine.head('a'))!.lastSeq, b: (await engine.head('b'))!.lastSeq };
    expect(heads.a + heads.b).toBe(40 + 15 + 12);
    await engine.append('a', inputs(2, 'live'));
    await engine.append('b', inputs(2, 'live'));
    await sink.until(() => sink.got.length >= heads.a + heads.b + 4);
    expect(sink.seqs('a')).toEqual(range(1, heads.a + 2));
    expect(sink.seqs('b')).toEqual(range(1, heads.b + 2));
  });
});

describe('hub: slow consumer', () => {
  it('takes a backpressured subscriber off the live path, then replays from the log into room', async () => {
    const limits = { ...LIMITS, maxSubscriberBufferBytes: 400, replayBatch: 50 };
    const { engine, hub } = setUp(new MemoryEngine(), limits);
    const slow = new FakeSink();
    const fast = new FakeSink();
    await subscribeLive(hub, slow, { patterns: ['a'], start: { kind: 'now' } });
    await subscribeLive(hub, fast, { patterns: ['a'], start: { kind: 'now' } });

    await engine.append('a', inputs(5));
    await slow.until(() => slow.got.length === 5);
    // The socket stops taking bytes: over the bound, the subscriber leaves the live path and its
    // catch-up waits for a drain instead of queueing.
    slow.buffered = 10_000;
    for (let i = 0; i < 20; i++) await engine.append('a', inputs(10));
    await fast.until(() => fast.got.length === 205);
    await slow.until(() => slow.waitingForDrain);
    const whileStuck = slow.got.length;
    expect(whileStuck).toBeLessThan(205);

    // More events while it waits: none is queued for it.
    await engine.append('a', inputs(10));
    await fast.until(() => fast.got.length === 215);
    expect(slow.got.length).toBe(whileStuck);

    slow.drain();
    await slow.until(() => slow.got.length === 215);
    expect(slow.seqs('a')).toEqual(range(1, 215));
    expect(fast.seqs('a')).toEqual(range(1, 215));
    // Replayed in bounded steps: no write much over the bound (one frame past it at most).
    for (const w of slow.writes) expect(w.length).toBeLessThanOrEqual(400 + 'a:215;'.length);
    expect(slow.ended).toBeNull();

    // And back on the live path.
    await engine.append('a', inputs(3));
    await slow.until(() => slow.got.length === 218);
    expect(slow.seqs('a')).toEqual(range(1, 218));
  });
});

describe('hub: unsubscribe during a flush', () => {
  it('drops what was queued for a subscription ended earlier in the same flush', async () => {
    const { engine, hub } = setUp();
    const first = new FakeSink();
    const second = new FakeSink();
    const third = new FakeSink();
    await subscribeLive(hub, first, { patterns: ['a'], start: { kind: 'now' } });
    const secondSub = await subscribeLive(hub, second, { patterns: ['a'], start: { kind: 'now' } });
    await subscribeLive(hub, third, { patterns: ['a'], start: { kind: 'now' } });

    // The first socket's write makes its owner end the second subscription (say, both belong to
    // one connection that just closed), while the second's frames are queued for this flush.
    first.onWrite = () => {
      first.onWrite = null;
      hub.unsubscribe(secondSub);
    };
    await engine.append('a', inputs(3));
    await third.until(() => third.got.length === 3);
    expect(first.seqs('a')).toEqual([1, 2, 3]);
    expect(second.writes).toEqual([]);
    expect(third.seqs('a')).toEqual([1, 2, 3]);

    await engine.append('a', inputs(2));
    await third.until(() => third.got.length === 5);
    expect(first.seqs('a')).toEqual([1, 2, 3, 4, 5]);
    expect(second.writes).toEqual([]);
    expect(hub.size).toBe(2);
  });

  it('stops a subscription that its own owner ends from inside a flush, and closes idle channels', async () => {
    const { engine, hub } = setUp();
    const sinks = [new FakeSink(), new FakeSink()];
    const subs: Subscription[] = [];
    for (const s of sinks)
      subs.push(await subscribeLive(hub, s, { patterns: ['a'], start: { kind: 'now' } }));
    for (const [i, s] of sinks.entries()) s.onWrite = () => hub.unsubscribe(subs[i]!);
    expect(hub.channelCount).toBe(1);

    await engine.append('a', inputs(2));
    await sinks[1]!.until(() => sinks[1]!.got.length === 2);
    expect(hub.size).toBe(0);
    expect(hub.channelCount).toBe(0);

    // A later subscriber's flush would carry anything still queued for the ended ones.
    const later = new FakeSink();
    await subscribeLive(hub, later, { patterns: ['a'], start: { kind: 'now' } });
    await engine.append('a', inputs(2));
    await later.until(() => later.got.length === 2);
    expect(later.seqs('a')).toEqual([3, 4]);
    for (const s of sinks) expect(s.seqs('a')).toEqual([1, 2]);
  });

  it('stops at once when the sink takes nothing more (write returns false)', async () => {
    const { engine, hub } = setUp();
    const page = new (class extends FakeSink {
      override write(chunk: string): boolean {
        super.write(chunk);
        return false;
      }
    })();
    const sub = await subscribeLive(hub, page, { patterns: ['a'], start: { kind: 'now' } });
    const other = new FakeSink();
    await subscribeLive(hub, other, { patterns: ['a'], start: { kind: 'now' } });
    await engine.append('a', inputs(2));
    await page.until(() => page.got.length === 2);
    expect(sub.closed).toBe(true);

    // Stopped within the write: its cursor stays where the write ended, whatever comes next
    // (the memory engine hands events to the channel within the append).
    await engine.append('a', inputs(4));
    expect(sub.cursor()).toMatch(/^a:[^:]+:2$/);
    await other.until(() => other.got.length === 6);
    expect(page.writes).toHaveLength(1);
    // Still the hub's until its owner ends it, outside the write.
    expect(hub.size).toBe(2);
    hub.unsubscribe(sub);
    expect(hub.size).toBe(1);
  });
});

describe('hub: patterns', () => {
  it('picks up topics created after the subscription, from their first event', async () => {
    const { engine, hub } = setUp();
    await engine.append('orders.old', inputs(2));
    await engine.append('other.x', inputs(1));
    const sink = new FakeSink();
    await subscribeLive(hub, sink, { patterns: ['orders.*'], start: { kind: 'now' } });

    await engine.append('orders.eu', inputs(3));
    await engine.append('other.y', inputs(3));
    await engine.append('orders.us', inputs(1));
    await engine.append('orders.eu', inputs(2));
    await engine.append('orders.old', inputs(1));
    await sink.until(() => sink.got.length >= 7);

    expect(sink.seqs('orders.eu')).toEqual([1, 2, 3, 4, 5]);
    expect(sink.seqs('orders.us')).toEqual([1]);
    // An existing topic from `now`: only what came after the subscription started.
    expect(sink.seqs('orders.old')).toEqual([3]);
    expect(sink.got.filter((g) => g.topic.startsWith('other.'))).toEqual([]);
  });
});

describe('flush pacing', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Flushed names, and a subscription whose flush takes `ms` and writes `frames` frames. */
  function setup(): {
    scheduler: FlushScheduler;
    flushed: string[];
    item: (name: string, ms: number, frames: number) => Flushable;
    clock: { now: number };
  } {
    vi.useFakeTimers({ toFake: ['setTimeout', 'setImmediate'] });
    const clock = { now: 1_000 };
    const scheduler = new FlushScheduler(10, () => clock.now);
    const flushed: string[] = [];
    const item = (name: string, ms: number, frames: number): Flushable => ({
      flush: () => {
        flushed.push(name);
        clock.now += ms;
        return frames;
      },
    });
    return { scheduler, flushed, item, clock };
  }

  it('flushes everything marked in a tick together; the next flush waits as long as the last took', () => {
    const { scheduler, flushed, item, clock } = setup();
    // Three frames per socket: events arrive faster than they are written (under load).
    const a = item('a', 4, 3);
    const b = item('b', 0, 3);
    const slow = item('slow', 30, 3);

    scheduler.markDirty(a);
    scheduler.markDirty(b);
    expect(flushed).toEqual([]);
    vi.advanceTimersByTime(0);
    expect(flushed).toEqual(['a', 'b']);

    // That flush took 4 ms: the next one comes 4 ms after it ended, batching what arrives.
    scheduler.markDirty(b);
    vi.advanceTimersByTime(3);
    expect(flushed).toEqual(['a', 'b']);
    vi.advanceTimersByTime(1);
    expect(flushed).toEqual(['a', 'b', 'b']);

    // A quick flush adds no delay; a long one delays the next by at most 10 ms.
    scheduler.markDirty(slow);
    vi.advanceTimersByTime(0);
    expect(flushed).toEqual(['a', 'b', 'b', 'slow']);
    scheduler.markDirty(b);
    vi.advanceTimersByTime(9);
    expect(flushed).toHaveLength(4);
    vi.advanceTimersByTime(1);
    expect(flushed).toHaveLength(5);

    // Long after the last flush: at once (next tick).
    clock.now += 1_000;
    scheduler.markDirty(a);
    vi.advanceTimersByTime(0);
    expect(flushed).toHaveLength(6);
  });
});
