import { describe, expect, it } from 'vitest';
import {
  ClientAddresses,
  Limiter,
  TokenBucket,
  addressKey,
  forwardedHops,
} from '../src/limits/index.js';
import { resolveConfig } from '../src/config.js';
import { OPEN_IDENTITY, type Identity } from '../src/auth/index.js';
import type { RillError } from '../src/model/errors.js';

describe('TokenBucket', () => {
  it('starts full, refills at its rate and never holds more than its burst', () => {
    const b = new TokenBucket(10, 20, 0);
    expect(b.level(0)).toBe(20);
    expect(b.wait(20, 0)).toBe(0);
    b.take(20, 0);
    expect(b.level(0)).toBe(0);
    // 10 tokens a second: 1 token takes 100 ms.
    expect(b.wait(1, 0)).toBe(100);
    expect(b.level(500)).toBe(5);
    expect(b.wait(5, 500)).toBe(0);
    expect(b.wait(6, 500)).toBe(100);
    expect(b.level(60_000)).toBe(20);
  });

  it('lets a request larger than the burst through on a full bucket, leaving it in debt', () => {
    const b = new TokenBucket(10, 20, 0);
    expect(b.wait(50, 0)).toBe(0);
    b.take(50, 0);
    expect(b.level(0)).toBe(-30);
    // The debt is paid before anything else goes through: 31 tokens at 10/s.
    expect(b.wait(1, 0)).toBe(3100);
    // Over any period, at most burst + rate × period: here 20 + 10 × 5 = 70 in 5 s.
    let taken = 50;
    for (let t = 0; t <= 5000; t += 10) {
      if (b.wait(1, t) === 0) {
        b.take(1, t);
        taken++;
      }
    }
    expect(taken).toBeLessThanOrEqual(70);
    expect(taken).toBeGreaterThanOrEqual(68);
  });

  it('a rate of 0 is no limit', () => {
    const b = new TokenBucket(0, 0, 0);
    expect(b.wait(1e9, 0)).toBe(0);
  });
});

describe('ClientAddresses', () => {
  const h = (headers: Record<string, string>) => headers;

  it('takes the peer address when no proxy is trusted, whatever the headers say', () => {
    const a = new ClientAddresses([]);
    expect(a.resolve('203.0.113.9', h({ 'x-forwarded-for': '1.2.3.4' }))).toBe('203.0.113.9');
    expect(a.resolve('::ffff:203.0.113.9', h({ forwarded: 'for=1.2.3.4' }))).toBe('203.0.113.9');
  });

  it('ignores the headers of a peer that is not a trusted proxy', () => {
    const a = new ClientAddresses(['10.0.0.0/8']);
    expect(a.resolve('198.51.100.7', h({ 'x-forwarded-for': '1.2.3.4' }))).toBe('198.51.100.7');
  });

  it('behind trusted proxies, takes the rightmost hop that is not one', () => {
    const a = new ClientAddresses(['10.0.0.0/8', 'loopback']);
    // A client may put anything on the left; only what the proxies appended counts.
    expect(a.resolve('127.0.0.1', h({ 'x-forwarded-for': '6.6.6.6, 203.0.113.5, 10.1.2.3' }))).toBe(
      '203.0.113.5',
    );
    expect(a.resolve('10.0.0.1', h({ 'x-forwarded-for': '203.0.113.5' }))).toBe('203.0.113.5');
    // Every hop trusted: the leftmost is the client.
    expect(a.resolve('10.0.0.1', h({ 'x-forwarded-for': '10.0.0.2' }))).toBe('10.0.0.2');
    // No header: the proxy itself.
    expect(a.resolve('10.0.0.1', h({}))).toBe('10.0.0.1');
  });

  it('reads RFC 7239 Forwarded (before X-Forwarded-For), quoted IPv6 with ports included', () => {
    const a = new ClientAddresses(['10.0.0.0/8']);
    expect(
      a.resolve(
        '10.0.0.1',
        h({
          forwarded: 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9',
          'x-forwarded-for': '7.7.7.7',
        }),
      ),
    ).toBe('2001:db8:cafe::17');
    expect(a.resolve('10.0.0.1', h({ forwarded: 'for=192.0.2.60:8080;proto=http' }))).toBe(
      '192.0.2.60',
    );
    // An obfuscated hop: the last trusted proxy's peer is unknown; the proxy is what we know.
    expect(a.resolve('10.0.0.1', h({ forwarded: 'for=_hidden' }))).toBe('10.0.0.1');
    expect(forwardedHops(h({ forwarded: 'proto=https, for=1.2.3.4' }))).toEqual([
      'unknown',
      '1.2.3.4',
    ]);
  });

  it('counts an IPv6 client by its /64', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2:bbbb::9')).toBe('2001:db8:1:2::/64');
    expect(addressKey('203.0.113.9')).toBe('203.0.113.9');
  });

  it('exempts the configured ranges', () => {
    const a = new ClientAddresses([], ['loopback']);
    expect(a.isExempt('127.0.0.1')).toBe(true);
    expect(a.isExempt('::1')).toBe(true);
    expect(a.isExempt('203.0.113.9')).toBe(false);
  });
});

