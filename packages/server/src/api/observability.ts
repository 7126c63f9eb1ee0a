import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';
import type { EventLoopUtilization } from 'node:perf_hooks';
import {
  type Aggregator,
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type Histogram as PromHistogram,
} from 'prom-client';
import type { RillConfig } from '../config.js';
import {
  hasHealthCheck,
  hasNodeDirectory,
  hasStorageReport,
  type Engine,
} from '../engine/engine.js';
import type { Hub } from '../fanout/hub.js';
import { HOOK_NAMES, HOOK_OUTCOMES, type HookMeter } from '../hooks/index.js';
import type { NodeStats, StatsDocument, WorkerStats } from '@rill/client';
import {
  EngineMeter,
  Meters,
  percentilesOf,
  PUBLISH_TRANSPORTS,
  TRANSPORTS,
} from '../model/meters.js';
import { compilePattern } from '../model/topic.js';
import type { ConnectionBudget } from '../net/capacity.js';
import {
  aggregateMetrics,
  statsAnswers,
  type WorkerPeers,
  type WorkerStatsAnswer,
} from './worker-views.js';

/**
 * Metrics and stats (docs/observability.md): the counters the server keeps ({@link Meters},
 * {@link EngineMeter}), the Prometheus registry that reads them at scrape time, and the
 * `/v1/stats` snapshot with its rates, recent latencies and, on the shared engines, every node's
 * numbers through the engine's node directory. With `--workers`, each view covers every worker of
 * the node (api/worker-views.ts).
 */

/** The `/v1/stats` shapes (the dashboard's contract: add, never rename) live in @rill/client. */
export type { NodeStats, StatsDocument, WorkerStats };

/** How often a node writes its numbers to the node directory, and how long they stay, ms. */
const NODE_PUBLISH_MS = 2_000;
const NODE_TTL_MS = 10_000;
/** Longest `/v1/stats` waits for the node directory before answering with this node only, ms. */
const NODE_LIST_WAIT_MS = 2_000;
/** Rates are taken over about this long, ms. */
const RATE_WINDOW_MS = 5_000;

