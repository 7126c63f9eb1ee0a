import { createClient, type RillClient, type RillEvent } from '@rill/client';
import { useEffect, useMemo, useRef, useState } from 'react';
import { api, ApiError, getToken, onTokenChange } from '../api';
import { Copy } from '../components/Copy';
import { ago, num, time } from '../format';
import { href } from '../router';
import type { TopicInfo } from './Topics';

/** Events the live tail keeps (the oldest are dropped). */
const TAIL_MAX = 500;
const PAGE = 50;

type Follow =
  | { kind: 'now' }
  | { kind: 'earliest' }
  | { kind: 'seq'; seq: number }
  | { kind: 'time'; since: string }
  | { kind: 'cursor'; cursor: string };

function useClient(): RillClient {
  const [token, setTok] = useState(getToken());
  useEffect(() => onTokenChange(() => setTok(getToken())), []);
  const client = useMemo(
    () => createClient({ transport: 'sse', ...(token ? { token } : {}) }),
    [token],
  );
  useEffect(() => () => client.close(), [client]);
  return client;
}

function EventRow({
  ev,
  selected,
  onSelect,
}: {
  ev: RillEvent;
  selected: boolean;
  onSelect: () => void;
}) {
  const data = JSON.stringify(ev.data);
  return (
    <li>
      <button
        type="button"
        className={selected ? 'event selected' : 'event'}
        aria-pressed={selected}
        onClick={onSelect}
      >
        <span className="seq">#{ev.seq}</span>
        <span className="etime">{time(ev.time)}</span>
        <span className="etype">{ev.type ?? ''}</span>
        <span className="edata">{data.length > 160 ? data.slice(0, 160) + '…' : data}</span>
      </button>
    </li>
  );
}

function EventDetail({ ev }: { ev: RillEvent }) {
  return (
    <div className="detail" aria-label="Selected event">
      <div className="row">
        <strong>#{ev.seq}</strong>
        <span className="muted small">{new Date(ev.time).toISOString()}</span>
        <span className="spacer" />
        <Copy text={ev.id} label="Copy cursor" />
        <Copy text={JSON.stringify(ev.data, null, 2)} label="Copy data" />
      </div>
      <div className="mono small muted">cursor {ev.id}</div>
      <pre className="json">{JSON.stringify(ev, null, 2)}</pre>
    </div>
  );
}

