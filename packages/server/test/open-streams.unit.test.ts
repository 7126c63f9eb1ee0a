/**
 * The open-stream registry (api/open-streams.ts) on fake timers: deadlines fire once, after their
 * time and within one resolution step, never when cancelled, and the shared timer stops when
 * nothing waits; streams are found by credential for revocation (exact ids and `jwt:<kid>:*`), end
 * at their identity's expiry, move with a refreshed identity, and leave when untracked. Servers
 * without authentication track nothing.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Grants, OPEN_IDENTITY, type Identity } from '../src/auth/index.js';
import {
  DEADLINE_RESOLUTION_MS,
  Deadlines,
  OpenStreams,
  type TrackedStream,
} from '../src/api/open-streams.js';
import type { RillError } from '../src/model/errors.js';

beforeEach(() => {
  vi.useFakeTimers({ now: 1_000_000 });
});
afterEach(() => {
  vi.useRealTimers();
});

function identity(credentialId: string, expiresAt: number | null = null): Identity {
  return { kind: 'jwt', sub: 'alice', credentialId, expiresAt, grants: Grants.none };
}

/** A stream that records how it was ended. */
function stream(): TrackedStream & { ends: Array<[string, string]> } {
  const ends: Array<[string, string]> = [];
  return {
    ends,
    revoked: (e: RillError) => ends.push(['revoked', e.code]),
    expired: (e: RillError) => ends.push(['expired', e.code]),
  };
}

describe('Deadlines', () => {
  it('fires each deadline once, not before its time and within one resolution step after it', () => {
    const d = new Deadlines();
    const fired: number[] = [];
    const now = Date.now();
    for (const offset of [10, 600, 600, 2_000]) d.at(now + offset, () => fired.push(offset));
    vi.advanceTimersByTime(9);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(DEADLINE_RESOLUTION_MS);
    expect(fired).toEqual([10]);
    vi.advanceTimersByTime(599 - 9 - DEADLINE_RESOLUTION_MS);
    expect(fired).toEqual([10]);
    vi.advanceTimersByTime(1 + DEADLINE_RESOLUTION_MS);
    expect(fired).toEqual([10, 600, 600]);
    vi.advanceTimersByTime(10_000);
    expect(fired).toEqual([10, 600, 600, 2_000]);
    d.close();
  });

  it('a deadline already past fires at the next sweep; a cancelled one never', () => {
    const d = new Deadlines();
    const fired: string[] = [];
    d.at(Date.now() - 5_000, () => fired.push('past'));
    const cancel = d.at(Date.now() + 300, () => fired.push('cancelled'));
    cancel();
    cancel();
    vi.advanceTimersByTime(DEADLINE_RESOLUTION_MS);
    expect(fired).toEqual(['past']);
    vi.advanceTimersByTime(5_000);
    expect(fired).toEqual(['past']);
  });

  it('runs its one timer only while a deadline waits', () => {
    const d = new Deadlines();
    expect(vi.getTimerCount()).toBe(0);
    d.at(Date.now() + 100, () => undefined);
    d.at(Date.now() + 200, () => undefined);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(1_000);
    expect(vi.getTimerCount()).toBe(0);
    const cancel = d.at(Date.now() + 100, () => undefined);
    cancel();
    vi.advanceTimersByTime(DEADLINE_RESOLUTION_MS);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('after a long pause (a suspended process) fires everything due, once', () => {
    const d = new Deadlines();
    const fired: number[] = [];
    for (let i = 1; i <= 5; i++) d.at(Date.now() + i * 1000, () => fired.push(i));
    d.at(Date.now() + 3_600_000, () => fired.push(99));
    // The clock jumps an hour less a second without the sweep running.
    vi.setSystemTime(Date.now() + 3_599_000);
    vi.advanceTimersByTime(DEADLINE_RESOLUTION_MS);
    expect(fired).toEqual([1, 2, 3, 4, 5]);
    vi.advanceTimersByTime(2_000);
    expect(fired).toEqual([1, 2, 3, 4, 5, 99]);
  });
});

describe('OpenStreams', () => {
  it('revokes by exact credential id and by JWT key (jwt:<kid>:*), leaving the others', () => {
    const reg = new OpenStreams();
    const key = stream();
    const alice = stream();
    const bob = stream();
    const other = stream();
    reg.track(identity('key:mobile'), key);
    reg.track(identity('jwt:k1:alice'), alice);
    reg.track(identity('jwt:k1:bob'), bob);
    reg.track(identity('jwt:k2:alice'), other);
    expect(reg.size).toBe(4);
    expect(reg.revoke(['key:mobile', 'jwt:k1:*'])).toBe(3);
    expect([key.ends, alice.ends, bob.ends]).toEqual([
      [['revoked', 'unauthorized']],
      [['revoked', 'unauthorized']],
      [['revoked', 'unauthorized']],
    ]);
    expect(other.ends).toEqual([]);
    expect(reg.size).toBe(1);
    // Revoked streams are forgotten: a second reload revoking the same ids finds nothing.
    expect(reg.revoke(['key:mobile', 'jwt:k1:*'])).toBe(0);
    reg.close();
  });

  it('ends a stream at its identity expiry with token_expired, once; untracked ones never', () => {
    const reg = new OpenStreams();
    const a = stream();
    const b = stream();
    reg.track(identity('jwt:k:a', Date.now() + 1_000), a);
    reg.track(identity('jwt:k:b', Date.now() + 1_000), b).untrack();
    vi.advanceTimersByTime(999);
    expect(a.ends).toEqual([]);
    vi.advanceTimersByTime(1 + DEADLINE_RESOLUTION_MS);
    expect(a.ends).toEqual([['expired', 'token_expired']]);
    expect(b.ends).toEqual([]);
    expect(reg.size).toBe(0);
    vi.advanceTimersByTime(10_000);
    expect(a.ends).toHaveLength(1);
  });

  it('a stream without `expired` keeps no deadline; update moves a stream to its new identity', () => {
    const reg = new OpenStreams();
    const poll: Array<string> = [];
    reg.track(identity('jwt:k:a', Date.now() + 500), { revoked: () => poll.push('revoked') });
    expect(vi.getTimerCount()).toBe(0);

    const s = stream();
    const handle = reg.track(identity('jwt:old:alice', Date.now() + 1_000), s);
    handle.update(identity('jwt:new:alice', Date.now() + 5_000));
    vi.advanceTimersByTime(2_000);
    expect(s.ends).toEqual([]);
    expect(reg.revoke(['jwt:old:*'])).toBe(0);
    expect(reg.revoke(['jwt:new:*'])).toBe(1);
    expect(s.ends).toEqual([['revoked', 'unauthorized']]);
    vi.advanceTimersByTime(10_000);
    expect(s.ends).toHaveLength(1);
  });

  it('tracks nothing for the open identity of a server without authentication', () => {
    const reg = new OpenStreams();
    const s = stream();
    const h = reg.track(OPEN_IDENTITY, s);
    expect(reg.size).toBe(0);
    expect(reg.revoke(['anonymous'])).toBe(0);
    h.untrack();
    expect(s.ends).toEqual([]);
  });
});
