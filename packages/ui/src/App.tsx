import { useEffect, useState } from 'react';
import { getToken, onAuthError, onTokenChange, setToken, type ApiError } from './api';
import { href, useRoute, type Route } from './router';
import { restartStats, useStats } from './stats';
import { Connections } from './views/Connections';
import { Inspector } from './views/Inspector';
import { Limits } from './views/Limits';
import { Overview } from './views/Overview';
import { Topics } from './views/Topics';

type Theme = 'light' | 'dark' | 'system';
const THEME_KEY = 'rill.dashboard.theme';

function applyTheme(t: Theme): void {
  const dark =
    t === 'dark' || (t === 'system' && matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
}

const NAV: Array<{ route: Route; label: string; key: string }> = [
  { route: { view: 'overview' }, label: 'Overview', key: '1' },
  { route: { view: 'topics' }, label: 'Topics', key: '2' },
  { route: { view: 'connections' }, label: 'Connections', key: '3' },
  { route: { view: 'limits' }, label: 'Limits & auth', key: '4' },
];

/** The credential form: shown when the server asked for one, or on demand. */
function TokenForm({ reason, onDone }: { reason: string | null; onDone: () => void }) {
  const [value, setValue] = useState('');
  return (
    <form
      className="token-form"
      aria-label="Credentials"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value);
        onDone();
      }}
    >
      <h2>Credentials</h2>
      <p>
        {reason ?? 'The dashboard sends this token with every request.'} Paste a JWT or an API key
        with the <code>admin</code> grant (<code>rill token --sub you --admin</code>). It is kept in
        this tab only (session storage) and sent as a Bearer header.
      </p>
      <label>
        Token or API key
        <input
          type="password"
          autoComplete="off"
          autoFocus
          value={value}
          onChange={(e) => setValue(e.target.value)}
          name="token"
        />
      </label>
      <div className="row">
        <button type="submit" className="primary">
          Use it
        </button>
        {getToken() && (
          <button
            type="button"
            onClick={() => {
              setToken(null);
              onDone();
            }}
          >
            Forget the current one
          </button>
        )}
        <button type="button" onClick={onDone}>
          Cancel
        </button>
      </div>
    </form>
  );
}

export function App() {
  const route = useRoute();
  const stats = useStats();
  const [theme, setTheme] = useState<Theme>(
    () => (localStorage.getItem(THEME_KEY) as Theme | null) ?? 'system',
  );
  const [auth, setAuth] = useState<{ reason: string | null } | null>(null);
  const [, bump] = useState(0);

  useEffect(() => {
    applyTheme(theme);
    localStorage.setItem(THEME_KEY, theme);
    const mq = matchMedia('(prefers-color-scheme: dark)');
    const on = (): void => applyTheme(theme);
    mq.addEventListener('change', on);
    bump((n) => n + 1);
    return () => mq.removeEventListener('change', on);
  }, [theme]);

  useEffect(
    () =>
      onAuthError((e: ApiError) =>
        setAuth({
          reason:
            e.status === 401
              ? `This server needs credentials (${e.code}).`
              : `These credentials lack the admin grant (${e.message}).`,
        }),
      ),
    [],
  );
  useEffect(() => onTokenChange(() => restartStats()), []);
  useEffect(() => {
    const e = stats.error;
    if (e && (e.status === 401 || e.status === 403)) {
      setAuth({
        reason:
          e.status === 401
            ? `This server needs credentials (${e.code}).`
            : 'These credentials lack the admin grant.',
      });
    }
  }, [stats.error]);

  // Keys 1–4 switch views (not while typing).
  useEffect(() => {
    const onKey = (e: KeyboardEvent): void => {
      const t = e.target as HTMLElement;
      if (e.altKey || e.ctrlKey || e.metaKey || t.closest('input, textarea, select')) return;
      const n = NAV.find((x) => x.key === e.key);
      if (n) location.hash = href(n.route);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);

  const node = stats.latest?.node;
  const current = route.view === 'topic' ? 'topics' : route.view;
  const live = stats.status === 'open';
  return (
    <div className="app">
      <header className="top">
        <a className="brand" href="#/overview">
          <span className="logo" aria-hidden="true">
            ≋
          </span>{' '}
          Rill
        </a>
        {node && (
          <span className="node-info">
            <span title="Node id">{node.id}</span>
            <span>v{node.version}</span>
            <span className={node.engine.ok ? 'ok' : 'bad'}>
              {node.engine.name} {node.engine.ok ? 'ok' : 'down'}
            </span>
            {stats.latest!.cluster && <span>{stats.latest!.nodes.length} nodes</span>}
          </span>
        )}
        <span className="spacer" />
        <span
          className={`status ${live ? 'ok' : stats.status === 'unavailable' ? 'warn' : 'bad'}`}
          role="status"
          aria-live="polite"
        >
          {live
            ? 'live'
            : stats.status === 'unavailable'
              ? 'stats unavailable'
              : stats.status === 'connecting'
                ? 'connecting…'
                : 'reconnecting…'}
        </span>
        <label className="theme">
          <span className="sr-only">Theme</span>
          <select value={theme} onChange={(e) => setTheme(e.target.value as Theme)}>
            <option value="system">System theme</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
        </label>
        <button type="button" onClick={() => setAuth({ reason: null })}>
          {getToken() ? 'Credentials ✓' : 'Credentials'}
        </button>
      </header>
      <nav className="side" aria-label="Views">
        {NAV.map((n) => (
          <a
            key={n.key}
            href={href(n.route)}
            aria-current={current === n.route.view ? 'page' : undefined}
            title={`${n.label} (key ${n.key})`}
          >
            {n.label}
          </a>
        ))}
      </nav>
      <main>
        {auth && <TokenForm reason={auth.reason} onDone={() => setAuth(null)} />}
        {route.view === 'overview' && <Overview stats={stats} />}
        {route.view === 'topics' && <Topics pattern={route.pattern ?? ''} />}
        {route.view === 'topic' && <Inspector topic={route.topic} />}
        {route.view === 'connections' && <Connections />}
        {route.view === 'limits' && <Limits stats={stats} />}
      </main>
    </div>
  );
}
