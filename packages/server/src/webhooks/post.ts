import type { AttemptResult } from './metrics.js';

/** Most bytes of a receiver's answer read (and thrown away) so the connection can be reused. */
export const MAX_ANSWER_BYTES = 64 * 1024;

export interface PostResult {
  result: AttemptResult;
  /** The HTTP status, when an answer came. */
  status?: number;
  /** What went wrong, for the log and the dead-letter event (never a header or the body sent). */
  error?: string;
}

/**
 * POSTs `body` to `url` and says how it went: `success` for a 2xx answer, `http_error` for any
 * other (a redirect is not followed), `timeout` when no whole answer came within `timeoutMs`,
 * `network_error` otherwise. At most {@link MAX_ANSWER_BYTES} of the answer are read, then it is
 * dropped. `stop` aborts the request (the server closing, the lease lost).
 */
export async function post(
  url: string,
  body: string,
  headers: Record<string, string>,
  timeoutMs: number,
  stop: AbortSignal,
): Promise<PostResult> {
  const timeout = AbortSignal.timeout(Math.max(1, timeoutMs));
  const signal = AbortSignal.any([stop, timeout]);
  try {
    const res = await fetch(url, { method: 'POST', body, headers, redirect: 'manual', signal });
    await discard(res);
    if (res.status >= 200 && res.status < 300) return { result: 'success', status: res.status };
    return { result: 'http_error', status: res.status, error: `HTTP ${res.status}` };
  } catch (err) {
    if (timeout.aborted && !stop.aborted) {
      return { result: 'timeout', error: `no answer within ${timeoutMs} ms` };
    }
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const what = cause?.code ?? cause?.message ?? (err as Error).message;
    return { result: 'network_error', error: String(what).slice(0, 200) };
  }
}

/** Reads up to {@link MAX_ANSWER_BYTES} of the answer, then cancels the rest. */
async function discard(res: Response): Promise<void> {
  if (res.body === null) return;
  const reader = res.body.getReader();
  let read = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    read += value.byteLength;
    if (read > MAX_ANSWER_BYTES) {
      await reader.cancel().catch(() => undefined);
      return;
    }
  }
}
