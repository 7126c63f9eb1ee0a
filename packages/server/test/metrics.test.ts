/**
 * `/metrics` (docs/observability.md): a known workload over every transport moves the counters by
 * exactly its size, the output passes `promtool check metrics`, the admin permission guards it on
 * a server with authentication, `metrics.port` serves it on its own listener, `metrics.topics`
 * bounds the per-topic series, and the Grafana dashboard only uses metrics that exist.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSse, publishRange, REPO, startServer, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';
import { metric, parseMetrics, promtoolCheck, scrape, type Sample } from '@rill/testkit/metrics';
import { WsClient, wsUrl } from '@rill/testkit/ws';

const { cleanups } = useCleanups();

/** Opens an NDJSON stream and counts its event lines. */
function openNdjson(url: string): Promise<{ count: () => number; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'application/x-ndjson' } }, (res) => {
      let buf = '';
      let n = 0;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n')) !== -1) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim() !== '' && 'seq' in (JSON.parse(line) as object)) n++;
        }
      });
      resolve({ count: () => n, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

/** Long-polls `topic` from the start until `n` events came; resolves with the number of polls. */
async function pollAll(url: string, topic: string, n: number): Promise<number> {
  let cursor: string | undefined;
  let got = 0;
  let polls = 0;
  while (got < n) {
    const q = cursor ? `cursor=${encodeURIComponent(cursor)}` : 'from=earliest';
    const res = await fetch(`${url}/v1/events?topics=${topic}&${q}&limit=300&wait=5`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { events: unknown[]; cursor: string };
    got += body.events.length;
    cursor = body.cursor;
    polls++;
  }
  return polls;
}

describe('/metrics', () => {
  it('counts a known workload exactly, per transport, and passes promtool', async () => {
    const s = await startServer();
    cleanups.push(s.close);
    const url = s.url;
    const before = await scrape(url);
    expect(metric(before, 'rill_events_published_total')).toBe(0);

    const sse = await openSse(`${url}/v1/topics/work/stream`);
    cleanups.push(() => sse.close());
    const nd = await openNdjson(`${url}/v1/topics/work/stream?format=ndjson`);
    cleanups.push(() => nd.close());
    const sub = await WsClient.open(wsUrl(url));
    cleanups.push(() => sub.close());
    await sub.request({ op: 'subscribe', topics: ['work'] });
    const pub = await WsClient.open(wsUrl(url));
    cleanups.push(() => pub.close());

    // 1,000 events: 900 over HTTP in nine requests, 100 over one WebSocket.
    await publishRange(url, 'work', 1, 900, 100);
    for (let i = 0; i < 100; i++) {
      const ack = await pub.request({ op: 'publish', topic: 'work', data: i });
      expect(ack.op).toBe('ack');
    }
    await sse.until(() => sse.events().length === 1000);
    await waitFor(() => nd.count() === 1000);
    await sub.until((m) => m.filter((x) => x.op === 'event').length === 1000);
    const polls = await pollAll(url, 'work', 1000);
    // One refused request per kind of answer: an HTTP 404 and a WebSocket error message.
    expect((await fetch(`${url}/nope`)).status).toBe(404);
    pub.ws.send('not json');
    await pub.until((m) => m.some((x) => x.op === 'error'));

    const text = await (await fetch(`${url}/metrics`)).text();
    const m = parseMetrics(text);
    expect(metric(m, 'rill_events_published_total')).toBe(1000);
    expect(metric(m, 'rill_events_published_total', { transport: 'http' })).toBe(900);
    expect(metric(m, 'rill_events_published_total', { transport: 'ws' })).toBe(100);
    for (const transport of ['sse', 'ndjson', 'ws', 'poll']) {
      expect(metric(m, 'rill_events_delivered_total', { transport }), transport).toBe(1000);
      // Every event is a frame of at least its JSON ({"n":…} or a number) plus the framing.
      expect(metric(m, 'rill_bytes_written_total', { transport }), transport).toBeGreaterThan(
        10_000,
      );
    }
    expect(metric(m, 'rill_publish_duration_seconds_count', { transport: 'http' })).toBe(9);
    expect(metric(m, 'rill_publish_duration_seconds_count', { transport: 'ws' })).toBe(100);
    expect(metric(m, 'rill_engine_append_duration_seconds_count')).toBe(109);
    expect(metric(m, 'rill_engine_read_duration_seconds_count')).toBeGreaterThanOrEqual(polls);
    // Once per flush per topic: at least one sample, at most one per live delivery.
    const delays = metric(m, 'rill_delivery_delay_seconds_count');
    expect(delays).toBeGreaterThan(0);
    expect(delays).toBeLessThanOrEqual(3000);
    expect(metric(m, 'rill_connections_open', { transport: 'sse' })).toBe(1);
    expect(metric(m, 'rill_connections_open', { transport: 'ndjson' })).toBe(1);
    expect(metric(m, 'rill_connections_open', { transport: 'ws' })).toBe(2);
    expect(metric(m, 'rill_connections_opened_total', { transport: 'poll' })).toBe(polls);
    expect(metric(m, 'rill_connections_closed_total', { transport: 'poll' })).toBe(polls);
    expect(metric(m, 'rill_subscriptions_started_total', { start: 'now' })).toBe(3);
    expect(metric(m, 'rill_subscriptions_started_total', { start: 'earliest' })).toBe(1);
    expect(metric(m, 'rill_subscriptions_started_total', { start: 'resume' })).toBe(polls - 1);
    expect(metric(m, 'rill_errors_total', { transport: 'http', code: 'not_found' })).toBe(1);
    expect(metric(m, 'rill_errors_total', { transport: 'ws', code: 'invalid_message' })).toBe(1);
    expect(metric(m, 'rill_subscriptions')).toBe(3);
    expect(metric(m, 'rill_build_info', { engine: 'memory' })).toBe(1);

    const lint = await promtoolCheck(text);
    expect(lint.output).toBe('');
    expect(lint.code).toBe(0);

    // A client going away is a close by the client.
    sse.close();
    await waitFor(async () => {
      const after = await scrape(url);
      return (
        metric(after, 'rill_connections_closed_total', { transport: 'sse', reason: 'client' }) === 1
      );
    });
    expect(metric(await scrape(url), 'rill_connections_open', { transport: 'sse' })).toBe(0);
  });

  it('counts reset notices, limit refusals and the close codes sent', async () => {
    const s = await startServer({ ws: { maxSubscriptions: 1 } });
    cleanups.push(s.close);
    await publishRange(s.url, 'r', 1, 3);
    // A cursor past the head: an `ahead` reset notice before the stream goes on.
    const res = await fetch(`${s.url}/v1/events?topics=r&wait=0`);
    const { cursor } = (await res.json()) as { cursor: string };
    const ahead = cursor.replace(/:3$/, ':50');
    const sse = await openSse(`${s.url}/v1/topics/r/stream`, { 'last-event-id': ahead });
    cleanups.push(() => sse.close());
    await sse.until((f) => f.some((x) => x.event === 'reset'));
    const ws = await WsClient.open(wsUrl(s.url));
    cleanups.push(() => ws.close());
    await ws.request({ op: 'subscribe', topics: ['a'] });
    const refused = await ws.request({ op: 'subscribe', topics: ['b'] });
    expect(refused.error?.code).toBe('too_many_subscriptions');
    const m = await scrape(s.url);
    expect(metric(m, 'rill_resets_total', { reason: 'ahead' })).toBe(1);
    expect(
      metric(m, 'rill_limit_refusals_total', { code: 'too_many_subscriptions', limit: '' }),
    ).toBe(1);
    // Shutdown closes every WebSocket with 4001.
    await s.server.close();
    expect((await ws.closed).code).toBe(4001);
    expect(
      metric(parseMetrics(await s.server.obs.registry!.metrics()), 'rill_ws_close_codes_total', {
        code: '4001',
      }),
    ).toBe(1);
  });

  it('needs the admin permission when authentication is on; auth failures are counted', async () => {
    const admin = apiKey('ops', { admin: true });
    const s = await startServer({ auth: authConfig({ apiKeys: [admin.entry] }) });
    cleanups.push(s.close);
    const user = await sign({ sub: 'u', subscribe: ['>'], publish: ['>'] });
    for (const path of ['/metrics', '/v1/stats']) {
      expect((await fetch(`${s.url}${path}`)).status, path).toBe(401);
      const forbidden = await fetch(`${s.url}${path}`, { headers: bearer(user) });
      expect(forbidden.status, path).toBe(403);
      expect(((await forbidden.json()) as { error: { code: string } }).error.code).toBe(
        'forbidden',
      );
      expect((await fetch(`${s.url}${path}`, { headers: bearer(admin.key) })).status, path).toBe(
        200,
      );
    }
    const adminJwt = await sign({ sub: 'root', admin: true });
    const m = await scrape(s.url, bearer(adminJwt));
    expect(metric(m, 'rill_auth_failures_total', { reason: 'unauthorized' })).toBe(2);
    expect(metric(m, 'rill_auth_failures_total', { reason: 'forbidden' })).toBe(2);
  });

  it('serves /metrics without credentials on metrics.port only', async () => {
    const s = await startServer({
      auth: authConfig(),
      metrics: { port: 0, host: '127.0.0.1' },
    });
    cleanups.push(s.close);
    expect(s.server.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(s.server.metricsUrl).not.toContain(new URL(s.url).port);
    expect((await fetch(`${s.url}/metrics`)).status).toBe(401);
    const m = await scrape(s.server.metricsUrl!);
    expect(metric(m, 'rill_build_info')).toBe(1);
    // Nothing else is served there.
    const other = await fetch(s.server.metricsUrl!.replace('/metrics', '/v1/stats'));
    expect(other.status).toBe(404);
  });

  it('is off with metrics.enabled false', async () => {
    const s = await startServer({ metrics: { enabled: false } });
    cleanups.push(s.close);
    expect((await fetch(`${s.url}/metrics`)).status).toBe(404);
    expect((await fetch(`${s.url}/v1/stats`)).status).toBe(404);
  });

  it('keeps per-topic series only for the topics metrics.topics selects', async () => {
    const s = await startServer({ metrics: { topics: ['orders.*'] } });
    cleanups.push(s.close);
    const sse = await openSse(`${s.url}/v1/stream?topics=orders.*,chat`);
    cleanups.push(() => sse.close());
    await publishRange(s.url, 'orders.eu', 1, 5);
    await publishRange(s.url, 'chat', 1, 7);
    await sse.until(() => sse.events().length === 12);
    const m = await scrape(s.url);
    const topics = new Set(
      m.filter((x) => x.name.startsWith('rill_topic_')).map((x) => x.labels.topic),
    );
    expect([...topics]).toEqual(['orders.eu']);
    expect(metric(m, 'rill_topic_events_published_total', { topic: 'orders.eu' })).toBe(5);
    expect(metric(m, 'rill_topic_events_delivered_total', { topic: 'orders.eu' })).toBe(5);
    expect(metric(m, 'rill_topic_subscribers', { topic: 'orders.eu' })).toBe(1);
    expect(metric(m, 'rill_events_published_total')).toBe(12);
  });

  it('the Grafana dashboard queries only metrics /metrics exposes', async () => {
    const s = await startServer();
    cleanups.push(s.close);
    const names = new Set((await scrape(s.url)).map((x: Sample) => x.name));
    // Histograms and labelled counters appear once observed; their HELP lines name them anyway.
    const text = await (await fetch(`${s.url}/metrics`)).text();
    for (const line of text.split('\n')) {
      const h = /^# TYPE (\S+) (\S+)/.exec(line);
      if (!h) continue;
      names.add(h[1]!);
      if (h[2] === 'histogram') {
        for (const suffix of ['_bucket', '_sum', '_count']) names.add(h[1]! + suffix);
      }
    }
    const dashboard = JSON.parse(
      readFileSync(join(REPO, 'docs/deploy/grafana-dashboard.json'), 'utf8'),
    ) as { panels: Array<{ title: string; targets?: Array<{ expr: string }> }> };
    const used = new Set<string>();
    for (const p of dashboard.panels) {
      for (const t of p.targets ?? []) {
        for (const n of t.expr.match(/\b(rill|nodejs|process)_[a-z0-9_]+/g) ?? []) used.add(n);
      }
    }
    expect(used.size).toBeGreaterThan(15);
    const missing = [...used].filter((n) => !names.has(n));
    expect(missing).toEqual([]);
  });
});
