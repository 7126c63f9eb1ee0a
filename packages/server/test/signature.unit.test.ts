import { describe, expect, it } from 'vitest';
import { signatureHeader, verifySignature } from '../src/model/signature.js';

describe('request signatures', () => {
  const body = '{"events":[{"topic":"a","seq":1}]}';

  it('verifies what it signs, over the exact bytes', () => {
    const header = signatureHeader('s3cret', body, 1_700_000_000);
    expect(header).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    expect(verifySignature(header, body, 's3cret', { nowSeconds: 1_700_000_010 })).toEqual({
      ok: true,
      timestamp: 1_700_000_000,
    });
    expect(
      verifySignature(header, Buffer.from(body), 's3cret', { nowSeconds: 1_700_000_010 }).ok,
    ).toBe(true);
    expect(verifySignature(header, `${body} `, 's3cret', { nowSeconds: 1_700_000_010 })).toEqual({
      ok: false,
      reason: 'mismatch',
    });
    expect(verifySignature(header, body, 'other', { nowSeconds: 1_700_000_010 })).toEqual({
      ok: false,
      reason: 'mismatch',
    });
  });

  it('refuses an old or future timestamp (replay)', () => {
    const header = signatureHeader('k', body, 1_700_000_000);
    expect(verifySignature(header, body, 'k', { nowSeconds: 1_700_000_301 }).ok).toBe(false);
    expect(verifySignature(header, body, 'k', { nowSeconds: 1_699_999_699 }).ok).toBe(false);
    expect(
      verifySignature(header, body, 'k', { nowSeconds: 1_700_000_301, toleranceSeconds: 400 }).ok,
    ).toBe(true);
  });

  it('signs with every secret during a rotation; any one matches', () => {
    const header = signatureHeader(['old', 'new'], body, 1_700_000_000);
    expect(header.split(',v1=')).toHaveLength(3);
    for (const s of ['old', 'new']) {
      expect(verifySignature(header, body, s, { nowSeconds: 1_700_000_000 }).ok).toBe(true);
    }
    expect(verifySignature(header, body, ['x', 'new'], { nowSeconds: 1_700_000_000 }).ok).toBe(
      true,
    );
  });

  it('calls a malformed header malformed', () => {
    for (const h of [
      undefined,
      '',
      'v1=abc',
      't=1',
      't=x,v1=' + 'a'.repeat(64),
      'x'.repeat(5000),
    ]) {
      expect(verifySignature(h, body, 'k', { nowSeconds: 1 })).toEqual({
        ok: false,
        reason: 'malformed',
      });
    }
  });
});
