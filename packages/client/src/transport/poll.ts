import { fromResponse, networkError } from '../errors.js';
import type { ResetNotice, RillEvent } from '../types.js';
import { withToken } from '../token.js';
import { streamQuery } from './sse.js';
import { noteExpiry, type Transport } from './transport.js';

/** Seconds one long-poll waits on the server (under the usual 30–60 s proxy timeouts). */
export const POLL_WAIT_SECONDS = 25;

/**
 * Long-polling `GET /v1/events`, for networks whose proxies break streaming: the same cursors,
 * patterns and reset notices, one request per batch.
 */
export const pollTransport: Transport = (req, h, ctx) => {
  const ac = new AbortController();
  void (async () => {
    let cursor = req.cursor;
    let opened = false;
    for (;;) {
      const q = streamQuery({ ...req, cursor }, 'cursor');
      // The first answer comes at once: it fixes the position and tells the subscription it is open.
      q.set('wait', String(opened ? POLL_WAIT_SECONDS : 0));
      // Every request takes the current token: a refreshed one is used from the next poll on.
      const token = await ctx.tokens.get();
      if (ac.signal.aborted) return;
      const res = await ctx.fetch(`${ctx.url}/v1/events?${q.toString()}`, {
        headers: withToken(await ctx.headers(), token),
        signal: ac.signal,
        cache: 'no-store',
      });
      if (!res.ok) {
        // A Retry-After (429, 503) rides on the error: the subscription waits at least that long.
        return h.close(noteExpiry(await fromResponse(res), ctx, token));
      }
      const body = (await res.json()) as { events: RillEvent[]; cursor: string; resets?: string[] };
      if (!opened) {
        opened = true;
        const date = Date.parse(res.headers.get('date') ?? '');
        h.open(Number.isNaN(date) ? {} : { serverTime: date });
      }
      for (const r of body.resets ?? []) {
        const n = (typeof r === 'string' ? JSON.parse(r) : r) as Omit<ResetNotice, 'kind'>;
        h.reset({ kind: 'reset', ...n }, undefined);
      }
      body.events.forEach((ev, i) =>
        h.event(ev, i === body.events.length - 1 ? body.cursor : undefined),
      );
      if (body.events.length === 0) h.cursor(body.cursor);
      cursor = body.cursor;
      if (ac.signal.aborted) return;
    }
  })().catch((err: unknown) => {
    if (!ac.signal.aborted) h.close(networkError(err));
  });
  return () => ac.abort();
};
