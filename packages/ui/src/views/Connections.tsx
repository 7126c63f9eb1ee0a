import type { ConnectionRow, ConnectionsPage } from '@rill/client';
import { useCallback, useEffect, useState } from 'react';
import { allPages, api, ApiError } from '../api';
import { VirtualTable } from '../components/VirtualTable';
import { bytes, duration, num } from '../format';

const TRANSPORT: Record<ConnectionRow['transport'], string> = {
  sse: 'SSE',
  ndjson: 'NDJSON',
  ws: 'WebSocket',
  poll: 'long-poll',
};
const MAX = 10_000;
const ROW = 38;

interface Loaded {
  rows: ConnectionRow[];
  total: number;
  /** Workers of the node that did not answer (their connections are not listed). */
  missing: number[];
}

async function loadAll(signal: AbortSignal): Promise<Loaded> {
  let total = 0;
  const missing = new Set<number>();
  const rows = await allPages<ConnectionRow, number>(
    async (after) => {
      const page: ConnectionsPage = await api(`/v1/connections?limit=1000&after=${after ?? 0}`, {
        signal,
      });
      total = page.total;
      for (const w of page.missingWorkers ?? []) missing.add(w);
      return { items: page.connections, next: page.next };
    },
    MAX,
    signal,
  );
  return { rows, total, missing: [...missing].sort((a, b) => a - b) };
}

function who(i: ConnectionRow['identity']): string {
  if (i.kind === 'jwt') return `user ${i.sub ?? '?'}`;
  if (i.kind === 'apiKey') return `key ${i.name ?? i.credentialId.replace(/^key:/, '')}`;
  return 'anonymous';
}

/**
 * The open streams and WebSockets of the node that answers (behind a load balancer: one node at a
 * time; with `--workers`, all its workers), refreshed every 3 s while visible; an admin may
 * disconnect one.
 */
export function Connections() {
  const [data, setData] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [filter, setFilter] = useState('');
  const [message, setMessage] = useState<string | null>(null);

  const reload = useCallback((signal?: AbortSignal) => {
    const ac = new AbortController();
    signal?.addEventListener('abort', () => ac.abort());
    loadAll(ac.signal).then(
      (d) => {
        setData(d);
        setError(null);
      },
      (e: unknown) => {
        if (!ac.signal.aborted)
          setError(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e));
      },
    );
  }, []);

  useEffect(() => {
    const ac = new AbortController();
    reload(ac.signal);
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') reload(ac.signal);
    }, 3000);
    return () => {
      ac.abort();
      clearInterval(timer);
    };
  }, [reload]);

  const disconnect = async (c: ConnectionRow): Promise<void> => {
    if (
      !confirm(
        `Disconnect ${TRANSPORT[c.transport]} ${c.id} (${who(c.identity)})? It may reconnect and resume.`,
      )
    ) {
      return;
    }
    try {
      await api(`/v1/connections/${encodeURIComponent(c.id)}`, { method: 'DELETE' });
      setMessage(`Disconnected ${c.id}.`);
      setData((d) => d && { ...d, rows: d.rows.filter((r) => r.id !== c.id), total: d.total - 1 });
    } catch (e) {
      setMessage(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e));
    }
  };

  const q = filter.trim().toLowerCase();
  const rows = (data?.rows ?? []).filter(
    (r) =>
      !q ||
      [r.id, r.transport, who(r.identity), r.address, ...r.patterns].some((s) =>
        s.toLowerCase().includes(q),
      ),
  );
  const counts = (data?.rows ?? []).reduce<Record<string, number>>((m, r) => {
    m[r.transport] = (m[r.transport] ?? 0) + 1;
    return m;
  }, {});

  return (
    <section aria-labelledby="conn-h">
      <h1 id="conn-h">
        Connections{' '}
        <span className="muted small">
          {data
            ? `${num(data.total)} open on this node · ` +
              Object.entries(counts)
                .map(([t, n]) => `${TRANSPORT[t as ConnectionRow['transport']]} ${n}`)
                .join(' · ') +
              (data.missing.length > 0
                ? ` · worker ${data.missing.join(', ')} did not answer (not listed)`
                : '')
            : 'loading…'}
        </span>
      </h1>
      <div className="toolbar">
        <label>
          Filter
          <input
            type="search"
            name="filter"
            placeholder="id, user, key, address, topic"
            value={filter}
            onChange={(e) => setFilter(e.target.value)}
            spellCheck={false}
          />
        </label>
        <span className="spacer" />
        {message && (
          <span className="small" role="status">
            {message}
          </span>
        )}
        <button type="button" onClick={() => reload()}>
          Refresh
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <VirtualTable
        className="conn-table"
        label="Connections"
        rowsLabel="Connection rows"
        columns={[
          'Id',
          'Transport',
          'Identity',
          'Address',
          'Topics',
          'Buffered',
          'State',
          'Age',
          '',
        ].map((label) => ({ label, num: label === 'Buffered' || label === 'Age' }))}
        items={rows}
        rowHeight={ROW}
        minHeight={200}
        empty={data && (q ? 'No connection matches.' : 'No open connection on this node.')}
        row={(c) => (
          <>
            <div role="cell" className="mono small">
              {c.id}
            </div>
            <div role="cell">{TRANSPORT[c.transport]}</div>
            <div role="cell" className="ellipsis" title={c.identity.credentialId}>
              {who(c.identity)}
            </div>
            <div role="cell" className="mono small">
              {c.address}
            </div>
            <div role="cell" className="mono small ellipsis" title={c.patterns.join(', ')}>
              {c.patterns.join(', ')}
              {c.topics > c.patterns.length ? ` (${c.topics} topics)` : ''}
            </div>
            <div role="cell" className="num">
              {bytes(c.bufferedBytes)}
            </div>
            <div role="cell">
              <span className={c.state === 'live' ? 'pill ok' : 'pill warn'}>{c.state}</span>
            </div>
            <div role="cell" className="num">
              {duration(c.ageSeconds)}
            </div>
            <div role="cell">
              <button
                type="button"
                className="danger"
                onClick={() => void disconnect(c)}
                aria-label={`Disconnect ${c.id}`}
              >
                Disconnect
              </button>
            </div>
          </>
        )}
      />
    </section>
  );
}
