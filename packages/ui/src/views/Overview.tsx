import { Chart } from '../components/Chart';
import { bytes, duration, ms, num } from '../format';
import type { NodeStats, StatsState, WorkerStats } from '../stats';

function Tile({ label, value, hint }: { label: string; value: string; hint?: string }) {
  return (
    <div className="tile">
      <div className="tile-label">{label}</div>
      <div className="tile-value">{value}</div>
      {hint && <div className="tile-hint">{hint}</div>}
    </div>
  );
}

function NodeRow({ n }: { n: NodeStats | WorkerStats }) {
  const missing = 'worker' in n ? [] : (n.missingWorkers ?? []);
  const storage =
    n.engine.storageBytes === null
      ? '–'
      : n.engine.storageMaxBytes
        ? `${bytes(n.engine.storageBytes)} / ${bytes(n.engine.storageMaxBytes)}`
        : bytes(n.engine.storageBytes);
  return (
    <tr className={'worker' in n ? 'sub' : undefined}>
      <td className="mono">
        {'worker' in n ? `↳ worker ${n.worker}` : n.id}
        {missing.length > 0 && (
          <>
            {' '}
            <span className="pill bad" title="Did not answer in time: missing from the sums">
              worker {missing.join(', ')} missing
            </span>
          </>
        )}
      </td>
      <td>{n.version}</td>
      <td>{duration(n.uptimeSeconds)}</td>
      <td>
        <span className={n.engine.ok ? 'pill ok' : 'pill bad'}>
          {n.engine.name} {n.engine.ok ? 'ok' : 'down'}
        </span>
      </td>
      <td className="num">{num(n.engine.pendingAppends)}</td>
      <td className="num">{storage}</td>
      <td className="num">{num(n.rates.publishedPerSecond)}</td>
      <td className="num">{num(n.rates.deliveredPerSecond)}</td>
      <td className="num">{num(n.connections.total)}</td>
      <td className="num">{ms(n.deliveryLatencyMs.p99)}</td>
      <td className="num">{ms(n.eventLoop.delayP99Ms)}</td>
    </tr>
  );
}

/** Live charts of the whole server (or cluster), from the one stats stream. */
export function Overview({ stats }: { stats: StatsState }) {
  const s = stats.latest;
  const { t, series: v } = stats;
  if (!s) {
    return (
      <section aria-labelledby="overview-h">
        <h1 id="overview-h">Overview</h1>
        <p className="muted">
          {stats.status === 'unavailable'
            ? 'This server does not offer /v1/stats.'
            : 'Waiting for the first stats frame…'}
        </p>
      </section>
    );
  }
  const tot = s.totals;
  const nodeIds = Object.keys(stats.perNode);
  const nodes = s.nodes.length > 0 ? s.nodes : [s.node];
  const workers = nodes.reduce((n, node) => n + (node.workers?.length ?? 0), 0);
  return (
    <section aria-labelledby="overview-h">
      <h1 id="overview-h">
        Overview{' '}
        <span className="muted small">
          {s.cluster ? `${s.nodes.length} nodes` : 'one node'}
          {workers > 0 ? ` · ${workers} workers` : ''}
        </span>
      </h1>
      <div className="tiles">
        <Tile
          label="Publishes/s"
          value={num(tot.rates.publishedPerSecond)}
          hint={`${num(tot.counters.eventsPublished)} total`}
        />
        <Tile
          label="Deliveries/s"
          value={num(tot.rates.deliveredPerSecond)}
          hint={`${bytes(tot.rates.bytesPerSecond)}/s`}
        />
        <Tile
          label="Connections"
          value={num(tot.connections.total)}
          hint={
            tot.budget.maxConnections
              ? `budget ${num(tot.budget.connections)} / ${num(tot.budget.maxConnections)}`
              : `${num(tot.subscriptions)} subscriptions`
          }
        />
        <Tile
          label="Delivery latency p99"
          value={ms(tot.deliveryLatencyMs.p99)}
          hint={`p50 ${ms(tot.deliveryLatencyMs.p50)}`}
        />
        <Tile
          label="Slow consumers"
          value={num(tot.slowConsumers.count)}
          hint={`${bytes(tot.slowConsumers.bytesBehind)} behind`}
        />
        <Tile
          label="Event loop p99"
          value={ms(tot.eventLoop.delayP99Ms)}
          hint={`${Math.round(tot.eventLoop.utilization * 100)} % busy`}
        />
      </div>
      <div className="charts">
        <Chart
          title="Events per second"
          t={t}
          format={num}
          series={[
            { label: 'published', color: '--c1', values: v.published! },
            { label: 'delivered', color: '--c2', values: v.delivered! },
          ]}
        />
        <Chart
          title="Open connections by transport"
          t={t}
          format={num}
          series={[
            { label: 'SSE', color: '--c1', values: v.sse! },
            { label: 'NDJSON', color: '--c3', values: v.ndjson! },
            { label: 'WebSocket', color: '--c2', values: v.ws! },
            { label: 'long-poll', color: '--c4', values: v.poll! },
          ]}
        />
        <Chart
          title="Delivery latency (publish → written to the socket)"
          t={t}
          format={ms}
          series={[
            { label: 'p50', color: '--c2', values: v.p50! },
            { label: 'p99', color: '--c5', values: v.p99! },
          ]}
        />
        <Chart
          title="Slow consumers"
          t={t}
          format={num}
          series={[{ label: 'slow consumers', color: '--c5', values: v.slow! }]}
        />
        <Chart
          title="Bytes behind (queued for slow consumers)"
          t={t}
          format={bytes}
          series={[{ label: 'bytes behind', color: '--c4', values: v.behind! }]}
        />
        <Chart
          title="Event-loop delay p99"
          t={t}
          format={ms}
          series={[{ label: 'delay p99', color: '--c3', values: v.loop! }]}
        />
        {s.cluster && nodeIds.length > 1 && (
          <Chart
            title="Publishes per second by node"
            t={t}
            format={num}
            series={nodeIds.map((id, i) => ({
              label: id,
              color: `--c${(i % 5) + 1}`,
              values: stats.perNode[id]!,
            }))}
          />
        )}
      </div>
      <h2>Nodes</h2>
      <div className="table-wrap">
        <table className="grid">
          <thead>
            <tr>
              <th scope="col">Node</th>
              <th scope="col">Version</th>
              <th scope="col">Uptime</th>
              <th scope="col">Engine</th>
              <th scope="col" className="num">
                Pending appends
              </th>
              <th scope="col" className="num">
                Storage
              </th>
              <th scope="col" className="num">
                Publishes/s
              </th>
              <th scope="col" className="num">
                Deliveries/s
              </th>
              <th scope="col" className="num">
                Connections
              </th>
              <th scope="col" className="num">
                Latency p99
              </th>
              <th scope="col" className="num">
                Loop p99
              </th>
            </tr>
          </thead>
          <tbody>
            {nodes.map((n) => [
              <NodeRow key={n.id} n={n} />,
              ...(n.workers ?? []).map((w) => <NodeRow key={`${n.id}/${w.worker}`} n={w} />),
            ])}
          </tbody>
        </table>
      </div>
    </section>
  );
}
