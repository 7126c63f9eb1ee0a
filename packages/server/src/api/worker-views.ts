import type { ConnectionRow, WorkerStats } from '@rill/client';
import { AggregatorRegistry, Gauge, type PrometheusContentType, type Registry } from 'prom-client';

/**
 * The admin views of a node run as `rill serve --workers N` (docs/operations.md § Workers): any
 * worker answers `/metrics`, `/v1/stats` and `/v1/connections` for all of them, asking the others
 * through the supervisor ({@link WorkerPeers}, implemented by cli/workers.ts) and merging the
 * answers here. A worker that does not answer within {@link GATHER_TIMEOUT_MS} is reported
 * missing; the request never waits longer.
 */

/** Longest wait for the workers' answers to one view, ms. */
export const GATHER_TIMEOUT_MS = 1_000;

/** What a worker answers to a question (its `args` as the asking worker gave them). */
export type Answerer = (args: unknown) => unknown;

/** One worker's answer. */
export interface WorkerAnswer {
  worker: number;
  body: unknown;
}

/** The answers of every worker that answered in time, by worker id; the ids of the others. */
export interface Gathered {
  answers: WorkerAnswer[];
  missing: number[];
}

/** A worker's link to the other workers of its node. */
export interface WorkerPeers {
  /** This worker's id, 1…{@link count}. */
  readonly id: number;
  /** The workers of the node. */
  readonly count: number;
  /** The node's id, shared by its workers (the `/v1/stats` node they make up). */
  readonly nodeId: string;
  /** Registers this worker's answer to `what`. */
  answer(what: string, fn: Answerer): void;
  /** Asks every worker (this one included) `what`; resolves within the bound, never rejects. */
  gather(what: string, args?: unknown): Promise<Gathered>;
}

// ---- /metrics ----

/**
 * The metrics whose value means something per process only: each worker's is kept apart under a
 * `worker` label (the process's CPU, memory, event loop, file descriptors and start time, and its
 * engine connection). Every other metric is summed over the workers, histograms bucket by bucket.
 */
const PER_WORKER_METRICS = new Set([
  'rill_event_loop_utilization',
  'rill_event_loop_delay_p99_seconds',
  'rill_connection_budget_used',
  'rill_connection_budget_max',
  'rill_connection_budget_streams_max',
  'rill_engine_up',
  'rill_start_time_seconds',
]);

function perWorker(name: string): boolean {
  return PER_WORKER_METRICS.has(name) || name.startsWith('process_') || name.startsWith('nodejs_');
}

interface MetricJson {
  name: string;
  aggregator?: string;
  values: { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

function isMetricList(body: unknown): body is MetricJson[] {
  return (
    Array.isArray(body) &&
    body.every(
      (m) =>
        typeof m === 'object' &&
        m !== null &&
        typeof (m as MetricJson).name === 'string' &&
        Array.isArray((m as MetricJson).values),
    )
  );
}

/**
 * The node's metrics from every worker's registry (`getMetricsAsJSON`), merged by prom-client's
 * cluster aggregation; plus `rill_worker_up` for each worker (0: it did not answer in time, its
 * numbers are missing from the sums).
 */
export function aggregateMetrics(gathered: Gathered, count: number): Registry {
  const lists: MetricJson[][] = [];
  const answered = new Set<number>();
  for (const a of gathered.answers) {
    if (!isMetricList(a.body)) continue;
    answered.add(a.worker);
    const worker = String(a.worker);
    lists.push(
      a.body.map((m) =>
        perWorker(m.name)
          ? {
              ...m,
              // One value per label set once labelled: summing leaves it as it is, where the
              // metric's own aggregator (omit, average, …) would drop or blur it.
              aggregator: 'sum',
              values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker } })),
            }
          : m,
      ),
    );
  }
  const registry = AggregatorRegistry.aggregate<PrometheusContentType>(lists);
  const up = new Gauge({
    name: 'rill_worker_up',
    help: 'Whether each worker process answered this scrape in time (1) or not (0, its numbers are missing)',
    labelNames: ['worker'],
    registers: [registry],
  });
  for (let w = 1; w <= count; w++) up.set({ worker: String(w) }, answered.has(w) ? 1 : 0);
  return registry;
}

