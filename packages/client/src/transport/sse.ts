import { fromBody, fromResponse, networkError, rillError, type RillError } from '../errors.js';
import type { PresenceChange, ResetNotice, RillEvent } from '../types.js';
import { withToken } from '../token.js';
import {
  noteExpiry,
  type StreamHandlers,
  type StreamRequest,
  type Transport,
  type TransportContext,
} from './transport.js';

/** Query string of a stream request (shared with long-poll, which names the cursor `cursor`). */
export function streamQuery(req: StreamRequest, cursorParam = 'lastEventId'): URLSearchParams {
  const q = new URLSearchParams({ topics: req.topics.join(',') });
  if (req.from !== undefined) q.set('from', req.from);
  if (req.since !== undefined) q.set('since', req.since);
  if (req.cursor !== undefined) q.set(cursorParam, req.cursor);
  return q;
}

/**
 * How long an opened stream may stay silent before its first byte (ms): the server sends
 * `retry:` at once, so silence means a proxy is buffering the stream. Option `firstByteTimeout`.
 */
export const FIRST_BYTE_TIMEOUT = 10_000;
/**
 * How long a stream may stay silent later (ms): the server sends a heartbeat every 15 s by default,
 * so longer means a dead connection that TCP has not noticed. Option `idleTimeout`.
 */
export const IDLE_TIMEOUT = 45_000;

/**
 * SSE over `fetch`, so it can send headers (the token as `Authorization: Bearer`, which
 * `EventSource` cannot), and so a stop is an abort. The stream is parsed here by hand: it is the hot path, and Rill's frames need only the
 * `id`, `event`, `data` and `retry` fields of the WHATWG rules.
 */
export const sseTransport: Transport = (req, h, ctx) => {
  const ac = new AbortController();
  void run(req, h, ctx, ac).catch((err: unknown) => {
    if (!ac.signal.aborted) h.close(networkError(err));
  });
  return () => ac.abort();
};

async function run(
  req: StreamRequest,
  h: StreamHandlers,
  ctx: TransportContext,
  ac: AbortController,
): Promise<void> {
  const signal = ac.signal;
  const o = ctx.options as { firstByteTimeout?: number; idleTimeout?: number };
  let first = true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Covers the response head too: a buffering proxy may hold it back as well.
  const watch = (): void => {
    clearTimeout(timer);
    timer = setTimeout(
      () => {
        h.close(
          first
            ? rillError('stream_blocked', 'No bytes arrived on the stream', { retryable: true })
            : rillError('connection_failed', 'The stream went silent', { retryable: true }),
        );
        ac.abort();
      },
      first ? (o.firstByteTimeout ?? FIRST_BYTE_TIMEOUT) : (o.idleTimeout ?? IDLE_TIMEOUT),
    );
  };
  signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  // The token is read once per connection: a refreshed one is used by the next connection.
  const token = await ctx.tokens.get();
  if (signal.aborted) return;
  const close = (err: RillError, retryAfter?: number): void =>
    h.close(noteExpiry(err, ctx, token), retryAfter);
  watch();
  const q = streamQuery(req);
  if (req.presence) q.set('presence', 'true');
  const res = await ctx.fetch(`${ctx.url}/v1/stream?${q.toString()}`, {
    headers: withToken({ accept: 'text/event-stream', ...(await ctx.headers()) }, token),
    signal,
    cache: 'no-store',
  });
  if (!res.ok) {
    clearTimeout(timer);
    // A Retry-After (429, 503) rides on the error: the subscription waits at least that long.
    return close(await fromResponse(res));
  }
  if (!res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    clearTimeout(timer);
    void res.body?.cancel();
    return h.close(
      rillError('stream_blocked', 'The answer is not an event stream', { retryable: true }),
    );
  }
  const date = Date.parse(res.headers.get('date') ?? '');
  h.open(Number.isNaN(date) ? {} : { serverTime: date });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let id: string | undefined;
  let type = '';
  let data: string | undefined;
  for (;;) {
    const { value, done } = await reader.read().finally(() => clearTimeout(timer));
    if (done) break;
    first = false;
    watch();
    buf += value;
    let start = 0;
    for (;;) {
      let nl = buf.indexOf('\n', start);
      const cr = buf.indexOf('\r', start);
      if (cr !== -1 && (nl === -1 || cr < nl)) {
        // A lone CR ends a line too; wait for more when it is the last byte (could be CRLF).
        if (cr === buf.length - 1) break;
        nl = cr;
      }
      if (nl === -1) break;
      const line = buf.slice(start, nl);
      start = nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1);
      if (line === '') {
        if (data !== undefined) {
          if (dispatch(type, data, id, h, close)) {
            clearTimeout(timer);
            void reader.cancel().catch(() => {});
            return;
          }
        }
        type = '';
        data = undefined;
        continue;
      }
      const c = line.indexOf(':');
      if (c === 0) continue;
      const field = c === -1 ? line : line.slice(0, c);
      const v = c === -1 ? '' : line.slice(line[c + 1] === ' ' ? c + 2 : c + 1);
      if (field === 'data') data = data === undefined ? v : `${data}\n${v}`;
      else if (field === 'event') type = v;
      else if (field === 'id') id = v;
      else if (field === 'retry' && /^\d+$/.test(v)) h.retry(Number(v));
    }
    buf = buf.slice(start);
    if (buf.length > 1 << 24) throw new Error('SSE line over 16 MiB');
  }
  h.close(rillError('connection_failed', 'The stream ended', { retryable: true }));
}

/** Hands one frame over; true when it ended the stream. */
function dispatch(
  type: string,
  data: string,
  id: string | undefined,
  h: StreamHandlers,
  close: (err: RillError) => void,
): boolean {
  const json = JSON.parse(data) as Record<string, unknown>;
  if (type === 'error') {
    close(
      fromBody({ error: { ...json, code: String(json.code), retryable: json.retryable === true } }),
    );
    return true;
  }
  if (type === 'reset') h.reset({ kind: 'reset', ...json } as unknown as ResetNotice, id);
  else if ((type === 'join' || type === 'leave') && typeof json.seq !== 'number') {
    // A presence notice: no seq, no id line.
    h.presence({ kind: type, ...json } as unknown as PresenceChange);
  } else h.event(json as unknown as RillEvent, id);
  return false;
}
