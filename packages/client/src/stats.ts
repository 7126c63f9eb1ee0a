/**
 * The shapes of the server's admin views (docs/observability.md): the `/v1/stats` document (and
 * each frame of `/v1/stats/stream`) and a page of `GET /v1/connections`. Types only: the server
 * writes them, the dashboard and other tools read them. Fields are added, never renamed.
 */

/** One process's numbers, or a sum of several (a node of several workers, the totals). */
export interface NodeStats {
  /** The node's id (a host name, a process id and a random suffix); `total` for the totals. */
  id: string;
  startedAt: string;
  uptimeSeconds: number;
  version: string;
  engine: {
    name: string;
    ok: boolean;
    pendingAppends: number;
    storageBytes: number | null;
    storageMaxBytes: number | null;
  };
  counters: {
    eventsPublished: number;
    eventsDelivered: number;
    bytesWritten: number;
    connectionsOpened: number;
    connectionsClosed: number;
    errors: number;
    limitRefusals: number;
  };
  rates: { publishedPerSecond: number; deliveredPerSecond: number; bytesPerSecond: number };
  connections: { sse: number; ndjson: number; ws: number; poll: number; total: number };
  subscriptions: number;
  slowConsumers: { count: number; bytesBehind: number; eventsBehind: number };
  subscriberBufferBytes: number;
  topics: number;
  deliveryLatencyMs: { p50: number | null; p99: number | null };
  eventLoop: { delayP99Ms: number; utilization: number };
  budget: { connections: number; maxConnections: number | null };
  /**
   * A node run as `rill serve --workers N`: its numbers are the sums over its worker processes
   * (latency percentiles over all their samples, event-loop figures the busiest worker's), and
   * this lists each worker's own, by worker id.
   */
  workers?: WorkerStats[];
  /**
   * With workers: the ids of those that did not answer in time (restarting, or stuck); their
   * numbers are missing from the sums. Empty when every worker answered.
   */
  missingWorkers?: number[];
}

/** One worker process of a node run with `--workers`. */
export interface WorkerStats extends Omit<NodeStats, 'workers' | 'missingWorkers'> {
  /** The worker's id within its node (1…N, kept across its restarts). */
  worker: number;
}

/** `GET /v1/stats` and each `stats` frame of `GET /v1/stats/stream`. */
export interface StatsDocument {
  time: string;
  /** Whether the engine is shared by several nodes (redis, nats): `nodes` then lists them all. */
  cluster: boolean;
  /** The node that answered (with workers: the whole `rill serve`, every worker summed). */
  node: NodeStats;
  /** Every live node, one per `rill serve` (per machine), sorted by id. */
  nodes: NodeStats[];
  /** The sums over `nodes`. */
  totals: NodeStats;
}

/** One row of `GET /v1/connections`: an open stream, WebSocket or waiting long-poll. */
export interface ConnectionRow {
  /** Unique within the node (with workers: across its workers, whose id it carries). */
  id: string;
  transport: 'sse' | 'ndjson' | 'ws' | 'poll';
  identity: {
    kind: 'jwt' | 'apiKey' | 'anonymous';
    sub: string | null;
    name: string | null;
    credentialId: string;
  };
  address: string;
  patterns: string[];
  topics: number;
  bufferedBytes: number;
  live: boolean;
  state: 'live' | 'catch-up';
  openedAt: string;
  ageSeconds: number;
  /** With `--workers`: the worker process that holds it. */
  worker?: number;
}

/** A page of `GET /v1/connections`. */
export interface ConnectionsPage {
  /** Connections open on the node (with workers: on every worker that answered). */
  total: number;
  connections: ConnectionRow[];
  /** `after` of the next page; null on the last. */
  next: number | null;
  /** With workers: the ids of those that did not answer in time; their connections are missing. */
  missingWorkers?: number[];
}
