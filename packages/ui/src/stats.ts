/**
 * The one stats stream of the dashboard (`GET /v1/stats/stream`, a frame a second): every view
 * reads this store, none polls on its own. It keeps the last {@link WINDOW} samples for the charts.
 */
import { useSyncExternalStore } from 'react';
import type { NodeStats, StatsDocument as Stats } from '@rill/client';
import type { ApiError } from './api';
import { sse } from './api';

/** The `/v1/stats` document, as the server's own type (the one definition, in @rill/client). */
export type { NodeStats, WorkerStats, StatsDocument as Stats } from '@rill/client';

/** Samples kept: five minutes at one a second. */
export const WINDOW = 300;

/** One chart's data: x (seconds since the epoch) then one array per series. */
export type Series = number[][];

export interface StatsState {
  status: 'connecting' | 'open' | 'error' | 'unavailable';
  error?: ApiError;
  latest: Stats | null;
  /** Sample times, seconds since the epoch. */
  t: number[];
  /** Per series name, aligned with `t` (null: no value). */
  series: Record<string, (number | null)[]>;
  /** Per node id, its publishes/s aligned with `t`. */
  perNode: Record<string, (number | null)[]>;
}

const SERIES: Record<string, (s: NodeStats) => number | null> = {
  published: (s) => s.rates.publishedPerSecond,
  delivered: (s) => s.rates.deliveredPerSecond,
  bytes: (s) => s.rates.bytesPerSecond,
  sse: (s) => s.connections.sse,
  ndjson: (s) => s.connections.ndjson,
  ws: (s) => s.connections.ws,
  poll: (s) => s.connections.poll,
  p50: (s) => s.deliveryLatencyMs.p50,
  p99: (s) => s.deliveryLatencyMs.p99,
  slow: (s) => s.slowConsumers.count,
  behind: (s) => s.slowConsumers.bytesBehind,
  loop: (s) => s.eventLoop.delayP99Ms,
  elu: (s) => s.eventLoop.utilization * 100,
};

let state: StatsState = {
  status: 'connecting',
  latest: null,
  t: [],
  series: Object.fromEntries(Object.keys(SERIES).map((k) => [k, []])),
  perNode: {},
};
const listeners = new Set<() => void>();
let stop: (() => void) | null = null;

function emit(next: StatsState): void {
  state = next;
  for (const l of listeners) l();
}

function push(s: Stats): void {
  const t = [...state.t, Date.parse(s.time) / 1000].slice(-WINDOW);
  const series: StatsState['series'] = {};
  for (const [k, f] of Object.entries(SERIES)) {
    series[k] = [...(state.series[k] ?? []), f(s.totals)].slice(-WINDOW);
  }
  const perNode: StatsState['perNode'] = {};
  const n = t.length;
  for (const node of s.nodes) {
    const before = state.perNode[node.id] ?? [];
    const padded = [...Array<null>(Math.max(0, n - 1 - before.length)).fill(null), ...before];
    perNode[node.id] = [...padded, node.rates.publishedPerSecond].slice(-n);
  }
  emit({ ...state, status: 'open', error: undefined, latest: s, t, series, perNode });
}

function start(): void {
  stop = sse(
    '/v1/stats/stream',
    (event, data) => {
      if (event !== 'stats') return;
      try {
        push(JSON.parse(data) as Stats);
      } catch {
        // A frame that is not the stats document: skip it.
      }
    },
    (status, error) => {
      if (status === 'open') {
        if (state.status !== 'open') emit({ ...state, status: 'open', error: undefined });
      } else if (error?.status === 404) {
        emit({ ...state, status: 'unavailable', error });
      } else if (status === 'error' || state.status !== 'open') {
        emit({ ...state, status: status === 'connecting' ? 'connecting' : 'error', error });
      }
    },
  );
}

function subscribe(fn: () => void): () => void {
  listeners.add(fn);
  if (!stop) start();
  return () => {
    listeners.delete(fn);
  };
}

/** Restarts the stream (after the credentials changed). */
export function restartStats(): void {
  stop?.();
  stop = null;
  if (listeners.size > 0) start();
}

export function useStats(): StatsState {
  return useSyncExternalStore(subscribe, () => state);
}