function Tail({ topic, client }: { topic: string; client: RillClient }) {
  const [follow, setFollow] = useState<Follow>({ kind: 'now' });
  const [paused, setPaused] = useState(false);
  const [events, setEvents] = useState<RillEvent[]>([]);
  const [state, setState] = useState('connecting');
  const [selected, setSelected] = useState<RillEvent | null>(null);
  const [fromInput, setFromInput] = useState('');
  const cursor = useRef<string | undefined>(undefined);

  useEffect(() => {
    setEvents([]);
    cursor.current = undefined;
  }, [topic, follow]);

  useEffect(() => {
    if (paused) {
      setState('paused');
      return;
    }
    const resume = cursor.current;
    const opts =
      resume !== undefined
        ? { cursor: resume }
        : follow.kind === 'earliest'
          ? { from: 'earliest' as const }
          : follow.kind === 'seq'
            ? { from: follow.seq }
            : follow.kind === 'time'
              ? { since: follow.since }
              : follow.kind === 'cursor'
                ? { cursor: follow.cursor }
                : { from: 'now' as const };
    let pending: RillEvent[] = [];
    let frame = 0;
    const flush = (): void => {
      frame = 0;
      const batch = pending;
      pending = [];
      setEvents((old) => [...batch.reverse(), ...old].slice(0, TAIL_MAX));
    };
    const sub = client.subscribe(topic, {
      ...opts,
      onEvent: (ev) => {
        pending.push(ev);
        if (!frame) frame = requestAnimationFrame(flush);
      },
      onState: (s) =>
        setState(s.state === 'closed' && s.error ? `closed: ${s.error.code}` : s.state),
    });
    return () => {
      cursor.current = sub.cursor ?? cursor.current;
      if (frame) cancelAnimationFrame(frame);
      if (pending.length) flush();
      sub.close();
    };
  }, [client, topic, follow, paused]);

  const applyFrom = (): void => {
    const v = fromInput.trim();
    if (v === '' || v === 'now') setFollow({ kind: 'now' });
    else if (v === 'earliest') setFollow({ kind: 'earliest' });
    else if (/^\d+$/.test(v)) setFollow({ kind: 'seq', seq: Number(v) });
    else if (!Number.isNaN(Date.parse(v)))
      setFollow({ kind: 'time', since: new Date(v).toISOString() });
    else setFollow({ kind: 'cursor', cursor: v });
    setPaused(false);
  };

  return (
    <div className="panel">
      <div className="row">
        <h2>Live tail</h2>
        <span
          className={`pill ${state === 'open' ? 'ok' : state === 'paused' ? 'warn' : 'bad'}`}
          role="status"
        >
          {state}
        </span>
        <span className="muted small">{num(events.length)} shown (newest first)</span>
        <span className="spacer" />
        <button type="button" onClick={() => setPaused((p) => !p)} aria-pressed={paused}>
          {paused ? 'Resume' : 'Pause'}
        </button>
        <button type="button" onClick={() => setEvents([])}>
          Clear
        </button>
      </div>
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          applyFrom();
        }}
      >
        <label>
          Follow from
          <input
            name="from"
            placeholder="now · earliest · seq · 2025-01-01T12:00Z · cursor"
            value={fromInput}
            onChange={(e) => setFromInput(e.target.value)}
            spellCheck={false}
            size={36}
          />
        </label>
        <button type="submit">Follow</button>
      </form>
      <div className="split">
        <ol className="events" aria-label="Live events">
          {events.map((ev) => (
            <EventRow
              key={ev.id}
              ev={ev}
              selected={selected?.id === ev.id}
              onSelect={() => setSelected(ev)}
            />
          ))}
          {events.length === 0 && <li className="muted empty">Waiting for events…</li>}
        </ol>
        {selected && <EventDetail ev={selected} />}
      </div>
    </div>
  );
}

interface HistoryPage {
  epoch: string;
  firstSeq: number;
  lastSeq: number;
  events: RillEvent[];
  next: number;
  more: boolean;
}

function History({ topic, info }: { topic: string; info: TopicInfo | null }) {
  const [after, setAfter] = useState<number | null>(null);
  const [page, setPage] = useState<HistoryPage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<RillEvent | null>(null);
  const first = info ? Math.max(0, info.firstSeq - 1) : 0;
  // Start with the newest page.
  const at = after ?? (info ? Math.max(first, info.lastSeq - PAGE) : null);
  // On the newest page (no page chosen), new events are taken in as the topic grows.
  const growth = after === null ? (info?.lastSeq ?? 0) : 0;

  useEffect(() => {
    if (at === null) return;
    const ac = new AbortController();
    api<HistoryPage>(`/v1/topics/${encodeURIComponent(topic)}/events?after=${at}&limit=${PAGE}`, {
      signal: ac.signal,
    }).then(
      (p) => {
        setPage(p);
        setError(null);
      },
      (e: unknown) => {
        if (!ac.signal.aborted)
          setError(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e));
      },
    );
    return () => ac.abort();
  }, [topic, at, growth]);

  return (
    <div className="panel">
      <div className="row">
        <h2>History</h2>
        {page && (
          <span className="muted small">
            {page.events.length
              ? `#${page.events[0]!.seq}–#${page.events[page.events.length - 1]!.seq} of #${page.firstSeq}–#${page.lastSeq}`
              : 'no events here'}
          </span>
        )}
        <span className="spacer" />
        <button type="button" onClick={() => setAfter(first)} disabled={at === null || at <= first}>
          Oldest
        </button>
        <button
          type="button"
          onClick={() => setAfter(Math.max(first, (at ?? 0) - PAGE))}
          disabled={at === null || at <= first}
        >
          Older
        </button>
        <button type="button" onClick={() => page && setAfter(page.next)} disabled={!page?.more}>
          Newer
        </button>
        <button
          type="button"
          onClick={() => page && setAfter(Math.max(first, page.lastSeq - PAGE))}
          disabled={!page?.more}
        >
          Newest
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <div className="split">
        <ol className="events" aria-label="History events">
          {page?.events.map((ev) => (
            <EventRow
              key={ev.id}
              ev={ev}
              selected={selected?.id === ev.id}
              onSelect={() => setSelected(ev)}
            />
          ))}
        </ol>
        {selected && <EventDetail ev={selected} />}
      </div>
    </div>
  );
}

