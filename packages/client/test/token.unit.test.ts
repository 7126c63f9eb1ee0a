/**
 * The token's life in the client, with fake timers: reading a JWT's `exp` without verifying it,
 * when a refresh is due (80 % of the lifetime left, at least 1 s before expiry, never sooner than
 * 1 s, never past what `setTimeout` can wait), one call of the function at a time, refreshes only
 * while something holds the token, and which token an expiry report spends.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { jwtExpiry, refreshDelay, settleAuth, TokenSource, withToken } from '../src/token.js';
import { rillError, RillError } from '../src/errors.js';

const b64url = (s: string): string => Buffer.from(s).toString('base64url');

/** A JWT-shaped token (unsigned: the client never verifies) with these claims. */
export function fakeJwt(claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}.c2ln`;
}

/** A JWT that expires `ms` from the (fake) clock's now; `n` tells tokens apart. */
function jwtIn(ms: number, n = 0): string {
  return fakeJwt({ sub: 'alice', n, exp: (Date.now() + ms) / 1000 });
}

describe('jwtExpiry', () => {
  it("reads a JWT's exp (seconds) as ms, whatever else the payload holds", () => {
    expect(jwtExpiry(fakeJwt({ exp: 1795333328 }))).toBe(1795333328000);
    expect(
      jwtExpiry(fakeJwt({ exp: 1795333328.5, sub: 'zoë ☃', rill: { subscribe: ['a.>'] } })),
    ).toBe(1795333328500);
    // base64url's own characters ('-' and '_') and no padding.
    const odd = fakeJwt({ exp: 2000000000, x: '>>>???~~~' });
    expect(odd.split('.')[1]).toMatch(/[-_]/);
    expect(jwtExpiry(odd)).toBe(2000000000000);
  });

  it('is undefined for API keys, opaque tokens, bad payloads and a missing or odd exp', () => {
    expect(jwtExpiry('rill_' + 'A'.repeat(43))).toBeUndefined();
    expect(jwtExpiry('rill_a.' + b64url('{"exp":1}') + '.c')).toBeUndefined();
    expect(jwtExpiry('opaque-token')).toBeUndefined();
    expect(jwtExpiry('a.b')).toBeUndefined();
    expect(jwtExpiry('a.%%%.c')).toBeUndefined();
    expect(jwtExpiry(`a.${b64url('not json')}.c`)).toBeUndefined();
    expect(jwtExpiry(`a.${b64url('null')}.c`)).toBeUndefined();
    expect(jwtExpiry(fakeJwt({ sub: 'alice' }))).toBeUndefined();
    expect(jwtExpiry(fakeJwt({ exp: '1795333328' }))).toBeUndefined();
  });
});

describe('refreshDelay', () => {
  it('is 80 % of the lifetime left, at least 1 s before expiry, never sooner than 1 s', () => {
    expect(refreshDelay(3_600_000, 0)).toBe(2_880_000);
    expect(refreshDelay(110_000, 10_000)).toBe(80_000);
    expect(refreshDelay(10_000, 0)).toBe(8000);
    expect(refreshDelay(3000, 0)).toBe(2000); // 2.4 s would be less than 1 s before expiry
    expect(refreshDelay(1500, 0)).toBe(1000);
    expect(refreshDelay(200, 0)).toBe(1000);
    expect(refreshDelay(0, 5000)).toBe(1000);
  });

  it('never exceeds what setTimeout can wait (a longer delay would fire at once)', () => {
    expect(refreshDelay(90 * 86_400_000, 0)).toBe(2 ** 31 - 1);
  });
});

describe('TokenSource', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_795_000_000_000);
  });
  afterEach(() => vi.useRealTimers());

  /** A token function handing out JWTs of `lifetime` ms, numbered from 1. */
  function issuer(lifetime: number): { fn: () => Promise<string>; calls: () => number } {
    let n = 0;
    return { fn: async () => jwtIn(lifetime, ++n), calls: () => n };
  }

  it('calls the function once for concurrent needs and reuses the token until it is due', async () => {
    const { fn, calls } = issuer(100_000);
    const t = new TokenSource(fn);
    const [a, b] = await Promise.all([t.get(), t.get()]);
    expect(a).toBe(b);
    expect(calls()).toBe(1);
    await vi.advanceTimersByTimeAsync(79_999);
    expect(await t.get()).toBe(a);
    expect(calls()).toBe(1);
    // Nobody holds it, so no timer ran; a need past the due time obtains a new one.
    await vi.advanceTimersByTimeAsync(1);
    expect(calls()).toBe(1);
    expect(await t.get()).not.toBe(a);
    expect(calls()).toBe(2);
  });

  it('while held, refreshes at 80 % of the lifetime and tells the holders the new token', async () => {
    const { fn, calls } = issuer(100_000);
    const t = new TokenSource(fn);
    const seen: string[] = [];
    const release = t.hold((x) => seen.push(x));
    const first = (await t.get())!;
    expect(seen).toEqual([first]);
    await vi.advanceTimersByTimeAsync(79_999);
    expect(calls()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls()).toBe(2);
    expect(seen).toHaveLength(2);
    expect(await t.get()).toBe(seen[1]);
    // The new token has its own lifetime: the next refresh is 80 s later again.
    await vi.advanceTimersByTimeAsync(80_000);
    expect(calls()).toBe(3);
    release();
    await vi.advanceTimersByTimeAsync(500_000);
    expect(calls()).toBe(3);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('refreshes a short token at least 1 s before expiry and never sooner than 1 s', async () => {
    for (const [lifetime, due] of [
      [3000, 2000],
      [1500, 1000],
    ] as const) {
      const { fn, calls } = issuer(lifetime);
      const t = new TokenSource(fn);
      const release = t.hold();
      await t.get();
      await vi.advanceTimersByTimeAsync(due - 1);
      expect(calls()).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(calls()).toBe(2);
      release();
    }
  });

  it('starts the timer when someone comes to hold a token obtained earlier', async () => {
    const { fn, calls } = issuer(10_000);
    const t = new TokenSource(fn);
    await t.get();
    await vi.advanceTimersByTimeAsync(5000);
    t.hold();
    await vi.advanceTimersByTimeAsync(2999);
    expect(calls()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls()).toBe(2);
  });

  it('does not schedule tokens whose expiry cannot be read or that look expired already', async () => {
    let n = 0;
    for (const make of [() => `opaque-${++n}`, () => `rill_key${++n}`, () => jwtIn(-5000, ++n)]) {
      n = 0;
      const t = new TokenSource(make);
      t.hold();
      const a = await t.get();
      await vi.advanceTimersByTimeAsync(3_600_000);
      expect(await t.get()).toBe(a);
      expect(n).toBe(1);
      // Only the server's word makes it get another.
      t.expired(a!);
      expect(await t.get()).not.toBe(a);
      expect(n).toBe(2);
    }
  });

  it('spends only the token the report names (a newer one survives a late report)', async () => {
    const { fn, calls } = issuer(100_000);
    const t = new TokenSource(fn);
    const a = (await t.get())!;
    t.expired(a);
    const b = (await t.get())!;
    expect(b).not.toBe(a);
    t.expired(a); // another stream that had sent `a` reports late
    expect(await t.get()).toBe(b);
    expect(calls()).toBe(2);
  });

  it('refresh() obtains a new token at once; a fixed string is never refreshed', async () => {
    const { fn, calls } = issuer(100_000);
    const t = new TokenSource(fn);
    const a = await t.get();
    await t.refresh();
    expect(calls()).toBe(2);
    expect(await t.get()).not.toBe(a);

    const jwt = jwtIn(10_000);
    const s = new TokenSource(jwt);
    expect(s.renewable).toBe(false);
    const seen: string[] = [];
    s.hold((x) => seen.push(x));
    await s.refresh();
    s.expired(jwt);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(await s.get()).toBe(jwt);
    expect(seen).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('is renewable with a token function, or with a headers function and no token', () => {
    expect(new TokenSource(() => 'x').renewable).toBe(true);
    expect(new TokenSource(undefined, true).renewable).toBe(true);
    expect(new TokenSource(undefined, false).renewable).toBe(false);
    expect(new TokenSource('x', true).renewable).toBe(false);
  });

  it('a failing function is a retryable connection_failed; a RillError passes as it is', async () => {
    const t = new TokenSource(() => Promise.reject(new Error('idp down')));
    await expect(t.get()).rejects.toMatchObject({
      code: 'connection_failed',
      retryable: true,
      message: 'The token function failed: idp down',
    });
    const stop = rillError('unauthorized', 'signed out');
    await expect(new TokenSource(() => Promise.reject(stop)).get()).rejects.toBe(stop);
  });

  it('a timed refresh that fails is tried again while the token is still good', async () => {
    let n = 0;
    let down = false;
    const t = new TokenSource(async () => {
      n++;
      if (down) throw new Error('idp down');
      return jwtIn(10_000, n);
    });
    t.hold();
    const a = await t.get();
    down = true;
    await vi.advanceTimersByTimeAsync(8000);
    expect(n).toBe(2);
    await vi.advanceTimersByTimeAsync(1000); // 2 s left: due again after the 1 s floor
    expect(n).toBe(3);
    down = false;
    await vi.advanceTimersByTimeAsync(1000);
    expect(n).toBe(4);
    expect(await t.get()).not.toBe(a);
  });
});

describe('withToken and settleAuth', () => {
  it('puts the token in one authorization header, replacing any other', () => {
    expect(withToken({ Authorization: 'Basic x', accept: 'a' }, 't')).toEqual({
      accept: 'a',
      authorization: 'Bearer t',
    });
    const h = { AUTHORIZATION: 'kept' };
    expect(withToken(h, undefined)).toBe(h);
  });

  it('retries token_expired exactly when a new token can be had, unauthorized and forbidden never', () => {
    const err = rillError('token_expired', 'expired', { retryable: true, closeCode: 4006 });
    const fixed = settleAuth(err, new TokenSource('x'));
    expect(fixed).toBeInstanceOf(RillError);
    expect(fixed).toMatchObject({ code: 'token_expired', retryable: false, closeCode: 4006 });
    expect(fixed.name).toBe('ForbiddenError');
    expect(settleAuth(err, new TokenSource(() => 'x'))).toBe(err);
    const no = rillError('token_expired', 'expired', { status: 401, retryable: false });
    expect(settleAuth(no, new TokenSource(() => 'x'))).toMatchObject({
      retryable: true,
      status: 401,
    });
    const other = rillError('unauthorized', 'no', { status: 401 });
    expect(settleAuth(other, new TokenSource(() => 'x'))).toBe(other);
    // Never retried, whatever the answer said.
    for (const code of ['unauthorized', 'forbidden']) {
      const said = rillError(code, 'no', { retryable: true });
      expect(settleAuth(said, new TokenSource(() => 'x'))).toMatchObject({
        code,
        retryable: false,
      });
    }
    const busy = rillError('shutting_down', 'bye', { retryable: true });
    expect(settleAuth(busy, new TokenSource('x'))).toBe(busy);
  });
});