describe('Limiter', () => {
  const key = (name: string, limits?: Identity['limits']): Identity => ({
    ...OPEN_IDENTITY,
    kind: 'apiKey',
    name,
    credentialId: `key:${name}`,
    ...(limits ? { limits } : {}),
  });
  const refusal = (fn: () => unknown): RillError => {
    try {
      fn();
    } catch (e) {
      return e as RillError;
    }
    throw new Error('not refused');
  };

  it('counts a key, a user and an address apart, with per-key overrides from config and entry', () => {
    const cfg = resolveConfig({
      rateLimits: {
        perKey: { connections: 2 },
        perAddress: { connections: 5 },
        overrides: { keys: { big: { connections: 3 } } },
      },
    }).rateLimits;
    const l = new Limiter(cfg);
    const open = (id: Identity, addr: string) =>
      l.open(l.subjectsOf(id, addr, false), { connection: true, subscription: false });
    open(key('a'), '203.0.113.1');
    open(key('a'), '203.0.113.1');
    const e = refusal(() => open(key('a'), '203.0.113.1'));
    expect(e.code).toBe('rate_limited');
    expect(e.details).toEqual({ limit: 'connections', scope: 'key', limitValue: 2 });
    expect(e.retryAfter).toBe(1);
    // The override in config, and the key's own entry, win over perKey.
    for (let i = 0; i < 3; i++) open(key('big'), '203.0.113.2');
    expect(refusal(() => open(key('big'), '203.0.113.2')).details).toMatchObject({
      scope: 'key',
      limitValue: 3,
    });
    const own = key('own', { connections: 4 });
    for (let i = 0; i < 4; i++) open(own, '203.0.113.3');
    // Address 203.0.113.3 holds 4 of its 5: the fifth connection, of another key, is the address's.
    const lease = open(key('other'), '203.0.113.3');
    expect(refusal(() => open(key('other2'), '203.0.113.3')).details).toMatchObject({
      limit: 'connections',
      scope: 'address',
      limitValue: 5,
    });
    lease.release();
    open(key('other2'), '203.0.113.3');
    l.close();
  });

  it('publishes per second: refuses past the burst with a Retry-After from the rate', () => {
    const cfg = resolveConfig({
      rateLimits: { perAddress: { publishesPerSecond: { rate: 2, burst: 4 } } },
    }).rateLimits;
    const l = new Limiter(cfg);
    const s = l.subjectsOf(OPEN_IDENTITY, '203.0.113.1', false);
    l.publish(s, 4, 10);
    const e = refusal(() => l.publish(s, 1, 10));
    expect(e.details).toEqual({ limit: 'publishesPerSecond', scope: 'address', limitValue: 2 });
    expect(e.retryAfter).toBe(1);
    // An exempt address holds no subject: nothing is counted.
    expect(l.subjectsOf(OPEN_IDENTITY, '127.0.0.1', true)).toEqual([]);
    l.close();
  });
});