/** Latency buckets, seconds: a millisecond to ten seconds. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Catch-up buckets, seconds: catch-ups last from milliseconds to minutes. */
const CATCHUP_BUCKETS = [0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * prom-client's default metrics left out: gauges named like counters, which `promtool check
 * metrics` refuses, and the ones whose every scrape costs time in proportion to the open
 * connections (listing every handle, every resource, every file descriptor): with 1,000 streams
 * they were most of a scrape's 10 ms, and they would be seconds with 100,000. The connections are
 * in `rill_connections_open` and `rill_connection_budget_used` instead.
 */
const DROPPED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
  'nodejs_active_handles',
  'nodejs_active_requests',
  'nodejs_active_resources',
  'process_open_fds',
];

/** The event-loop delay monitor's sampling interval, ms. */
const LOOP_RESOLUTION_MS = 10;

/**
 * A sample of the delay monitor (ns) as the delay past the sampling interval, ms: the monitor
 * records the whole time between two of its timer's runs, the interval included.
 */
function loopDelayMs(ns: number): number {
  return Number.isFinite(ns) ? Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS) : 0;
}

function readVersion(): string {
  try {
    const pkg = JSON.parse(
      readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** A node id: the host name, the process id and a random suffix, in characters every broker takes. */
export function newNodeId(): string {
  const host =
    hostname()
      .replace(/[^A-Za-z0-9_-]/g, '-')
      .slice(0, 40) || 'node';
  return `${host}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

export interface ObservabilityOptions {
  config: RillConfig;
  /** The engine as the server uses it (instrumented). */
  engine: Engine;
  budget: ConnectionBudget;
  /** With `rill serve --workers`: the other workers of this node, whose numbers the views add. */
  workers?: WorkerPeers;
}

/**
 * A worker's entry in the node directory: its own numbers, with its id and its node's (so that a
 * reader shows one node per `rill serve`, with its workers).
 */
type DirectoryEntry = NodeStats & { worker?: number; node?: string };

/** Longest a worker's `stats` answer waits for a fresh engine reading, ms (under the gather's bound). */
const WORKER_REFRESH_WAIT_MS = 400;

/**
 * The per-server observability state. Create it before the hub (which takes {@link meters}), then
 * {@link attach} the hub; {@link start} begins the samplers, {@link close} stops them.
 */
export class Observability {
  readonly meters: Meters;
  readonly engineMeter = new EngineMeter();
  readonly enabled: boolean;
  readonly registry: Registry | null;
  readonly id = newNodeId();
  private readonly workers: WorkerPeers | null;
  readonly version = readVersion();
  private readonly startedAt = Date.now();
  private hub: Hub | null = null;
  private readonly engine: Engine;
  private readonly budget: ConnectionBudget;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly loopDelay: IntervalHistogram | null;
  private loopDelayP99Ms = 0;
  private loopTicks = 0;
  private elu: EventLoopUtilization | null = null;
  private utilization = 0;
  /** Totals once a second, for the rates. */
  private readonly samples: { t: number; published: number; delivered: number; bytes: number }[] =
    [];
  private engineOk = true;
  private storage: { usedBytes: number | null; maxBytes: number | null } = {
    usedBytes: null,
    maxBytes: null,
  };
  private refreshing: Promise<void> | null = null;
  /** Publish durations by transport (children of one histogram), when metrics are on. */
  readonly publishDuration: Record<'http' | 'ws', { observe(v: number): void }> | null;

  constructor(options: ObservabilityOptions) {
    const { config } = options;
    this.engine = options.engine;
    this.budget = options.budget;
    this.workers = options.workers ?? null;
    this.enabled = config.metrics.enabled;
    const patterns = config.metrics.topics.map(compilePattern);
    this.meters = new Meters(
      patterns.length === 0 ? null : (t) => patterns.some((matches) => matches(t)),
    );
    if (!this.enabled) {
      this.registry = null;
      this.loopDelay = null;
      this.publishDuration = null;
      return;
    }
    this.loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
    this.registry = new Registry();
    const h = this.histograms(this.registry);
    this.publishDuration = {
      http: h.publish.labels({ transport: 'http' }),
      ws: h.publish.labels({ transport: 'ws' }),
    };
    this.meters.onDeliveryDelay = (s) => h.delivery.observe(s);
    this.meters.onCatchUp = (s) => h.catchUp.observe(s);
    this.engineMeter.onAppend = (s) => h.append.observe(s);
    this.engineMeter.onRead = (s) => h.read.observe(s);
    this.counters(this.registry);
    this.gauges(this.registry);
    collectDefaultMetrics({ register: this.registry });
    for (const name of DROPPED_DEFAULTS) this.registry.removeSingleMetric(name);
    if (this.workers !== null) {
      const registry = this.registry;
      this.workers.answer('metrics', () => registry.getMetricsAsJSON());
      this.workers.answer('stats', async (): Promise<WorkerStatsAnswer> => {
        await withTimeout(this.freshEngine(), WORKER_REFRESH_WAIT_MS).catch(() => undefined);
        const now = Date.now();
        return { stats: this.workerStats(), samples: this.meters.deliveryLatency.recent(now) };
      });
    }
  }

  /** The Prometheus text of `/metrics`: this process's, or with workers the node's (all of them). */
  async metricsText(): Promise<string> {
    const registry = this.registry;
    if (registry === null) return '';
    if (this.workers === null) return registry.metrics();
    const gathered = await this.workers.gather('metrics');
    return aggregateMetrics(gathered, this.workers.count).metrics();
  }

  /**
   * The backend hooks' meter: `rill_hook_calls_total{hook,outcome}`, read at scrape time, and
   * `rill_hook_duration_seconds{hook}`, observed per call.
   */
  attachHooks(meter: HookMeter): void {
    const registry = this.registry;
    if (registry === null) return;
    new Counter<'hook' | 'outcome'>({
      name: 'rill_hook_calls_total',
      help: 'Backend hook calls, by hook (connect, subscribe, publish) and outcome (allow, deny, timeout, error)',
      labelNames: ['hook', 'outcome'],
      registers: [registry],
      collect() {
        this.reset();
        for (const h of HOOK_NAMES) {
          for (const o of HOOK_OUTCOMES) this.inc({ hook: h, outcome: o }, meter.calls[h][o]);
        }
      },
    });
    new Counter<'hook'>({
      name: 'rill_hook_cached_total',
      help: 'Backend hook decisions taken from a cache instead of a call, by hook',
      labelNames: ['hook'],
      registers: [registry],
      collect() {
        this.reset();
        for (const h of HOOK_NAMES) this.inc({ hook: h }, meter.cached[h]);
      },
    });
    const duration = new Histogram<'hook'>({
      name: 'rill_hook_duration_seconds',
      help: 'Backend hook calls, from the request to the decision (or the failure), by hook',
      labelNames: ['hook'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    const byHook = Object.fromEntries(HOOK_NAMES.map((h) => [h, duration.labels({ hook: h })]));
    meter.onDuration = (hook, seconds) => byHook[hook]!.observe(seconds);
  }

  /** The hub whose subscriptions the saturation gauges read. */
  attach(hub: Hub): void {
    this.hub = hub;
  }

  /** Starts the samplers (rates, event loop, engine health and storage, the node directory). */
  start(): void {
    if (!this.enabled) return;
    this.loopDelay?.enable();
    this.elu = performance.eventLoopUtilization();
    this.sample();
    this.every(1000, () => this.sample());
    this.every(NODE_PUBLISH_MS, () => void this.sampleSlow());
    void this.sampleSlow();
  }

  close(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
    this.loopDelay?.disable();
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  /** Once a second: the totals for the rates, event-loop utilization and delay. */
  private sample(): void {
    const now = Date.now();
    const t = this.meters.totals();
    this.samples.push({ t: now, published: t.published, delivered: t.delivered, bytes: t.bytes });
    while (this.samples.length > 2 && now - this.samples[1]!.t >= RATE_WINDOW_MS) {
      this.samples.shift();
    }
    if (this.elu) {
      const next = performance.eventLoopUtilization();
      this.utilization = performance.eventLoopUtilization(next, this.elu).utilization;
      this.elu = next;
    }
    if (this.loopDelay && ++this.loopTicks % 5 === 0) {
      this.loopDelayP99Ms = loopDelayMs(this.loopDelay.percentile(99));
      this.loopDelay.reset();
    }
  }

  /** Every two seconds: engine health and storage, and this node's entry in the directory. */
  private async sampleSlow(): Promise<void> {
    await this.refreshEngine();
    const engine = this.engine;
    if (hasNodeDirectory(engine)) {
      const entry: DirectoryEntry =
        this.workers === null
          ? this.nodeStats()
          : { ...this.workerStats(), node: this.workers.nodeId };
      await engine.putNode(this.id, JSON.stringify(entry), NODE_TTL_MS).catch(() => {
        // The broker is away: the engine logs that; the node drops out of the directory.
      });
    }
  }

  /** Reads the engine's health and storage use again (one read at a time, shared). */
  private refreshEngine(): Promise<void> {
    this.refreshing ??= (async () => {
      const engine = this.engine;
      try {
        if (hasHealthCheck(engine)) {
          this.engineOk = await engine.health().then(
            (h) => h.ok,
            () => false,
          );
        }
        if (hasStorageReport(engine)) {
          this.storage = await engine.storageUsage().catch(() => ({
            usedBytes: null,
            maxBytes: null,
          }));
        }
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  private rates(): NodeStats['rates'] {
    const now = Date.now();
    const t = this.meters.totals();
    const first = this.samples[0];
    if (!first || now - first.t < 200) {
      return { publishedPerSecond: 0, deliveredPerSecond: 0, bytesPerSecond: 0 };
    }
    const s = (now - first.t) / 1000;
    const r = (n: number): number => Math.round((n / s) * 10) / 10;
    return {
      publishedPerSecond: r(t.published - first.published),
      deliveredPerSecond: r(t.delivered - first.delivered),
      bytesPerSecond: r(t.bytes - first.bytes),
    };
  }

  /** This worker's numbers now (its node's are the sum of its workers'). */
  private workerStats(): WorkerStats {
    return { ...this.nodeStats(), worker: this.workers?.id ?? 1 };
  }

  /** This process's numbers now. */
  nodeStats(): NodeStats {
    const now = Date.now();
    const m = this.meters;
    const t = m.totals();
    const tr = m.transports;
    const sat = this.hub?.saturation() ?? {
      subscriptions: 0,
      channels: 0,
      behind: 0,
      behindEvents: 0,
      bufferedBytes: 0,
    };
    const [p50, p99] = m.deliveryLatency.percentiles([0.5, 0.99], now);
    const open = {
      sse: tr.sse.open,
      ndjson: tr.ndjson.open,
      ws: tr.ws.open,
      poll: tr.poll.open,
    };
    return {
      id: this.id,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeSeconds: Math.floor((now - this.startedAt) / 1000),
      version: this.version,
      engine: {
        name: this.engine.name,
        ok: this.engineOk,
        pendingAppends: this.engineMeter.pendingAppends,
        storageBytes: this.storage.usedBytes,
        storageMaxBytes: this.storage.maxBytes,
      },
      counters: {
        eventsPublished: t.published,
        eventsDelivered: t.delivered,
        bytesWritten: t.bytes,
        connectionsOpened: t.opened,
        connectionsClosed: t.closed,
        errors: t.errors,
        limitRefusals: t.limitRefusals,
      },
      rates: this.rates(),
      connections: { ...open, total: open.sse + open.ndjson + open.ws + open.poll },
      subscriptions: sat.subscriptions,
      slowConsumers: {
        count: sat.behind,
        bytesBehind: this.bytesBehind(sat.behindEvents),
        eventsBehind: sat.behindEvents,
      },
      subscriberBufferBytes: sat.bufferedBytes,
      topics: sat.channels,
      deliveryLatencyMs: { p50: p50 ?? null, p99: p99 ?? null },
      eventLoop: {
        delayP99Ms: Math.round(this.currentLoopDelayMs() * 100) / 100,
        utilization: Math.round(this.utilization * 1000) / 1000,
      },
      budget: {
        connections: this.budget.connectionCount,
        maxConnections: this.budget.maxConnections,
      },
    };
  }

  private currentLoopDelayMs(): number {
    if (this.loopDelayP99Ms > 0 || !this.loopDelay) return this.loopDelayP99Ms;
    return loopDelayMs(this.loopDelay.percentile(99));
  }

  /**
   * An estimate of the bytes slow consumers are behind: the events they are behind times the
   * mean bytes of a delivered event so far (the log, not the server, knows the exact sizes).
   */
  private bytesBehind(events: number): number {
    if (events === 0) return 0;
    const t = this.meters.totals();
    return t.delivered === 0 ? 0 : Math.round(events * (t.bytes / t.delivered));
  }

  /**
   * Storage and health as of now, not of the last sample. A reading begun earlier is waited for,
   * then one more is taken.
   */
  private async freshEngine(): Promise<void> {
    if (this.refreshing) await this.refreshing;
    await this.refreshEngine();
  }

  /** This node: this process, or with workers every worker's numbers merged. */
  private async localNode(): Promise<NodeStats> {
    const peers = this.workers;
    if (peers === null) {
      // Bounded: a slow broker leaves the previous reading.
      await withTimeout(this.freshEngine(), NODE_LIST_WAIT_MS).catch(() => undefined);
      return this.nodeStats();
    }
    const { workers, samples, missing } = statsAnswers(await peers.gather('stats'));
    if (workers.some((w) => w.worker === peers.id)) {
      return mergeWorkers(peers.nodeId, workers, samples, missing);
    }
    // Its own answer got lost on the way: it still knows its numbers.
    workers.push(this.workerStats());
    samples.push(...this.meters.deliveryLatency.recent(Date.now()));
    const others = missing.filter((w) => w !== peers.id);
    return mergeWorkers(peers.nodeId, workers, samples, others);
  }

  /** The `/v1/stats` document: this node, and every live node on a shared engine. */
  async stats(): Promise<StatsDocument> {
    const node = await this.localNode();
    const engine = this.engine;
    let nodes: NodeStats[] = [node];
    const cluster = hasNodeDirectory(engine);
    if (cluster) {
      const listed = await withTimeout(engine.listNodes(), NODE_LIST_WAIT_MS).catch(() => null);
      if (listed !== null) {
        const others: NodeStats[] = [];
        // Another node's workers each have an entry: shown as one node with its workers.
        const groups = new Map<string, WorkerStats[]>();
        for (const text of listed) {
          const n = parseNodeStats(text);
          if (n === null || n.id === this.id || n.id === node.id) continue;
          if (typeof n.node === 'string' && typeof n.worker === 'number') {
            if (n.node === this.workers?.nodeId) continue;
            const { node: group, ...worker } = n;
            const list = groups.get(group) ?? [];
            list.push(worker as WorkerStats);
            groups.set(group, list);
          } else others.push(n);
        }
        for (const [group, workers] of groups) {
          others.push(mergeWorkers(group, workers, null, []));
        }
        nodes = [node, ...others].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      }
    }
    return {
      time: new Date().toISOString(),
      cluster,
      node,
      nodes,
      totals: totalsOf(nodes, cluster),
    };
  }

  // ---- Prometheus ----

  private histograms(registry: Registry): {
    publish: PromHistogram<'transport'>;
    delivery: PromHistogram;
    catchUp: PromHistogram;
    append: PromHistogram;
    read: PromHistogram;
  } {
    return {
      publish: new Histogram({
        name: 'rill_publish_duration_seconds',
        help: 'Publish requests from arrival to answer, by the transport of the publisher',
        labelNames: ['transport'],
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
      delivery: new Histogram({
        name: 'rill_delivery_delay_seconds',
        help: 'From an event being stored to the flush writing it to live subscribers, once per flush per topic',
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
      catchUp: new Histogram({
        name: 'rill_catchup_duration_seconds',
        help: 'Catch-ups from the log, from a subscription falling behind (or starting) to all its topics being live',
        buckets: CATCHUP_BUCKETS,
        registers: [registry],
      }),
      append: new Histogram({
        name: 'rill_engine_append_duration_seconds',
        help: 'Engine appends (one per publish request), until stored',
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
      read: new Histogram({
        name: 'rill_engine_read_duration_seconds',
        help: 'Engine reads (history pages, catch-up steps)',
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
    };
  }

  /** Counters read from the plain numbers at scrape time. */
  private counters(registry: Registry): void {
    const m = this.meters;
    const counter = <L extends string>(
      name: string,
      help: string,
      labelNames: readonly L[],
      read: (set: (labels: Partial<Record<L, string>>, v: number) => void) => void,
    ): void => {
      new Counter<L>({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          read((labels, v) => this.inc(labels, v));
        },
      });
    };
    counter(
      'rill_events_published_total',
      'Events stored by publish requests (duplicates not counted), by transport',
      ['transport'],
      (set) => {
        for (const t of PUBLISH_TRANSPORTS) set({ transport: t }, m.published[t]);
      },
    );
    counter(
      'rill_events_delivered_total',
      'Events written to subscribers, by transport',
      ['transport'],
      (set) => {
        for (const t of TRANSPORTS) set({ transport: t }, m.transports[t].events);
      },
    );
    counter(
      'rill_bytes_written_total',
      'Bytes written to subscribers, by transport',
      ['transport'],
      (set) => {
        for (const t of TRANSPORTS) set({ transport: t }, m.transports[t].bytes);
      },
    );
    counter(
      'rill_writes_total',
      'Socket writes to subscribers (each carries every event queued since the last), by transport',
      ['transport'],
      (set) => {
        for (const t of TRANSPORTS) set({ transport: t }, m.transports[t].writes);
      },
    );
    counter(
      'rill_connections_opened_total',
      'Subscriber connections opened (streams, WebSockets, long-polls), by transport',
      ['transport'],
      (set) => {
        for (const t of TRANSPORTS) set({ transport: t }, m.transports[t].opened);
      },
    );
    counter(
      'rill_connections_closed_total',
      'Subscriber connections closed, by transport and reason (client, server, or the error code it ended with)',
      ['transport', 'reason'],
      (set) => {
        for (const t of TRANSPORTS) {
          for (const [reason, n] of m.transports[t].closedBy) set({ transport: t, reason }, n);
        }
      },
    );
    counter(
      'rill_subscriptions_started_total',
      'Subscriptions started, by start kind (now, earliest, time, after, resume)',
      ['start'],
      (set) => {
        for (const [start, n] of m.subscriptions) set({ start }, n);
      },
    );
    counter(
      'rill_resets_total',
      'Reset notices sent, by reason (retention, epoch, ahead)',
      ['reason'],
      (set) => {
        for (const [reason, n] of m.resets) set({ reason }, n);
      },
    );
    counter(
      'rill_errors_total',
      'Errors answered to clients, by transport (http, sse, ndjson, ws, poll) and catalogue code',
      ['transport', 'code'],
      (set) => {
        for (const [key, n] of m.errors) {
          const [transport, code] = key.split(' ') as [string, string];
          set({ transport, code }, n);
        }
      },
    );
    counter(
      'rill_limit_refusals_total',
      'Requests refused by a limit, by catalogue code and the limit named in the error',
      ['code', 'limit'],
      (set) => {
        for (const [key, n] of m.limitRefusals) {
          const [code, limit] = key.split(' ') as [string, string];
          set({ code, limit }, n);
        }
      },
    );
    counter(
      'rill_auth_failures_total',
      'Authentication and authorization failures, by reason (catalogue code)',
      ['reason'],
      (set) => {
        for (const [reason, n] of m.authFailures) set({ reason }, n);
      },
    );
    counter(
      'rill_ws_close_codes_total',
      'WebSocket close codes the server sent',
      ['code'],
      (set) => {
        for (const [code, n] of m.closeCodes) set({ code: String(code) }, n);
      },
    );
    counter(
      'rill_engine_errors_total',
      'Failed engine operations, by operation and catalogue code',
      ['operation', 'code'],
      (set) => {
        for (const [key, n] of this.engineMeter.errors) {
          const [operation, code] = key.split(' ') as [string, string];
          set({ operation, code }, n);
        }
      },
    );
    counter(
      'rill_topic_events_published_total',
      'Events published to each topic matching metrics.topics',
      ['topic'],
      (set) => {
        for (const t of m.topics.values()) set({ topic: t.topic }, t.published);
      },
    );
    counter(
      'rill_topic_events_delivered_total',
      'Events delivered live on each topic matching metrics.topics',
      ['topic'],
      (set) => {
        for (const t of m.topics.values()) set({ topic: t.topic }, t.delivered);
      },
    );
  }

  /** Gauges read at scrape time. */
  private gauges(registry: Registry): void {
    const gauge = <L extends string>(
      name: string,
      help: string,
      labelNames: readonly L[],
      read: (set: (labels: Partial<Record<L, string>>, v: number) => void) => void,
      // How the workers' values of one node add up (api/worker-views.ts): a sum unless said.
      aggregator: Aggregator = 'sum',
    ): void => {
      new Gauge<L>({
        name,
        help,
        labelNames,
        aggregator,
        registers: [registry],
        collect() {
          this.reset();
          read((labels, v) => this.set(labels, v));
        },
      });
    };
    const m = this.meters;
    // One pass over the subscriptions per scrape, shared by the gauges that need it.
    let sat: ReturnType<Hub['saturation']> | null = null;
    let satAt = 0;
    const saturation = (): ReturnType<Hub['saturation']> => {
      const now = Date.now();
      if (sat === null || now - satAt > 100) {
        sat = this.hub?.saturation() ?? {
          subscriptions: 0,
          channels: 0,
          behind: 0,
          behindEvents: 0,
          bufferedBytes: 0,
        };
        satAt = now;
      }
      return sat;
    };
    gauge(
      'rill_connections_open',
      'Subscriber connections open, by transport',
      ['transport'],
      (set) => {
        for (const t of TRANSPORTS) set({ transport: t }, m.transports[t].open);
      },
    );
    gauge('rill_subscriptions', 'Subscriptions open on this node', [], (set) =>
      set({}, saturation().subscriptions),
    );
    gauge(
      'rill_topics_watched',
      'Topics with local subscribers (one engine watch each)',
      [],
      (set) => set({}, saturation().channels),
    );
    gauge(
      'rill_slow_consumers',
      'Subscriptions catching up from the log (slow consumers, and new ones replaying history)',
      [],
      (set) => set({}, saturation().behind),
    );
    gauge(
      'rill_slow_consumer_events_behind',
      'Events the subscriptions catching up are behind their topics',
      [],
      (set) => set({}, saturation().behindEvents),
    );
    gauge(
      'rill_slow_consumer_bytes_behind',
      'Estimated bytes the subscriptions catching up are behind (events behind times the mean delivered event size)',
      [],
      (set) => set({}, this.bytesBehind(saturation().behindEvents)),
    );
    gauge(
      'rill_subscriber_buffer_bytes',
      'Bytes queued for subscribers or in their socket buffers',
      [],
      (set) => set({}, saturation().bufferedBytes),
    );
    gauge(
      'rill_event_loop_utilization',
      'Share of the last second the event loop was busy (0 to 1)',
      [],
      (set) => set({}, this.utilization),
    );
    gauge(
      'rill_event_loop_delay_p99_seconds',
      '99th percentile of the event loop delay over the last five seconds',
      [],
      (set) => set({}, this.currentLoopDelayMs() / 1000),
    );
    gauge(
      'rill_connection_budget_used',
      'Connections open against the connection budget',
      [],
      (set) => set({}, this.budget.connectionCount),
    );
    gauge(
      'rill_connection_budget_max',
      'The connection budget (from the open-files limit); absent when unknown',
      [],
      (set) => {
        if (this.budget.maxConnections !== null) set({}, this.budget.maxConnections);
      },
    );
    gauge(
      'rill_connection_budget_streams_max',
      'Connections past which new streams are refused; absent when unknown',
      [],
      (set) => {
        if (this.budget.maxStreams !== null) set({}, this.budget.maxStreams);
      },
    );
    gauge('rill_engine_pending_appends', 'Engine appends in progress', [], (set) =>
      set({}, this.engineMeter.pendingAppends),
    );
    gauge(
      'rill_engine_up',
      'Whether the engine answered its last health check (1) or not (0)',
      [],
      (set) => set({}, this.engineOk ? 1 : 0),
    );
    gauge(
      'rill_storage_used_bytes',
      "Storage the engine uses (memory and lmdb: events' bytes under storage.maxBytes, else the lmdb file; Redis used_memory; JetStream account storage)",
      [],
      (set) => {
        if (this.storage.usedBytes !== null) set({}, this.storage.usedBytes);
      },
      // The one store every worker reads: its size once.
      'max',
    );
    gauge(
      'rill_storage_max_bytes',
      "The engine's storage budget (storage.maxBytes, Redis maxmemory, JetStream limit); absent when none",
      [],
      (set) => {
        if (this.storage.maxBytes !== null) set({}, this.storage.maxBytes);
      },
      // The one store every worker reads: its size once.
      'max',
    );
    gauge(
      'rill_topic_subscribers',
      'Subscribers on this node of each topic matching metrics.topics',
      ['topic'],
      (set) => {
        for (const t of m.topics.values())
          set({ topic: t.topic }, this.hub?.subscribersOf(t.topic) ?? 0);
      },
    );
    gauge(
      'rill_build_info',
      'Always 1: the version and engine of this node',
      ['version', 'engine'],
      (set) => {
        set({ version: this.version, engine: this.engine.name }, 1);
      },
      'max',
    );
    gauge('rill_start_time_seconds', 'When this node started, seconds since the epoch', [], (set) =>
      set({}, this.startedAt / 1000),
    );
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), ms);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A node's entry from the directory, or null when it is not one (another version, damaged). */
function parseNodeStats(text: string): DirectoryEntry | null {
  try {
    const v = JSON.parse(text) as Partial<DirectoryEntry> | null;
    if (
      v === null ||
      typeof v !== 'object' ||
      typeof v.id !== 'string' ||
      typeof v.counters !== 'object' ||
      typeof v.rates !== 'object' ||
      typeof v.connections !== 'object'
    ) {
      return null;
    }
    return v as DirectoryEntry;
  } catch {
    return null;
  }
}

/**
 * One node from its workers' numbers: counters, rates, connections and backlogs summed, the
 * delivery percentiles taken over all the workers' samples together (never an average of their
 * percentiles; `samples` null where they are not known: another machine's node, then the worst
 * worker's), the event loop the busiest worker's, the shared store's size once.
 */
export function mergeWorkers(
  id: string,
  workers: WorkerStats[],
  samples: number[] | null,
  missing: number[],
): NodeStats {
  const sorted = [...workers].sort((a, b) => a.worker - b.worker);
  const t = totalsOf(sorted, true);
  const [p50, p99] =
    samples === null
      ? [t.deliveryLatencyMs.p50, t.deliveryLatencyMs.p99]
      : percentilesOf(samples, [0.5, 0.99]);
  return {
    ...t,
    id,
    deliveryLatencyMs: { p50: p50 ?? null, p99: p99 ?? null },
    workers: sorted,
    missingWorkers: [...missing].sort((a, b) => a - b),
  };
}

/**
 * Sums over nodes: counters, rates, connections, subscriptions, backlogs and budgets add up;
 * latencies and event-loop figures are the worst node's; the storage of a shared engine is the
 * same store seen from every node, so it is the largest report, not a sum.
 */
export function totalsOf(nodes: NodeStats[], shared: boolean): NodeStats {
  const sum = (f: (n: NodeStats) => number): number => nodes.reduce((a, n) => a + (f(n) ?? 0), 0);
  const max = (f: (n: NodeStats) => number | null): number | null => {
    let out: number | null = null;
    for (const n of nodes) {
      const v = f(n);
      if (typeof v === 'number' && (out === null || v > out)) out = v;
    }
    return out;
  };
  const first = nodes[0]!;
  const storageBytes = shared
    ? max((n) => n.engine.storageBytes)
    : nodes.some((n) => n.engine.storageBytes === null)
      ? null
      : sum((n) => n.engine.storageBytes ?? 0);
  const storageMaxBytes = shared
    ? max((n) => n.engine.storageMaxBytes)
    : nodes.some((n) => n.engine.storageMaxBytes === null)
      ? null
      : sum((n) => n.engine.storageMaxBytes ?? 0);
  const started = nodes.reduce((a, n) => (n.startedAt < a ? n.startedAt : a), first.startedAt);
  return {
    id: 'total',
    startedAt: started,
    uptimeSeconds: max((n) => n.uptimeSeconds) ?? 0,
    version: nodes.every((n) => n.version === first.version) ? first.version : 'mixed',
    engine: {
      name: first.engine.name,
      ok: nodes.every((n) => n.engine.ok),
      pendingAppends: sum((n) => n.engine.pendingAppends),
      storageBytes,
      storageMaxBytes,
    },
    counters: {
      eventsPublished: sum((n) => n.counters.eventsPublished),
      eventsDelivered: sum((n) => n.counters.eventsDelivered),
      bytesWritten: sum((n) => n.counters.bytesWritten),
      connectionsOpened: sum((n) => n.counters.connectionsOpened),
      connectionsClosed: sum((n) => n.counters.connectionsClosed),
      errors: sum((n) => n.counters.errors),
      limitRefusals: sum((n) => n.counters.limitRefusals),
    },
    rates: {
      publishedPerSecond: round1(sum((n) => n.rates.publishedPerSecond)),
      deliveredPerSecond: round1(sum((n) => n.rates.deliveredPerSecond)),
      bytesPerSecond: round1(sum((n) => n.rates.bytesPerSecond)),
    },
    connections: {
      sse: sum((n) => n.connections.sse),
      ndjson: sum((n) => n.connections.ndjson),
      ws: sum((n) => n.connections.ws),
      poll: sum((n) => n.connections.poll),
      total: sum((n) => n.connections.total),
    },
    subscriptions: sum((n) => n.subscriptions),
    slowConsumers: {
      count: sum((n) => n.slowConsumers.count),
      bytesBehind: sum((n) => n.slowConsumers.bytesBehind),
      eventsBehind: sum((n) => n.slowConsumers.eventsBehind ?? 0),
    },
    subscriberBufferBytes: sum((n) => n.subscriberBufferBytes ?? 0),
    topics: sum((n) => n.topics ?? 0),
    deliveryLatencyMs: {
      p50: max((n) => n.deliveryLatencyMs.p50),
      p99: max((n) => n.deliveryLatencyMs.p99),
    },
    eventLoop: {
      delayP99Ms: max((n) => n.eventLoop.delayP99Ms) ?? 0,
      utilization: max((n) => n.eventLoop.utilization) ?? 0,
    },
    budget: {
      connections: sum((n) => n.budget.connections),
      maxConnections: nodes.some((n) => n.budget.maxConnections === null)
        ? null
        : sum((n) => n.budget.maxConnections ?? 0),
    },
  };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
