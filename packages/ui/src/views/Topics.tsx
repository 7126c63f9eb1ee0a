import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { allPages, api, ApiError } from '../api';
import { VirtualTable } from '../components/VirtualTable';
import { ago, duration, num } from '../format';
import { href } from '../router';

export interface TopicInfo {
  topic: string;
  epoch: string;
  firstSeq: number;
  lastSeq: number;
  count: number;
  created: number;
  lastTime: number | null;
  rate: number;
  retention?: { maxEvents: number; maxAgeMs: number; maxBytes: number };
}

type SortKey = 'topic' | 'rate' | 'count' | 'firstSeq' | 'lastSeq' | 'lastTime';

/** Most topics the view loads (a page of 1,000 per request). */
const MAX_TOPICS = 50_000;
const ROW = 34;

/** Every topic the credentials may read (matching `pattern`), page after page. */
function loadTopics(pattern: string, signal: AbortSignal): Promise<TopicInfo[]> {
  return allPages<TopicInfo, string>(
    async (after) => {
      const q = new URLSearchParams({ limit: '1000' });
      if (pattern) q.set('pattern', pattern);
      if (after) q.set('after', after);
      const page: { topics: TopicInfo[]; next: string | null } = await api(`/v1/topics?${q}`, {
        signal,
      });
      return { items: page.topics, next: page.next };
    },
    MAX_TOPICS,
    signal,
  );
}

function retention(r: TopicInfo['retention']): string {
  if (!r) return '–';
  const parts = [];
  if (r.maxEvents) parts.push(`${num(r.maxEvents)} ev`);
  if (r.maxAgeMs) parts.push(duration(r.maxAgeMs / 1000));
  if (r.maxBytes) parts.push(`${num(r.maxBytes)} B`);
  return parts.length ? parts.join(' · ') : 'unlimited';
}

const COLUMNS: Array<{ key: SortKey | null; label: string; num?: boolean }> = [
  { key: 'topic', label: 'Topic' },
  { key: 'rate', label: 'Rate/s', num: true },
  { key: 'count', label: 'Count', num: true },
  { key: 'firstSeq', label: 'First seq', num: true },
  { key: 'lastSeq', label: 'Last seq', num: true },
  { key: null, label: 'Epoch' },
  { key: null, label: 'Retention' },
  { key: 'lastTime', label: 'Last event' },
];

/**
 * Every topic, searchable and sortable, in a virtualised table. A pattern (`prices.>`) is sent to
 * the server; the search box filters what was loaded. Reloaded every 10 s while the tab is visible
 * (every 30 s past 2,000 topics), and on demand.
 */
export function Topics({ pattern }: { pattern: string }) {
  const [topics, setTopics] = useState<TopicInfo[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [search, setSearch] = useState('');
  const [patternInput, setPatternInput] = useState(pattern);
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: 'topic', desc: false });
  const [loadedAt, setLoadedAt] = useState(0);
  const inFlight = useRef<AbortController | null>(null);

  const reload = useCallback(() => {
    inFlight.current?.abort();
    const ac = new AbortController();
    inFlight.current = ac;
    loadTopics(pattern, ac.signal).then(
      (t) => {
        if (ac.signal.aborted) return;
        setTopics(t);
        setError(null);
        setLoadedAt(Date.now());
      },
      (e: unknown) => {
        if (ac.signal.aborted) return;
        setError(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e));
      },
    );
  }, [pattern]);

  useEffect(() => {
    setPatternInput(pattern);
    setTopics(null);
    reload();
    return () => inFlight.current?.abort();
  }, [pattern, reload]);

  useEffect(() => {
    const every = (topics?.length ?? 0) > 2000 ? 30_000 : 10_000;
    const timer = setInterval(() => {
      if (document.visibilityState === 'visible') reload();
    }, every);
    return () => clearInterval(timer);
  }, [reload, topics?.length]);

  const shown = useMemo(() => {
    if (!topics) return [];
    const q = search.trim().toLowerCase();
    const list = q ? topics.filter((t) => t.topic.toLowerCase().includes(q)) : [...topics];
    const k = sort.key;
    const dir = sort.desc ? -1 : 1;
    list.sort((a, b) => {
      const x = a[k] ?? 0;
      const y = b[k] ?? 0;
      if (typeof x === 'string' && typeof y === 'string') return x < y ? -dir : x > y ? dir : 0;
      return ((x as number) - (y as number)) * dir || (a.topic < b.topic ? -1 : 1);
    });
    return list;
  }, [topics, search, sort]);

  return (
    <section aria-labelledby="topics-h">
      <h1 id="topics-h">
        Topics{' '}
        <span className="muted small">
          {topics
            ? `${shown.length.toLocaleString('en')} of ${topics.length.toLocaleString('en')}`
            : 'loading…'}
        </span>
      </h1>
      <div className="toolbar">
        <form
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            location.hash = href({ view: 'topics', pattern: patternInput.trim() });
          }}
        >
          <label>
            Pattern
            <input
              name="pattern"
              placeholder="prices.>"
              value={patternInput}
              onChange={(e) => setPatternInput(e.target.value)}
              spellCheck={false}
            />
          </label>
          <button type="submit">Apply</button>
        </form>
        <label>
          Search
          <input
            name="search"
            type="search"
            placeholder="filter by name"
            value={search}
            onChange={(e) => setSearch(e.target.value)}
            spellCheck={false}
          />
        </label>
        <span className="spacer" />
        <span className="muted small">{loadedAt ? `updated ${ago(loadedAt)}` : ''}</span>
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <VirtualTable
        className="topics-table"
        label="Topics"
        rowsLabel="Topic rows"
        columns={COLUMNS.map((c) => ({
          label: c.label,
          num: c.num,
          sort: c.key && sort.key === c.key ? (sort.desc ? 'descending' : 'ascending') : undefined,
          head: c.key ? (
            <button
              type="button"
              className="sort"
              onClick={() =>
                setSort((s) => ({
                  key: c.key!,
                  desc: s.key === c.key ? !s.desc : c.key !== 'topic',
                }))
              }
            >
              {c.label}
              {sort.key === c.key ? (sort.desc ? ' ▼' : ' ▲') : ''}
            </button>
          ) : undefined,
        }))}
        items={shown}
        rowHeight={ROW}
        minHeight={240}
        empty={
          topics && (
            <>
              No topics{pattern ? ` match ${pattern}` : ''}
              {search ? ` containing “${search}”` : ''}.
            </>
          )
        }
        row={(t) => (
          <>
            <div role="cell" className="mono ellipsis">
              <a href={href({ view: 'topic', topic: t.topic })}>{t.topic}</a>
            </div>
            <div role="cell" className="num">
              {num(t.rate)}
            </div>
            <div role="cell" className="num">
              {num(t.count)}
            </div>
            <div role="cell" className="num">
              {num(t.firstSeq)}
            </div>
            <div role="cell" className="num">
              {num(t.lastSeq)}
            </div>
            <div role="cell" className="mono small">
              {t.epoch}
            </div>
            <div role="cell" className="small">
              {retention(t.retention)}
            </div>
            <div
              role="cell"
              className="small"
              title={t.lastTime ? new Date(t.lastTime).toISOString() : ''}
            >
              {ago(t.lastTime)}
            </div>
          </>
        )}
      />
    </section>
  );
}