function Publish({
  topic,
  client,
  onPublished,
}: {
  topic: string;
  client: RillClient;
  onPublished: () => void;
}) {
  const [type, setType] = useState('');
  const [key, setKey] = useState('');
  const [data, setData] = useState('{\n  "hello": "world"\n}');
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const parsed = useMemo(() => {
    try {
      return { ok: true as const, value: JSON.parse(data) as unknown };
    } catch (e) {
      return { ok: false as const, error: (e as Error).message };
    }
  }, [data]);
  return (
    <form
      className="panel publish"
      aria-labelledby="publish-h"
      onSubmit={(e) => {
        e.preventDefault();
        if (!parsed.ok) return;
        setBusy(true);
        client
          .publish(topic, parsed.value, {
            ...(type ? { type } : {}),
            ...(key ? { key } : {}),
          })
          .then(
            (r) => {
              setResult({
                ok: true,
                text: `stored as #${r.seq}${r.duplicate ? ' (duplicate key: not stored again)' : ''}`,
              });
              onPublished();
            },
            (err: { code?: string; message?: string }) =>
              setResult({
                ok: false,
                text: `${err.code ?? 'error'}: ${err.message ?? String(err)}`,
              }),
          )
          .finally(() => setBusy(false));
      }}
    >
      <h2 id="publish-h">Publish</h2>
      <div className="row">
        <label>
          Type
          <input
            name="type"
            value={type}
            onChange={(e) => setType(e.target.value)}
            placeholder="optional"
            spellCheck={false}
          />
        </label>
        <label>
          Key
          <input
            name="key"
            value={key}
            onChange={(e) => setKey(e.target.value)}
            placeholder="idempotency key, optional"
            spellCheck={false}
          />
        </label>
      </div>
      <label className="block">
        Data (JSON)
        <textarea
          name="data"
          rows={5}
          value={data}
          onChange={(e) => setData(e.target.value)}
          spellCheck={false}
          aria-invalid={!parsed.ok}
          aria-describedby="data-status"
        />
      </label>
      <div className="row">
        <span id="data-status" className={parsed.ok ? 'muted small' : 'error small'}>
          {parsed.ok ? 'valid JSON' : parsed.error}
        </span>
        <span className="spacer" />
        {result && (
          <span className={result.ok ? 'ok small' : 'error small'} role="status">
            {result.text}
          </span>
        )}
        <button type="submit" className="primary" disabled={!parsed.ok || busy}>
          Publish
        </button>
      </div>
    </form>
  );
}

