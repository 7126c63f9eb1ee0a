import type { ConnectionRow, WorkerStats } from '@rill/client';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { mergeWorkers, type NodeStats } from '../src/api/observability.js';
import {
  aggregateMetrics,
  CURSOR_SPAN,
  mergeConnections,
  type ConnectionsAnswer,
  type Gathered,
} from '../src/api/worker-views.js';
import { metric, parseMetrics } from '@rill/testkit/metrics';

/** A worker's registry with a counter, a histogram and per-process gauges, as JSON. */
async function workerRegistry(delivered: number, delays: number[], startTime: number) {
  const r = new Registry();
  new Counter({
    name: 'rill_events_delivered_total',
    help: 'h',
    labelNames: ['transport'],
    registers: [r],
  }).inc({ transport: 'sse' }, delivered);
  const h = new Histogram({
    name: 'rill_delivery_delay_seconds',
    help: 'h',
    buckets: [0.01, 0.1, 1],
    registers: [r],
  });
  for (const d of delays) h.observe(d);
  new Gauge({ name: 'process_start_time_seconds', help: 'h', registers: [r] }).set(startTime);
  new Gauge({ name: 'rill_event_loop_utilization', help: 'h', registers: [r] }).set(0.5);
  new Gauge({
    name: 'rill_storage_used_bytes',
    help: 'h',
    aggregator: 'max',
    registers: [r],
  }).set(4096);
  new Gauge({
    name: 'rill_build_info',
    help: 'h',
    labelNames: ['version'],
    aggregator: 'max',
    registers: [r],
  }).set({ version: '1' }, 1);
  return r.getMetricsAsJSON();
}

describe('the metrics of a node of workers', () => {
  it('sums counters, merges histograms bucket by bucket, labels per-process metrics by worker', async () => {
    const g: Gathered = {
      answers: [
        { worker: 1, body: await workerRegistry(7, [0.005, 0.05], 100) },
        { worker: 2, body: await workerRegistry(5, [0.5], 200) },
      ],
      missing: [3],
    };
    const text = await aggregateMetrics(g, 3).metrics();
    const m = parseMetrics(text);
    expect(metric(m, 'rill_events_delivered_total', { transport: 'sse' })).toBe(12);
    const bucket = (le: string): number => metric(m, 'rill_delivery_delay_seconds_bucket', { le });
    expect([bucket('0.01'), bucket('0.1'), bucket('1'), bucket('+Inf')]).toEqual([1, 2, 3, 3]);
    expect(metric(m, 'rill_delivery_delay_seconds_count')).toBe(3);
    expect(metric(m, 'rill_delivery_delay_seconds_sum')).toBeCloseTo(0.555);
    // Per process: one value per worker, never a sum (nor dropped, as prom-client's own
    // aggregator for the start time would).
    const starts = m.filter((s) => s.name === 'process_start_time_seconds');
    expect(starts.map((s) => [s.labels.worker, s.value])).toEqual([
      ['1', 100],
      ['2', 200],
    ]);
    expect(
      m.filter((s) => s.name === 'rill_event_loop_utilization').map((s) => s.labels.worker),
    ).toEqual(['1', '2']);
    // The one store, once; the build once.
    expect(m.filter((s) => s.name === 'rill_storage_used_bytes')).toEqual([
      { name: 'rill_storage_used_bytes', labels: {}, value: 4096 },
    ]);
    expect(metric(m, 'rill_build_info', { version: '1' })).toBe(1);
    // Summed metrics carry no worker label.
    expect(m.some((s) => s.name.startsWith('rill_events') && 'worker' in s.labels)).toBe(false);
    expect(
      m.filter((s) => s.name === 'rill_worker_up').map((s) => [s.labels.worker, s.value]),
    ).toEqual([
      ['1', 1],
      ['2', 1],
      ['3', 0],
    ]);
  });
});

function stats(worker: number, over: Partial<NodeStats> = {}): WorkerStats {
  return {
    id: `w${worker}`,
    worker,
    startedAt: `2026-01-01T00:00:0${worker}.000Z`,
    uptimeSeconds: 10,
    version: '1',
    engine: {
      name: 'lmdb',
      ok: true,
      pendingAppends: 1,
      storageBytes: 4096,
      storageMaxBytes: null,
    },
    counters: {
      eventsPublished: 1,
      eventsDelivered: 10,
      bytesWritten: 100,
      connectionsOpened: 2,
      connectionsClosed: 1,
      errors: 0,
      limitRefusals: 0,
    },
    rates: { publishedPerSecond: 1, deliveredPerSecond: 10, bytesPerSecond: 100 },
    connections: { sse: 1, ndjson: 0, ws: 0, poll: 0, total: 1 },
    subscriptions: 1,
    slowConsumers: { count: 0, bytesBehind: 0, eventsBehind: 0 },
    subscriberBufferBytes: 0,
    topics: 1,
    deliveryLatencyMs: { p50: null, p99: null },
    eventLoop: { delayP99Ms: worker, utilization: worker / 10 },
    budget: { connections: 1, maxConnections: 1000 },
    ...over,
  };
}