// ---- /v1/stats ----

/** A worker's answer to `stats`: its numbers and its recent delivery delays (ms). */
export interface WorkerStatsAnswer {
  stats: WorkerStats;
  samples: number[];
}

function isStatsAnswer(body: unknown): body is WorkerStatsAnswer {
  const b = body as WorkerStatsAnswer | null;
  return (
    typeof b === 'object' &&
    b !== null &&
    typeof b.stats === 'object' &&
    b.stats !== null &&
    typeof b.stats.id === 'string' &&
    Array.isArray(b.samples)
  );
}

/** The workers' answers to `stats`, as numbers and samples; a malformed answer counts as missing. */
export function statsAnswers(g: Gathered): {
  workers: WorkerStats[];
  samples: number[];
  missing: number[];
} {
  const workers: WorkerStats[] = [];
  const samples: number[] = [];
  const missing = [...g.missing];
  for (const a of g.answers) {
    if (!isStatsAnswer(a.body)) {
      missing.push(a.worker);
      continue;
    }
    workers.push({ ...a.body.stats, worker: a.worker });
    for (const s of a.body.samples)
      if (typeof s === 'number' && Number.isFinite(s)) samples.push(s);
  }
  return { workers, samples, missing };
}

// ---- /v1/connections ----

/**
 * A connections cursor over workers: `worker × CURSOR_SPAN + order`, the position after which
 * the page starts (workers in id order, each worker's streams in open order). Below 2^53 for the
 * 64 workers `--workers` allows.
 */
export const CURSOR_SPAN = 2 ** 46;

/** What the asking worker sends with `connections`. */
export interface ConnectionsArgs {
  /** The cursor's worker (0: from the first) and its position there. */
  worker: number;
  after: number;
  limit: number;
}

/** A worker's answer to `connections`: its count and a page after its place in the cursor. */
export interface ConnectionsAnswer {
  total: number;
  rows: ConnectionRow[];
  orders: number[];
  more: boolean;
}

/** Whether `args` is a {@link ConnectionsArgs} (they cross a process boundary). */
export function isConnectionsArgs(args: unknown): args is ConnectionsArgs {
  const a = args as ConnectionsArgs | null;
  return (
    typeof a === 'object' &&
    a !== null &&
    Number.isSafeInteger(a.worker) &&
    Number.isSafeInteger(a.after) &&
    Number.isSafeInteger(a.limit) &&
    a.limit > 0
  );
}

function isConnectionsAnswer(body: unknown): body is ConnectionsAnswer {
  const b = body as ConnectionsAnswer | null;
  return (
    typeof b === 'object' &&
    b !== null &&
    typeof b.total === 'number' &&
    Array.isArray(b.rows) &&
    Array.isArray(b.orders) &&
    b.rows.length === b.orders.length
  );
}

/** One page of every worker's connections after `cursor`, at most `limit` rows. */
export function mergeConnections(
  g: Gathered,
  limit: number,
): { total: number; connections: ConnectionRow[]; next: number | null; missingWorkers: number[] } {
  let total = 0;
  const rows: { worker: number; order: number; row: ConnectionRow }[] = [];
  let more = false;
  const missing = [...g.missing];
  for (const { worker, body } of [...g.answers].sort((x, y) => x.worker - y.worker)) {
    if (!isConnectionsAnswer(body)) {
      missing.push(worker);
      continue;
    }
    total += body.total;
    more ||= body.more;
    body.rows.forEach((row, i) =>
      rows.push({ worker, order: body.orders[i]!, row: { ...row, worker } }),
    );
  }
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  const next =
    last !== undefined && (rows.length > limit || more)
      ? last.worker * CURSOR_SPAN + last.order
      : null;
  return {
    total,
    connections: page.map((r) => r.row),
    next,
    missingWorkers: missing.sort((a, b) => a - b),
  };
}