function Snippets({ topic }: { topic: string }) {
  const origin = location.origin;
  const path = `/v1/topics/${encodeURIComponent(topic)}/stream`;
  const snippets: Array<[string, string]> = [
    [
      'curl',
      `curl -N ${origin}${path}${getToken() ? ` \\\n  -H "Authorization: Bearer $RILL_TOKEN"` : ''}`,
    ],
    [
      'EventSource',
      `const es = new EventSource('${origin}${path}');\nes.onmessage = (e) => {\n  const ev = JSON.parse(e.data); // {topic, seq, id, time, data}\n  console.log(ev.seq, ev.data);\n};`,
    ],
    [
      'SDK',
      `import { createClient } from '@rill/client';\nconst rill = createClient({ url: '${origin}'${getToken() ? ', token: getToken' : ''} });\nfor await (const ev of rill.subscribe('${topic}', { from: 'earliest' })) {\n  console.log(ev.seq, ev.data);\n}`,
    ],
    [
      'React',
      `import { RillProvider, useStream } from '@rill/react';\nfunction Feed() {\n  const { last, status } = useStream('${topic}', { maxEvents: 50 });\n  return <p>{status}: {JSON.stringify(last?.data)}</p>;\n}\n// <RillProvider options={{ url: '${origin}' }}><Feed /></RillProvider>`,
    ],
  ];
  const [tab, setTab] = useState(0);
  return (
    <div className="panel">
      <h2>Use this topic</h2>
      <div className="tabs" role="tablist" aria-label="Snippets">
        {snippets.map(([name], i) => (
          <button
            key={name}
            type="button"
            role="tab"
            id={`snip-tab-${i}`}
            aria-selected={tab === i}
            aria-controls="snip-panel"
            tabIndex={tab === i ? 0 : -1}
            onClick={() => setTab(i)}
            onKeyDown={(e) => {
              if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
                const n =
                  (i + (e.key === 'ArrowRight' ? 1 : snippets.length - 1)) % snippets.length;
                setTab(n);
                document.getElementById(`snip-tab-${n}`)?.focus();
              }
            }}
          >
            {name}
          </button>
        ))}
      </div>
      <div id="snip-panel" role="tabpanel" aria-labelledby={`snip-tab-${tab}`} className="snippet">
        <pre>{snippets[tab]![1]}</pre>
        <Copy text={snippets[tab]![1]} />
      </div>
    </div>
  );
}

/** One topic: its head, a live tail, its history, a publish form and how to use it. */
export function Inspector({ topic }: { topic: string }) {
  const client = useClient();
  const [info, setInfo] = useState<TopicInfo | null>(null);
  const [missing, setMissing] = useState(false);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ac = new AbortController();
    const load = (): void => {
      api<TopicInfo>(`/v1/topics/${encodeURIComponent(topic)}`, { signal: ac.signal }).then(
        (i) => {
          setInfo(i);
          setMissing(false);
        },
        (e: unknown) => {
          if (e instanceof ApiError && e.code === 'topic_not_found') setMissing(true);
        },
      );
    };
    load();
    const timer = setInterval(() => document.visibilityState === 'visible' && load(), 5000);
    return () => {
      ac.abort();
      clearInterval(timer);
    };
  }, [topic, tick]);

  return (
    <section aria-labelledby="topic-h">
      <nav className="crumbs" aria-label="Breadcrumb">
        <a href={href({ view: 'topics' })}>Topics</a> ›
      </nav>
      <h1 id="topic-h" className="mono">
        {topic}
      </h1>
      {info ? (
        <dl className="facts">
          <div>
            <dt>Events</dt>
            <dd>{num(info.count)}</dd>
          </div>
          <div>
            <dt>Seq</dt>
            <dd>
              #{info.firstSeq}–#{info.lastSeq}
            </dd>
          </div>
          <div>
            <dt>Rate</dt>
            <dd>{num(info.rate)}/s</dd>
          </div>
          <div>
            <dt>Epoch</dt>
            <dd className="mono">{info.epoch}</dd>
          </div>
          <div>
            <dt>Last event</dt>
            <dd>{ago(info.lastTime)}</dd>
          </div>
        </dl>
      ) : (
        <p className="muted">
          {missing ? 'No event yet: publish the first one below.' : 'Loading…'}
        </p>
      )}
      <Tail topic={topic} client={client} />
      <div className="two">
        <Publish topic={topic} client={client} onPublished={() => setTick((n) => n + 1)} />
        <Snippets topic={topic} />
      </div>
      <History topic={topic} info={info} />
    </section>
  );
}