describe('the /v1/stats node of a node of workers', () => {
  it('sums the workers and takes the latency percentiles over all their samples together', () => {
    // Worker 1: 98 deliveries at 1 ms; worker 2: 2 at 100 ms. Over all 100 the p99 is 100 ms
    // and the p50 1 ms; the mean of the workers' p50s would be 50.5 ms.
    const samples = [...Array<number>(98).fill(1), 100, 100];
    const w1 = stats(1, { deliveryLatencyMs: { p50: 1, p99: 1 } });
    const w2 = stats(2, { deliveryLatencyMs: { p50: 100, p99: 100 } });
    const node = mergeWorkers('node-a', [w2, w1], samples, [3]);
    expect(node.id).toBe('node-a');
    expect(node.deliveryLatencyMs).toEqual({ p50: 1, p99: 100 });
    expect(node.counters.eventsDelivered).toBe(20);
    expect(node.connections.total).toBe(2);
    expect(node.engine.storageBytes).toBe(4096);
    expect(node.eventLoop).toEqual({ delayP99Ms: 2, utilization: 0.2 });
    expect(node.startedAt).toBe('2026-01-01T00:00:01.000Z');
    expect(node.workers!.map((w) => w.worker)).toEqual([1, 2]);
    expect(node.missingWorkers).toEqual([3]);
  });

  it("without the samples (another machine's node), the worst worker's latency", () => {
    const w1 = stats(1, { deliveryLatencyMs: { p50: 1, p99: 3 } });
    const w2 = stats(2, { deliveryLatencyMs: { p50: 2, p99: 9 } });
    expect(mergeWorkers('n', [w1, w2], null, []).deliveryLatencyMs).toEqual({ p50: 2, p99: 9 });
  });
});

function row(id: string): ConnectionRow {
  return {
    id,
    transport: 'sse',
    identity: { kind: 'anonymous', sub: null, name: null, credentialId: 'anonymous' },
    address: '127.0.0.1',
    patterns: ['t'],
    topics: 1,
    bufferedBytes: 0,
    live: true,
    state: 'live',
    openedAt: '2026-01-01T00:00:00.000Z',
    ageSeconds: 0,
  };
}

/** A worker's answer as OpenStreams.page gives it: its streams with orders `orders`. */
function worker(
  w: number,
  orders: number[],
  after: { worker: number; after: number },
  limit: number,
): { worker: number; body: ConnectionsAnswer } {
  if (w < after.worker)
    return { worker: w, body: { total: orders.length, rows: [], orders: [], more: false } };
  const from = orders.filter((o) => o > (w === after.worker ? after.after : 0));
  const page = from.slice(0, limit);
  return {
    worker: w,
    body: {
      total: orders.length,
      rows: page.map((o) => row(`req-w${w}-${o}`)),
      orders: page,
      more: from.length > limit,
    },
  };
}

describe('the connections of a node of workers', () => {
  it('pages through every worker in turn, each id once, with the worker on each row', () => {
    const held = new Map([
      [1, [1, 2, 5]],
      [2, [3]],
      [3, [1, 4]],
    ]);
    for (const limit of [1, 2, 3, 4, 10]) {
      const seen: string[] = [];
      let cursor = 0;
      for (let pages = 0; ; pages++) {
        expect(pages).toBeLessThan(10);
        const at = { worker: Math.floor(cursor / CURSOR_SPAN), after: cursor % CURSOR_SPAN };
        const g: Gathered = {
          answers: [...held].map(([w, orders]) => worker(w, orders, at, limit)),
          missing: [],
        };
        const page = mergeConnections(g, limit);
        expect(page.total).toBe(6);
        expect(page.connections.length).toBeLessThanOrEqual(limit);
        for (const c of page.connections) expect(c.id.startsWith(`req-w${c.worker}-`)).toBe(true);
        seen.push(...page.connections.map((c) => c.id));
        if (page.next === null) break;
        cursor = page.next;
      }
      expect(seen).toEqual([
        'req-w1-1',
        'req-w1-2',
        'req-w1-5',
        'req-w2-3',
        'req-w3-1',
        'req-w3-4',
      ]);
    }
  });

  it('names the workers that did not answer, or whose answer is not one', () => {
    const g: Gathered = {
      answers: [worker(1, [1], { worker: 0, after: 0 }, 10), { worker: 2, body: null }],
      missing: [3],
    };
    const page = mergeConnections(g, 10);
    expect(page.missingWorkers).toEqual([2, 3]);
    expect(page.connections.map((c) => c.id)).toEqual(['req-w1-1']);
    expect(page.next).toBeNull();
  });
});
