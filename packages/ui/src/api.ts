/**
 * How the dashboard talks to the server: only the public API (`/v1/…`), same origin, with the
 * credential the operator entered once (kept in this tab's session storage, sent as a Bearer
 * token, never in a URL).
 */

const TOKEN_KEY = 'rill.dashboard.token';

let token: string | null = sessionStorage.getItem(TOKEN_KEY);
const tokenListeners = new Set<() => void>();

export function getToken(): string | null {
  return token;
}

export function setToken(t: string | null): void {
  token = t && t.trim() !== '' ? t.trim() : null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  for (const l of tokenListeners) l();
}

export function onTokenChange(fn: () => void): () => void {
  tokenListeners.add(fn);
  return () => tokenListeners.delete(fn);
}

/** An error answer of the API: its catalogue code and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Told when a request was refused for want of credentials (401) or of the admin grant (403). */
const authListeners = new Set<(e: ApiError) => void>();
export function onAuthError(fn: (e: ApiError) => void): () => void {
  authListeners.add(fn);
  return () => authListeners.delete(fn);
}

function headers(extra?: HeadersInit): Headers {
  const h = new Headers(extra);
  if (token) h.set('authorization', `Bearer ${token}`);
  return h;
}

async function errorOf(res: Response): Promise<ApiError> {
  let code = 'http_' + res.status;
  let message = res.statusText;
  try {
    const body = (await res.json()) as { error?: { code?: string; message?: string } };
    if (body.error?.code) code = body.error.code;
    if (body.error?.message) message = body.error.message;
  } catch {
    // Not a catalogue answer (a proxy's page): the status says it.
  }
  const e = new ApiError(res.status, code, message);
  if (res.status === 401 || res.status === 403) for (const l of authListeners) l(e);
  return e;
}

/** A JSON request to the API; an error answer throws {@link ApiError}. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(path, { ...init, headers: headers(init.headers), cache: 'no-store' });
  if (!res.ok) throw await errorOf(res);
  return (await res.json()) as T;
}

/**
 * Reads an SSE endpoint over `fetch` (so the token goes in a header), calling `onEvent` for each
 * frame with its event name and data, reconnecting after a drop with a growing delay (1 s → 15 s).
 * `onStatus` says whether it is open; the returned function stops it.
 */
export function sse(
  path: string,
  onEvent: (event: string, data: string) => void,
  onStatus: (status: 'connecting' | 'open' | 'error', error?: ApiError) => void,
): () => void {
  const ac = new AbortController();
  let delay = 1000;
  const run = async (): Promise<void> => {
    while (!ac.signal.aborted) {
      onStatus('connecting');
      try {
        const res = await fetch(path, {
          headers: headers({ accept: 'text/event-stream' }),
          signal: ac.signal,
          cache: 'no-store',
        });
        if (!res.ok || !res.body) throw await errorOf(res);
        onStatus('open');
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let event = 'message';
        let data: string[] = [];
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let nl: number;
          while ((nl = buf.indexOf('\n')) !== -1) {
            const line = buf.slice(0, nl).replace(/\r$/, '');
            buf = buf.slice(nl + 1);
            if (line === '') {
              if (data.length > 0) onEvent(event, data.join('\n'));
              event = 'message';
              data = [];
            } else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            else if (line.startsWith('event:')) event = line.slice(6).trim();
          }
        }
        onStatus('error');
      } catch (e) {
        if (ac.signal.aborted) return;
        onStatus('error', e instanceof ApiError ? e : undefined);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  };
  void run();
  return () => ac.abort();
}

/**
 * Every item of a paged listing, page after page, up to `max` (or until `signal` aborts):
 * `page(after)` answers one page and the `after` of the next, null after the last.
 */
export async function allPages<T, C>(
  page: (after: C | null) => Promise<{ items: T[]; next: C | null }>,
  max: number,
  signal: AbortSignal,
): Promise<T[]> {
  const out: T[] = [];
  let after: C | null = null;
  do {
    const p: { items: T[]; next: C | null } = await page(after);
    out.push(...p.items);
    after = p.next;
  } while (after !== null && out.length < max && !signal.aborted);
  return out;
}
