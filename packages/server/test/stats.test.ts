/**
 * `/v1/stats` and `/v1/stats/stream` (docs/observability.md § /v1/stats): the documented shape,
 * numbers that follow a known workload, the stream's first frame at once and then every second,
 * and, on the redis and nats engines, every node of a cluster with their totals.
 */
import { describe, expect, it } from 'vitest';
import { openSse, publishRange, startServer, useCleanups, waitFor } from '@rill/testkit';
import { dropStreams, SHARED_NATS_URL, uniqueNatsPrefix } from '@rill/testkit/nats';
import { dropPrefix, SHARED_REDIS_URL, uniquePrefix } from '@rill/testkit/redis';
import type { NodeStats, StatsDocument } from '../src/api/observability.js';

const { cleanups } = useCleanups();

async function stats(url: string): Promise<StatsDocument> {
  const res = await fetch(`${url}/v1/stats`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  return (await res.json()) as StatsDocument;
}

const num = expect.any(Number);
const numOrNull = (v: unknown): boolean => v === null || typeof v === 'number';

/** Every field of the dashboard's contract, with its type. */
function expectNodeShape(n: NodeStats): void {
  expect(n).toMatchObject({
    id: expect.any(String),
    startedAt: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
    uptimeSeconds: num,
    version: expect.any(String),
    engine: { name: expect.any(String), ok: expect.any(Boolean), pendingAppends: num },
    counters: {
      eventsPublished: num,
      eventsDelivered: num,
      bytesWritten: num,
      connectionsOpened: num,
      connectionsClosed: num,
      errors: num,
      limitRefusals: num,
    },
    rates: { publishedPerSecond: num, deliveredPerSecond: num, bytesPerSecond: num },
    connections: { sse: num, ndjson: num, ws: num, poll: num, total: num },
    subscriptions: num,
    slowConsumers: { count: num, bytesBehind: num },
    eventLoop: { delayP99Ms: num, utilization: num },
    budget: { connections: num },
  });
  expect(numOrNull(n.engine.storageBytes)).toBe(true);
  expect(numOrNull(n.engine.storageMaxBytes)).toBe(true);
  expect(numOrNull(n.deliveryLatencyMs.p50)).toBe(true);
  expect(numOrNull(n.deliveryLatencyMs.p99)).toBe(true);
  expect(numOrNull(n.budget.maxConnections)).toBe(true);
}

describe('/v1/stats', () => {
  it('has the documented shape and follows a known workload', async () => {
    const s = await startServer({ storage: { maxBytes: '1MiB' } });
    cleanups.push(s.close);
    const before = await stats(s.url);
    expect(before.cluster).toBe(false);
    expectNodeShape(before.node);
    expect(before.nodes).toEqual([before.node]);
    expect(before.totals.counters).toEqual(before.node.counters);
    expect(before.node.engine).toMatchObject({ name: 'memory', ok: true });

    const sse = await openSse(`${s.url}/v1/topics/t/stream`);
    cleanups.push(() => sse.close());
    await publishRange(s.url, 't', 1, 250, 50);
    await sse.until(() => sse.events().length === 250);
    const after = await stats(s.url);
    expect(after.node.counters.eventsPublished).toBe(250);
    expect(after.node.counters.eventsDelivered).toBe(250);
    expect(after.node.counters.bytesWritten).toBeGreaterThan(250 * 20);
    expect(after.node.connections).toEqual({ sse: 1, ndjson: 0, ws: 0, poll: 0, total: 1 });
    expect(after.node.subscriptions).toBe(1);
    expect(after.node.deliveryLatencyMs.p99).not.toBeNull();
    expect(after.node.engine.storageBytes).toBeGreaterThan(0);
    expect(after.node.engine.storageMaxBytes).toBe(1024 * 1024);
    // Rates over the last seconds (once the window is long enough to divide by): the publishes
    // just made show.
    await waitFor(async () => (await stats(s.url)).node.rates.publishedPerSecond > 0, 5_000, 50);
    expect(after.node.budget.connections).toBeGreaterThanOrEqual(1);
  });

  it('streams the same document at once and every second, with the admin permission', async () => {
    const s = await startServer();
    cleanups.push(s.close);
    const t0 = Date.now();
    const stream = await openSse(`${s.url}/v1/stats/stream`);
    cleanups.push(() => stream.close());
    expect(stream.status).toBe(200);
    expect(stream.headers['content-type']).toMatch(/^text\/event-stream/);
    await stream.until((f) => f.filter((x) => x.event === 'stats').length >= 1);
    const first = JSON.parse(
      stream.frames.find((x) => x.event === 'stats')!.data!,
    ) as StatsDocument;
    expectNodeShape(first.node);
    await publishRange(s.url, 'x', 1, 10);
    // A later frame shows the publishes.
    await stream.until((f) =>
      f.some(
        (x) =>
          x.event === 'stats' &&
          (JSON.parse(x.data!) as StatsDocument).node.counters.eventsPublished === 10,
      ),
    );
    const frames = stream.frames.filter((x) => x.event === 'stats').length;
    // About one a second (the first at once): never a burst.
    expect(frames).toBeLessThanOrEqual(Math.ceil((Date.now() - t0) / 1000) + 1);
  });
});

/** Two nodes on one shared engine: each sees both, and the totals add up. */
async function clusterCase(config: Record<string, unknown>): Promise<void> {
  const a = await startServer(config);
  cleanups.push(a.close);
  const b = await startServer(config);
  cleanups.push(b.close);
  const sse = await openSse(`${b.url}/v1/topics/c/stream`);
  cleanups.push(() => sse.close());
  await publishRange(a.url, 'c', 1, 40, 10);
  await sse.until(() => sse.events().length === 40);
  let doc: StatsDocument | undefined;
  // Each node writes its numbers every two seconds: wait for b's latest to be seen from a.
  await waitFor(async () => {
    doc = await stats(a.url);
    const other = doc.nodes.find((n) => n.id !== doc!.node.id);
    return doc.nodes.length === 2 && other?.counters.eventsDelivered === 40;
  }, 20_000);
  const d = doc!;
  expect(d.cluster).toBe(true);
  for (const n of d.nodes) expectNodeShape(n);
  const ids = d.nodes.map((n) => n.id);
  expect(ids).toContain(a.server.obs.id);
  expect(ids).toContain(b.server.obs.id);
  expect(d.node.id).toBe(a.server.obs.id);
  expect(d.node.counters.eventsPublished).toBe(40);
  expect(d.totals.counters.eventsPublished).toBe(40);
  expect(d.totals.counters.eventsDelivered).toBe(40);
  expect(d.totals.connections.sse).toBe(1);
  expect(d.totals.subscriptions).toBe(1);
  // A node that stops drops out of the directory once its entry expires.
  await b.close();
  await waitFor(async () => (await stats(a.url)).nodes.length === 1, 30_000, 500);
}

describe('/v1/stats on a cluster', () => {
  it('lists every node of the redis engine with totals', async () => {
    const prefix = uniquePrefix('stats');
    cleanups.push(() => dropPrefix(SHARED_REDIS_URL, prefix));
    await clusterCase({ engine: 'redis', redis: { url: SHARED_REDIS_URL, prefix } });
  }, 60_000);

  it('lists every node of the nats engine with totals', async () => {
    const prefix = uniqueNatsPrefix('st');
    cleanups.push(() => dropStreams(SHARED_NATS_URL, prefix));
    await clusterCase({ engine: 'nats', nats: { url: SHARED_NATS_URL, prefix } });
  }, 60_000);
});
