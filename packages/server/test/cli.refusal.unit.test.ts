import { describe, expect, it } from 'vitest';
import { fromBody, rillError } from '@rill/client';
import { describeRefusal } from '../src/cli/refusal.js';

const body = (extra: Record<string, unknown>) => ({
  error: {
    code: 'rate_limited',
    message: 'A rate or count limit was reached; retry after the time given',
    retryable: true,
    closeCode: 4008,
    ...extra,
  },
});

describe('describeRefusal', () => {
  it('names the limit, whose it is, its value and the wait', () => {
    const e = fromBody(
      body({ limit: 'publishesPerSecond', scope: 'key', limitValue: 100, retryAfter: 2 }),
      429,
    );
    expect(describeRefusal(e)).toBe(
      'rate limited: publishesPerSecond per key (limit 100), retry in 2s',
    );
    expect(describeRefusal(e, 2500)).toBe(
      'rate limited: publishesPerSecond per key (limit 100), retry in 2.5s',
    );
    // Given up (no more retries): the limit without a wait.
    expect(describeRefusal(e, null)).toBe('rate limited: publishesPerSecond per key (limit 100)');
  });

  it('says what it knows when the body is short', () => {
    expect(describeRefusal(fromBody(body({ limit: 'connections' }), 429))).toBe(
      'rate limited: connections',
    );
    expect(describeRefusal(rillError('rate_limited', 'x', { status: 429 }))).toBe(
      'rate limited: a limit',
    );
  });

  it('says overloaded for a 503 overloaded, and nothing for other errors', () => {
    const o = fromBody(
      {
        error: {
          code: 'overloaded',
          message: 'm',
          retryable: true,
          closeCode: 4009,
          retryAfter: 3,
        },
      },
      503,
    );
    expect(describeRefusal(o)).toBe('server overloaded, retry in 3s');
    expect(describeRefusal(rillError('engine_unavailable', 'x', { status: 503 }))).toBeUndefined();
  });
});
