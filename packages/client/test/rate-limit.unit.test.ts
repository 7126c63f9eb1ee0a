/**
 * What the SDK reads from a `429 rate_limited` or `503 overloaded`: the error class, `limit`,
 * `scope`, `limitValue` and `retryAfter` from the body (the `Retry-After` header when the body
 * has none), and how long a retry waits.
 */
import { describe, expect, it } from 'vitest';
import {
  closeCodeRetryable,
  fromBody,
  fromResponse,
  MAX_RETRY_AFTER,
  parseRetryAfter,
  RateLimitedError,
  retryDelay,
  rillError,
  UnavailableError,
} from '../src/index.js';

/** The body a Rill server sends with a 429 (docs/protocol.md § Errors). */
const RATE_LIMITED = {
  error: {
    limit: 'publishesPerSecond',
    scope: 'key',
    limitValue: 100,
    retryAfter: 2,
    code: 'rate_limited',
    message: 'A rate or count limit was reached; retry after the time given',
    retryable: true,
    closeCode: 4008,
  },
};

describe('rate_limited and overloaded errors', () => {
  it('reads a 429 body: RateLimitedError, retryable, with the limit, scope, value and wait', () => {
    const e = fromBody(RATE_LIMITED, 429);
    expect(e).toBeInstanceOf(RateLimitedError);
    expect(e.code).toBe('rate_limited');
    expect(e.retryable).toBe(true);
    expect(e.status).toBe(429);
    expect(e.closeCode).toBe(4008);
    expect(e.limit).toBe('publishesPerSecond');
    expect(e.scope).toBe('key');
    expect(e.limitValue).toBe(100);
    expect(e.retryAfter).toBe(2);
    expect(e.details).toEqual({ limit: 'publishesPerSecond', scope: 'key', limitValue: 100 });
  });

  it('takes the Retry-After header when the body has no retryAfter', async () => {
    const rest: Record<string, unknown> = { ...RATE_LIMITED.error };
    delete rest.retryAfter;
    const res = new Response(JSON.stringify({ error: rest }), {
      status: 429,
      headers: { 'retry-after': '7', 'content-type': 'application/json' },
    });
    const e = await fromResponse(res);
    expect(e).toBeInstanceOf(RateLimitedError);
    expect(e.retryAfter).toBe(7);
    // A 429 from something that is not Rill (a proxy's HTML page) is still a rate limit.
    const proxy = await fromResponse(
      new Response('<html>slow down</html>', { status: 429, headers: { 'retry-after': '3' } }),
    );
    expect(proxy).toBeInstanceOf(RateLimitedError);
    expect(proxy.retryable).toBe(true);
    expect(proxy.retryAfter).toBe(3);
  });

  it('reads a WebSocket error message and close codes 4008 and 4009', () => {
    const ws = fromBody({ op: 'error', id: 3, error: RATE_LIMITED.error });
    expect(ws).toBeInstanceOf(RateLimitedError);
    expect(ws.limit).toBe('publishesPerSecond');
    expect(ws.retryAfter).toBe(2);
    expect(closeCodeRetryable(4008)).toBe(true);
    expect(closeCodeRetryable(4009)).toBe(true);
    expect(rillError('rate_limited', 'closed', { closeCode: 4008 })).toBeInstanceOf(
      RateLimitedError,
    );
    expect(rillError('overloaded', 'closed', { closeCode: 4009 })).toBeInstanceOf(UnavailableError);
  });

  it('reads a 503 overloaded as UnavailableError with its wait', () => {
    const e = fromBody(
      {
        error: {
          retryAfter: 4,
          code: 'overloaded',
          message: 'The server is overloaded; retry later or on another node',
          retryable: true,
          closeCode: 4009,
        },
      },
      503,
    );
    expect(e).toBeInstanceOf(UnavailableError);
    expect(e.retryAfter).toBe(4);
    expect(e.limit).toBeUndefined();
  });

  it('parses Retry-After as seconds or an HTTP date, and ignores anything else', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter('5', now)).toBe(5);
    expect(parseRetryAfter(' 120 ', now)).toBe(120);
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:03 GMT', now)).toBe(3);
    expect(parseRetryAfter('Tue, 31 Dec 2024 23:59:00 GMT', now)).toBeUndefined();
    for (const bad of ['0', '-1', '1.5', 'soon', '', null, undefined]) {
      expect(parseRetryAfter(bad, now)).toBeUndefined();
    }
  });

  it('waits Retry-After before a retry, cut to the maximum', () => {
    expect(retryDelay(fromBody(RATE_LIMITED, 429))).toBe(2000);
    const huge = fromBody({ error: { ...RATE_LIMITED.error, retryAfter: 86_400 } }, 429);
    expect(retryDelay(huge)).toBe(MAX_RETRY_AFTER);
    expect(retryDelay(huge, 60_000)).toBe(60_000);
    expect(retryDelay(rillError('internal', 'x', { status: 500 }))).toBeUndefined();
  });
});
