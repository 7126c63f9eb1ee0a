/**
 * JWT verification against the known ways verifiers get it wrong: one test per pitfall, each a
 * token the verifier must refuse (or, for the clock skew and ignored header cases, accept).
 */
import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { exportJWK, SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { JwtVerifier } from '../src/auth/jwt.js';
import type { JwtKeySettings, JwtSettings } from '../src/auth/settings.js';
import { RillError } from '../src/model/errors.js';

const SECRET = 'test-secret-0123456789-abcdefghijklmnop';
const OTHER_SECRET = 'another-secret-0123456789-abcdefghijkl';
const HOUR = 3600;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed = generateKeyPairSync('ed25519');
const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });

const nowS = (): number => Math.floor(Date.now() / 1000);

function settings(keys: JwtKeySettings[], extra: Partial<JwtSettings> = {}): JwtSettings {
  return {
    keys,
    maxLifetime: 24 * HOUR * 1000,
    clockSkew: 30_000,
    jwksRefresh: 60_000,
    ...extra,
  };
}

const hsVerifier = (extra: Partial<JwtSettings> = {}): JwtVerifier =>
  JwtVerifier.create(settings([], { secret: SECRET, ...extra }));

/** A token signed by `key` with `alg`; claims default to sub alice, iat now, exp in an hour. */
async function sign(
  key: KeyObject | string,
  alg: string,
  claims: JWTPayload = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const payload: JWTPayload = { sub: 'alice', iat: nowS(), exp: nowS() + HOUR, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return new SignJWT(payload)
    .setProtectedHeader({ alg, ...header })
    .sign(typeof key === 'string' ? new TextEncoder().encode(key) : key);
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** What `verify` rejects with: the RillError's code and message. */
async function refusal(v: JwtVerifier, token: string): Promise<{ code: string; message: string }> {
  const err = await v.verify(token).then(
    () => {
      throw new Error('expected the token to be refused');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RillError);
  const { code, message } = err as RillError;
  return { code, message };
}

describe('JWT pitfalls', () => {
  it('accepts a well-formed HS256 token (the baseline the rows below break)', async () => {
    const v = hsVerifier();
    const token = await sign(SECRET, 'HS256', { rill: { subscribe: ['chat.*'] } });
    const r = await v.verify(token);
    expect(r).toMatchObject({
      kid: null,
      sub: 'alice',
      claims: { rill: { subscribe: ['chat.*'] } },
    });
    expect(r.expiresAt).toBeGreaterThan(Date.now());
  });

  it('refuses alg "none"', async () => {
    const v = hsVerifier();
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'alice', exp: nowS() + HOUR })}.`;
    expect(await refusal(v, unsigned)).toMatchObject({ code: 'unauthorized' });
    const rsaV = JwtVerifier.create(settings([{ kid: 'rsa-1', publicKey: rsaPem }]));
    const withKid = `${b64({ alg: 'none', kid: 'rsa-1' })}.${b64({ sub: 'alice', exp: nowS() + HOUR })}.`;
    expect(await refusal(rsaV, withKid)).toMatchObject({ code: 'unauthorized' });
  });

  it('refuses HS256 signed with the RSA public key as the HMAC secret', async () => {
    for (const kid of ['rsa-1', undefined]) {
      const v = JwtVerifier.create(settings([{ kid, publicKey: rsaPem }]));
      const head = b64({ alg: 'HS256', typ: 'JWT', ...(kid ? { kid } : {}) });
      const body = b64({ sub: 'mallory', iat: nowS(), exp: nowS() + HOUR });
      const mac = createHmac('sha256', rsaPem).update(`${head}.${body}`).digest('base64url');
      expect(await refusal(v, `${head}.${body}.${mac}`)).toEqual({
        code: 'unauthorized',
        message: `Algorithm HS256 is not allowed for key ${kid ?? '(no kid)'}`,
      });
    }
  });

  it('refuses a bad signature, and a payload changed after signing', async () => {
    const v = hsVerifier();
    expect(await refusal(v, await sign(OTHER_SECRET, 'HS256'))).toEqual({
      code: 'unauthorized',
      message: 'Bad token signature',
    });
    const [h, , s] = (await sign(SECRET, 'HS256')).split('.');
    const forged = `${h}.${b64({ sub: 'admin', iat: nowS(), exp: nowS() + HOUR })}.${s}`;
    expect(await refusal(v, forged)).toMatchObject({ message: 'Bad token signature' });
  });

  it('refuses an expired token as token_expired, but a badly signed expired one as unauthorized', async () => {
    const v = hsVerifier();
    const claims = { iat: nowS() - 2 * HOUR, exp: nowS() - 60 };
    expect(await refusal(v, await sign(SECRET, 'HS256', claims))).toMatchObject({
      code: 'token_expired',
    });
    expect(await refusal(v, await sign(OTHER_SECRET, 'HS256', claims))).toMatchObject({
      code: 'unauthorized',
    });
  });

  it('refuses a token whose nbf is in the future', async () => {
    const v = hsVerifier();
    expect(await refusal(v, await sign(SECRET, 'HS256', { nbf: nowS() + 120 }))).toEqual({
      code: 'unauthorized',
      message: 'The token is not valid yet (nbf)',
    });
  });

  it('refuses a wrong or missing aud when an audience is configured', async () => {
    const v = hsVerifier({ audience: 'rill' });
    expect(await v.verify(await sign(SECRET, 'HS256', { aud: ['other', 'rill'] }))).toMatchObject({
      sub: 'alice',
    });
    for (const aud of ['other', undefined]) {
      expect(await refusal(v, await sign(SECRET, 'HS256', { aud }))).toMatchObject({
        code: 'unauthorized',
        message: expect.stringMatching(/aud/) as unknown,
      });
    }
  });

  it('refuses a wrong iss when an issuer is configured', async () => {
    const v = hsVerifier({ issuer: 'https://idp.example' });
    expect(
      await v.verify(await sign(SECRET, 'HS256', { iss: 'https://idp.example' })),
    ).toBeTruthy();
    expect(await refusal(v, await sign(SECRET, 'HS256', { iss: 'https://evil.example' }))).toEqual({
      code: 'unauthorized',
      message: 'The token is not from an accepted issuer (iss)',
    });
  });

  it('refuses an unknown kid, even when a kid-less key exists', async () => {
    const v = JwtVerifier.create(settings([{ kid: 'k1', secret: SECRET }]));
    expect(await refusal(v, await sign(SECRET, 'HS256', {}, { kid: 'k2' }))).toMatchObject({
      code: 'unauthorized',
      message: expect.stringMatching(/Unknown key id "k2"/) as unknown,
    });
    const kidless = hsVerifier();
    expect(await refusal(kidless, await sign(SECRET, 'HS256', {}, { kid: 'k2' }))).toMatchObject({
      code: 'unauthorized',
    });
  });

  it('ignores jwk, jku and x5u header parameters naming other keys', async () => {
    const v = JwtVerifier.create(settings([{ kid: 'rsa-1', publicKey: rsaPem }]));
    const elsewhere = {
      kid: 'rsa-1',
      jwk: await exportJWK(attacker.publicKey),
      // Nothing may be fetched: in the unit tier, opening a socket throws.
      jku: 'http://127.0.0.1:1/jwks.json',
      x5u: 'http://127.0.0.1:1/cert.pem',
    };
    // Signed with the key the header carries: refused, the configured key is the one used.
    expect(await refusal(v, await sign(attacker.privateKey, 'RS256', {}, elsewhere))).toEqual({
      code: 'unauthorized',
      message: 'Bad token signature',
    });
    // Signed with the configured key: the extra parameters change nothing.
    expect(await v.verify(await sign(rsa.privateKey, 'RS256', {}, elsewhere))).toMatchObject({
      kid: 'rsa-1',
      sub: 'alice',
    });
  });

  it('refuses a token a day past the maximum lifetime, with or without iat', async () => {
    const v = hsVerifier({ maxLifetime: 24 * HOUR * 1000 });
    const tooLong = nowS() + 24 * HOUR + 24 * HOUR;
    expect(await refusal(v, await sign(SECRET, 'HS256', { exp: tooLong }))).toMatchObject({
      code: 'unauthorized',
      message: expect.stringMatching(/lifetime .* above the maximum/) as unknown,
    });
    expect(
      await refusal(v, await sign(SECRET, 'HS256', { exp: tooLong, iat: undefined })),
    ).toMatchObject({ code: 'unauthorized' });
    // An old iat counts: issued two days ago, valid for another hour is a 49 h lifetime.
    const old = { iat: nowS() - 48 * HOUR, exp: nowS() + HOUR };
    expect(await refusal(v, await sign(SECRET, 'HS256', old))).toMatchObject({
      code: 'unauthorized',
    });
    expect(await v.verify(await sign(SECRET, 'HS256', { exp: nowS() + 23 * HOUR }))).toBeTruthy();
  });

  it('refuses a token without exp, or without sub', async () => {
    const v = hsVerifier();
    expect(await refusal(v, await sign(SECRET, 'HS256', { exp: undefined }))).toMatchObject({
      code: 'unauthorized',
      message: 'The token has no valid exp',
    });
    expect(await refusal(v, await sign(SECRET, 'HS256', { sub: undefined }))).toMatchObject({
      code: 'unauthorized',
      message: 'The token has no sub',
    });
  });

  it('honours the clock skew both ways: exp, nbf and iat', async () => {
    const v = hsVerifier({ clockSkew: 30_000 });
    const t = nowS();
    // Within 30 s: accepted.
    expect(
      await v.verify(await sign(SECRET, 'HS256', { iat: t - HOUR, exp: t - 10 })),
    ).toBeTruthy();
    expect(await v.verify(await sign(SECRET, 'HS256', { nbf: t + 10 }))).toBeTruthy();
    expect(await v.verify(await sign(SECRET, 'HS256', { iat: t + 10 }))).toBeTruthy();
    // Beyond it: refused.
    expect(
      await refusal(v, await sign(SECRET, 'HS256', { iat: t - HOUR, exp: t - 40 })),
    ).toMatchObject({ code: 'token_expired' });
    expect(await refusal(v, await sign(SECRET, 'HS256', { nbf: t + 40 }))).toMatchObject({
      code: 'unauthorized',
    });
    expect(await refusal(v, await sign(SECRET, 'HS256', { iat: t + 40 }))).toEqual({
      code: 'unauthorized',
      message: 'The token was issued in the future (iat)',
    });
    // No skew: the same 10 s are too much.
    const strict = hsVerifier({ clockSkew: 0 });
    expect(
      await refusal(strict, await sign(SECRET, 'HS256', { iat: t - HOUR, exp: t - 10 })),
    ).toMatchObject({ code: 'token_expired' });
    expect(await refusal(strict, await sign(SECRET, 'HS256', { nbf: t + 10 }))).toMatchObject({
      code: 'unauthorized',
    });
  });

  it('rotates keys by kid: each kid checks its own tokens only', async () => {
    const v = JwtVerifier.create(
      settings([
        { kid: '2026-10', secret: OTHER_SECRET },
        { kid: '2026-11', secret: SECRET },
      ]),
    );
    expect(await v.verify(await sign(OTHER_SECRET, 'HS256', {}, { kid: '2026-10' }))).toMatchObject(
      {
        kid: '2026-10',
      },
    );
    expect(await v.verify(await sign(SECRET, 'HS256', {}, { kid: '2026-11' }))).toMatchObject({
      kid: '2026-11',
    });
    expect(
      await refusal(v, await sign(OTHER_SECRET, 'HS256', {}, { kid: '2026-11' })),
    ).toMatchObject({
      message: 'Bad token signature',
    });
    // A kid-less token has no key here: both keys have a kid.
    expect(await refusal(v, await sign(SECRET, 'HS256'))).toMatchObject({ code: 'unauthorized' });
    // The old key is retired: its tokens stop verifying.
    const retired = JwtVerifier.create(settings([{ kid: '2026-11', secret: SECRET }]));
    expect(
      await refusal(retired, await sign(OTHER_SECRET, 'HS256', {}, { kid: '2026-10' })),
    ).toMatchObject({ code: 'unauthorized' });
  });

  it('verifies ES256 and EdDSA keys, each with its own algorithm only', async () => {
    const pem = (k: KeyObject): string => k.export({ type: 'spki', format: 'pem' }).toString();
    const v = JwtVerifier.create(
      settings([
        { kid: 'ec-1', publicKey: pem(ec.publicKey) },
        { kid: 'ed-1', publicKey: pem(ed.publicKey), algorithms: ['EdDSA'] },
      ]),
    );
    expect(await v.verify(await sign(ec.privateKey, 'ES256', {}, { kid: 'ec-1' }))).toMatchObject({
      kid: 'ec-1',
    });
    expect(await v.verify(await sign(ed.privateKey, 'EdDSA', {}, { kid: 'ed-1' }))).toMatchObject({
      kid: 'ed-1',
    });
    // Another kid's key, or a signature by a different key of the right type: refused.
    expect(await refusal(v, await sign(ed.privateKey, 'EdDSA', {}, { kid: 'ec-1' }))).toMatchObject(
      {
        code: 'unauthorized',
      },
    );
    const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(await refusal(v, await sign(otherEc.privateKey, 'ES256', {}, { kid: 'ec-1' }))).toEqual({
      code: 'unauthorized',
      message: 'Bad token signature',
    });
  });

  it('keeps to the algorithms a key allows, and refuses keys that do not fit them', async () => {
    const v = JwtVerifier.create(
      settings([{ kid: 'rsa-1', publicKey: rsaPem, algorithms: ['RS256'] }]),
    );
    expect(
      await refusal(v, await sign(rsa.privateKey, 'PS256', {}, { kid: 'rsa-1' })),
    ).toMatchObject({ message: 'Algorithm PS256 is not allowed for key rsa-1' });
    expect(() =>
      JwtVerifier.create(settings([{ publicKey: rsaPem, algorithms: ['ES256'] }])),
    ).toThrow(/ES256 does not fit this rsa key/);
    expect(() => JwtVerifier.create(settings([{ secret: 'short' }]))).toThrow(/at least 32 bytes/);
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 })
      .publicKey.export({ type: 'spki', format: 'pem' })
      .toString();
    expect(() => JwtVerifier.create(settings([{ publicKey: weak }]))).toThrow(
      /at least 2048 bits \(this one has 1024\)/,
    );
  });

  it('refuses what is not a JWT', async () => {
    const v = hsVerifier();
    for (const junk of ['', 'abc', 'a.b.c', `${b64({ alg: 'HS256' })}.%%%.x`]) {
      expect(await refusal(v, junk)).toMatchObject({ code: 'unauthorized' });
    }
  });
});
