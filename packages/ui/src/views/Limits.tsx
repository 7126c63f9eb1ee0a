import { Chart } from '../components/Chart';
import { num } from '../format';
import type { StatsState } from '../stats';

/**
 * Limits and authentication: the refusals the stats report (their total; the breakdown by limit
 * is in the metrics), errors, and the connection budget.
 */
export function Limits({ stats }: { stats: StatsState }) {
  const s = stats.latest;
  if (!s) {
    return (
      <section aria-labelledby="limits-h">
        <h1 id="limits-h">Limits &amp; auth</h1>
        <p className="muted">Waiting for the first stats frame…</p>
      </section>
    );
  }
  const tot = s.totals;
  const budget = tot.budget;
  return (
    <section aria-labelledby="limits-h">
      <h1 id="limits-h">Limits &amp; auth</h1>
      <div className="tiles">
        <div className="tile">
          <div className="tile-label">Refused by a limit</div>
          <div className="tile-value">{num(tot.counters.limitRefusals)}</div>
          <div className="tile-hint">since start, all nodes</div>
        </div>
        <div className="tile">
          <div className="tile-label">Errors answered</div>
          <div className="tile-value">{num(tot.counters.errors)}</div>
        </div>
        <div className="tile">
          <div className="tile-label">Connection budget</div>
          <div className="tile-value">
            {num(budget.connections)}
            {budget.maxConnections ? ` / ${num(budget.maxConnections)}` : ''}
          </div>
          <div className="tile-hint">
            {budget.maxConnections
              ? `${Math.round((budget.connections / budget.maxConnections) * 100)} % used`
              : 'no limit'}
          </div>
        </div>
        <div className="tile">
          <div className="tile-label">Connections opened / closed</div>
          <div className="tile-value">
            {num(tot.counters.connectionsOpened)} / {num(tot.counters.connectionsClosed)}
          </div>
        </div>
      </div>
      <Chart
        title="Slow consumers"
        t={stats.t}
        format={num}
        series={[{ label: 'slow consumers', color: '--c5', values: stats.series.slow! }]}
      />
      <p className="muted">
        Refusals by limit and code are in <code>/metrics</code> (
        <code>rill_limit_refusals_total</code>).
      </p>
    </section>
  );
}
