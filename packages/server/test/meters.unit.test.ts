/** The counters behind /metrics and /v1/stats: classification, recent percentiles, totals. */
import { describe, expect, it } from 'vitest';
import { totalsOf, type NodeStats } from '../src/api/observability.js';
import { DelayProbe } from '../src/fanout/flush-scheduler.js';
import { RillError } from '../src/model/errors.js';
import { LatencyWindow, Meters } from '../src/model/meters.js';

describe('Meters', () => {
  it('counts errors by transport and code, limit refusals by limit, auth failures by reason', () => {
    const m = new Meters();
    m.error(
      'http',
      new RillError('rate_limited', undefined, { details: { limit: 'publishRate' } }),
    );
    m.error('ws', new RillError('rate_limited', undefined, { details: { limit: 'publishRate' } }));
    m.error('http', new RillError('too_many_connections', undefined, { details: { limit: 10 } }));
    m.error('sse', new RillError('overloaded', undefined, { details: { limit: 'x y\n' } }));
    m.error('http', new RillError('forbidden'));
    m.error('http', new RillError('not_found'));
    expect(m.errors.get('http rate_limited')).toBe(1);
    expect(m.errors.get('ws rate_limited')).toBe(1);
    expect(m.limitRefusals.get('rate_limited publishRate')).toBe(2);
    // A numeric limit is a value, not a name; an odd name is not echoed into a label.
    expect(m.limitRefusals.get('too_many_connections ')).toBe(1);
    expect(m.limitRefusals.get('overloaded other')).toBe(1);
    expect(m.authFailures.get('forbidden')).toBe(1);
    expect(m.totals()).toMatchObject({ errors: 6, limitRefusals: 4 });
  });

  it('keeps per-topic meters only for the selected topics, at most MAX_TOPICS', () => {
    expect(new Meters().topic('a')).toBeNull();
    const m = new Meters((t) => t.startsWith('keep.'));
    expect(m.topic('other')).toBeNull();
    const k = m.topic('keep.a')!;
    expect(m.topic('keep.a')).toBe(k);
    m.publishedEvents('http', 'keep.a', 3);
    m.publishedEvents('ws', 'other', 2);
    expect(k.published).toBe(3);
    expect(m.published).toEqual({ http: 3, ws: 2 });
    for (let i = 0; i < Meters.MAX_TOPICS + 10; i++) m.topic(`keep.${i}`);
    expect(m.topics.size).toBe(Meters.MAX_TOPICS);
  });

  it('closes connections by reason and derives the open count', () => {
    const m = new Meters();
    const t = m.transports.sse;
    t.opened += 3;
    t.close('client');
    t.close('token_expired');
    expect(t.open).toBe(1);
    expect([...t.closedBy]).toEqual([
      ['client', 1],
      ['token_expired', 1],
    ]);
  });
});

describe('LatencyWindow', () => {
  it('gives percentiles of the recent samples only', () => {
    const w = new LatencyWindow(100, 10_000);
    expect(w.percentiles([0.5, 0.99], 0)).toEqual([null, null]);
    for (let i = 1; i <= 100; i++) w.add(i, 1_000);
    expect(w.percentiles([0.5, 0.99], 1_000)).toEqual([50, 99]);
    // Older than the window: gone.
    expect(w.percentiles([0.5], 20_000)).toEqual([null]);
    // Bounded: the oldest samples are overwritten.
    for (let i = 0; i < 50; i++) w.add(1_000, 2_000);
    expect(w.percentiles([0.99], 2_000)).toEqual([1_000]);
    expect(w.percentiles([0.25], 2_000)).toEqual([75]);
  });
});

describe('DelayProbe', () => {
  it('records one sample per marked channel per flush, from its first event', () => {
    const samples: number[] = [];
    let now = 1_000;
    const probe = new DelayProbe(
      (ms) => samples.push(ms),
      () => now,
    );
    const a = { delaySince: 900 };
    const b = { delaySince: 990 };
    probe.mark(a);
    probe.mark(b);
    now = 1_010;
    probe.flushed();
    expect(samples).toEqual([110, 20]);
    expect(a.delaySince).toBe(0);
    probe.flushed();
    expect(samples).toHaveLength(2);
  });
});

describe('totalsOf', () => {
  const node = (id: string, over: Partial<NodeStats> = {}): NodeStats => ({
    id,
    startedAt: '2026-01-01T00:00:00.000Z',
    uptimeSeconds: 10,
    version: '1',
    engine: {
      name: 'redis',
      ok: true,
      pendingAppends: 1,
      storageBytes: 100,
      storageMaxBytes: 1000,
    },
    counters: {
      eventsPublished: 1,
      eventsDelivered: 2,
      bytesWritten: 3,
      connectionsOpened: 4,
      connectionsClosed: 5,
      errors: 6,
      limitRefusals: 7,
    },
    rates: { publishedPerSecond: 1, deliveredPerSecond: 2, bytesPerSecond: 3 },
    connections: { sse: 1, ndjson: 0, ws: 2, poll: 0, total: 3 },
    subscriptions: 4,
    slowConsumers: { count: 1, bytesBehind: 10, eventsBehind: 2 },
    subscriberBufferBytes: 5,
    topics: 2,
    deliveryLatencyMs: { p50: 1, p99: 5 },
    eventLoop: { delayP99Ms: 2, utilization: 0.5 },
    budget: { connections: 3, maxConnections: 100 },
    ...over,
  });

  it('sums counts, takes the worst latency, and the shared store once', () => {
    const t = totalsOf(
      [
        node('a'),
        node('b', {
          deliveryLatencyMs: { p50: 3, p99: 40 },
          engine: {
            name: 'redis',
            ok: false,
            pendingAppends: 2,
            storageBytes: 120,
            storageMaxBytes: 1000,
          },
        }),
      ],
      true,
    );
    expect(t.counters.eventsPublished).toBe(2);
    expect(t.counters.limitRefusals).toBe(14);
    expect(t.rates.bytesPerSecond).toBe(6);
    expect(t.connections).toEqual({ sse: 2, ndjson: 0, ws: 4, poll: 0, total: 6 });
    expect(t.deliveryLatencyMs).toEqual({ p50: 3, p99: 40 });
    expect(t.engine).toMatchObject({
      ok: false,
      pendingAppends: 3,
      storageBytes: 120,
      storageMaxBytes: 1000,
    });
    expect(t.budget).toEqual({ connections: 6, maxConnections: 200 });
    expect(t.slowConsumers).toEqual({ count: 2, bytesBehind: 20, eventsBehind: 4 });
  });
});
