import type { RillError } from '@rill/client';

/**
 * What a client command says about a server that asked it to wait: which limit a `429
 * rate_limited` hit and whose it is, or that the server is overloaded, and when the command tries
 * again (`delayMs`, else the error's Retry-After; `null` when it gives up). Undefined for other
 * errors.
 *
 * @example "rate limited: publishesPerSecond per key (limit 100), retry in 2s"
 */
export function describeRefusal(err: RillError, delayMs?: number | null): string | undefined {
  let what: string;
  if (err.code === 'rate_limited') {
    const limit = err.limit ?? 'a limit';
    const scope = err.scope === undefined ? '' : ` per ${err.scope}`;
    const value = err.limitValue === undefined ? '' : ` (limit ${err.limitValue})`;
    what = `rate limited: ${limit}${scope}${value}`;
  } else if (err.code === 'overloaded') {
    what = 'server overloaded';
  } else {
    return undefined;
  }
  if (delayMs === null) return what;
  const wait = delayMs ?? (err.retryAfter === undefined ? undefined : err.retryAfter * 1000);
  return wait === undefined ? what : `${what}, retry in ${formatDelay(wait)}`;
}

/** The longest a client command waits on one `Retry-After`, ms (a longer one is cut to it). */
export const CLI_MAX_RETRY_AFTER = 60_000;

/** `1s`, `1.5s`, `250ms`. */
export function formatDelay(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10}s` : `${Math.round(ms)}ms`;
}
