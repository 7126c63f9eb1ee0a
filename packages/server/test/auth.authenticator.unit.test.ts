/**
 * The Authenticator: credentials in, an identity or `unauthorized` / `token_expired` out; API keys;
 * anonymous access; grants; and what a reload revokes.
 */
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  Authenticator,
  generateApiKey,
  Grants,
  hashApiKey,
  isRevoked,
  parseKeyHash,
  wwwAuthenticate,
  type AuthSettings,
  type Credentials,
  type JwtSettings,
} from '../src/auth/index.js';
import { RillError } from '../src/model/errors.js';
import { tempDir } from '@rill/testkit';

const SECRET = 'test-secret-0123456789-abcdefghijklmnop';
const NEW_SECRET = 'rotated-secret-0123456789-abcdefghijkl';
const BACKEND_KEY = generateApiKey();
const OTHER_KEY = generateApiKey();

const opened: Authenticator[] = [];
afterEach(() => {
  for (const a of opened.splice(0)) a.close();
});

function settings(extra: Partial<AuthSettings> = {}): AuthSettings {
  return { wsAuthTimeout: 10_000, expiryWarning: 30_000, ...extra };
}

const jwtSettings = (secret = SECRET): JwtSettings => ({
  secret,
  keys: [],
  maxLifetime: 24 * 3600_000,
  clockSkew: 30_000,
  jwksRefresh: 60_000,
});

const backend = {
  name: 'backend',
  hash: hashApiKey(BACKEND_KEY),
  publish: ['orders.>'],
  subscribe: [],
  admin: false,
};

async function authenticator(
  s: AuthSettings,
  loadSettings?: () => AuthSettings,
): Promise<Authenticator> {
  const a = await Authenticator.create(s, {
    watchKeysFile: false,
    ...(loadSettings ? { loadSettings } : {}),
  });
  opened.push(a);
  return a;
}

async function jwt(claims: JWTPayload = {}, secret = SECRET): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: 'alice', iat: now, exp: now + 3600, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(secret));
}

async function refused(a: Authenticator, creds: Credentials): Promise<RillError> {
  const err = await a.authenticate(creds).then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RillError);
  return err as RillError;
}

describe('API keys', () => {
  it('makes keys of the documented form whose hash verifies', () => {
    expect(BACKEND_KEY).toMatch(/^rill_[A-Za-z0-9_-]{43}$/);
    expect(generateApiKey()).not.toBe(BACKEND_KEY);
    expect(hashApiKey(BACKEND_KEY)).toMatch(/^sha256:[A-Za-z0-9_-]{43}$/);
    expect(parseKeyHash(hashApiKey(BACKEND_KEY))).toHaveLength(32);
    expect(() => parseKeyHash('sha256:short')).toThrow(/not an API key hash/);
  });

  it('accepts a configured key, refuses an unknown one and a malformed one', async () => {
    const a = await authenticator(settings({ apiKeys: [backend] }));
    const id = await a.authenticate({ authorization: `Bearer ${BACKEND_KEY}` });
    expect(id).toMatchObject({
      kind: 'apiKey',
      sub: null,
      name: 'backend',
      credentialId: 'key:backend',
      expiresAt: null,
    });
    expect(id.grants.canPublish('orders.eu.1')).toBe(true);
    expect(id.grants.canPublish('payments.1')).toBe(false);
    expect((await refused(a, { authorization: `Bearer ${OTHER_KEY}` })).message).toBe(
      'Unknown or revoked API key',
    );
    expect((await refused(a, { authorization: 'Bearer rill_short' })).code).toBe('unauthorized');
    // With a key, JWTs are not accepted when no jwt section is configured.
    expect((await refused(a, { authorization: `Bearer ${await jwt()}` })).message).toMatch(
      /does not accept JWTs/,
    );
  });

  it('revokes a key removed from the keys file at reload, and reports it', async () => {
    const dir = tempDir('rill-keys-');
    try {
      const file = join(dir.path, 'keys.yaml');
      const other = { ...backend, name: 'other', hash: hashApiKey(OTHER_KEY) };
      writeFileSync(file, JSON.stringify([backend, other]));
      const a = await authenticator(settings({ apiKeysFile: file }));
      await a.authenticate({ authorization: `Bearer ${BACKEND_KEY}` });
      writeFileSync(file, `- ${JSON.stringify({ ...other, subscribe: ['x.>'] })}\n`);
      const revoked = once(a, 'revoked');
      const report = await a.reload();
      expect(report).toEqual({
        trigger: 'reload',
        revoked: ['key:backend'],
        changed: ['key:other'],
      });
      expect(await revoked).toEqual([report]);
      expect((await refused(a, { authorization: `Bearer ${BACKEND_KEY}` })).code).toBe(
        'unauthorized',
      );
      const id = await a.authenticate({ authorization: `Bearer ${OTHER_KEY}` });
      expect(id.grants.canSubscribe('x.1')).toBe(true);
    } finally {
      dir.remove();
    }
  });

  it('revokes a key given a new hash under the same name', async () => {
    let current = settings({ apiKeys: [backend] });
    const a = await authenticator(current, () => current);
    const replacement = generateApiKey();
    current = settings({ apiKeys: [{ ...backend, hash: hashApiKey(replacement) }] });
    expect(await a.reload()).toMatchObject({ revoked: ['key:backend'], changed: [] });
    await expect(a.identify(BACKEND_KEY)).rejects.toMatchObject({ code: 'unauthorized' });
    expect(await a.identify(replacement)).toMatchObject({ credentialId: 'key:backend' });
  });

  it('keeps the keys in use when the keys file is empty, malformed or gone', async () => {
    const dir = tempDir('rill-keys-');
    try {
      const file = join(dir.path, 'keys.yaml');
      writeFileSync(file, JSON.stringify([backend]));
      const a = await authenticator(settings({ apiKeysFile: file }));
      for (const text of ['', '- { name: x, hash: nope }\n', '{"not": "a list"}']) {
        writeFileSync(file, text);
        await expect(a.reload()).rejects.toThrow(/keys file/i);
        expect(await a.authenticate({ authorization: `Bearer ${BACKEND_KEY}` })).toMatchObject({
          name: 'backend',
        });
      }
      rmSync(file);
      await expect(a.reload()).rejects.toThrow(/Cannot read API keys file/);
      writeFileSync(file, '[]');
      expect((await a.reload()).revoked).toEqual(['key:backend']);
    } finally {
      dir.remove();
    }
  });

  it('refuses a keys file that repeats a configured key name', async () => {
    const dir = tempDir('rill-keys-');
    try {
      const file = join(dir.path, 'keys.json');
      writeFileSync(file, JSON.stringify([backend]));
      await expect(
        Authenticator.create(settings({ apiKeys: [backend], apiKeysFile: file }), {
          watchKeysFile: false,
        }),
      ).rejects.toThrow(/"backend" is used twice/);
    } finally {
      dir.remove();
    }
  });
});

describe('credentials', () => {
  it('reads the Bearer header, else access_token, else the configured cookie', async () => {
    const a = await authenticator(
      settings({ jwt: jwtSettings(), apiKeys: [backend], cookie: 'rill_token' }),
    );
    const token = await jwt();
    for (const creds of [
      { authorization: `Bearer ${token}` },
      { authorization: `bearer  ${token}` },
      { accessToken: token },
      { cookie: `theme=dark; rill_token=${token}` },
    ]) {
      expect(await a.authenticate(creds), JSON.stringify(creds)).toMatchObject({
        kind: 'jwt',
        sub: 'alice',
      });
    }
    // The header wins over the query parameter and the cookie.
    expect(
      await a.authenticate({
        authorization: `Bearer ${BACKEND_KEY}`,
        accessToken: token,
        cookie: `rill_token=${token}`,
      }),
    ).toMatchObject({ kind: 'apiKey' });
    // A cookie of another name is not a credential.
    const noCookie = await refused(a, { cookie: `session=${token}` });
    expect(wwwAuthenticate(noCookie)).toBe('Bearer realm="rill"');
  });

  it('reads no cookie unless one is configured', async () => {
    const a = await authenticator(settings({ jwt: jwtSettings() }));
    const err = await refused(a, { cookie: `rill_token=${await jwt()}` });
    expect(err.message).toMatch(/Credentials required/);
  });

  it('refuses a malformed Authorization header rather than skipping it', async () => {
    const a = await authenticator(
      settings({ jwt: jwtSettings(), anonymous: { subscribe: ['public.>'], publish: [] } }),
    );
    for (const authorization of ['Basic dXNlcjpwdw==', 'Bearer', 'Bearer a b', '']) {
      const err = await refused(a, { authorization, accessToken: await jwt() });
      expect(err.code).toBe('unauthorized');
      expect(wwwAuthenticate(err)).toBe('Bearer realm="rill", error="invalid_token"');
    }
  });

  it('gives anonymous grants without credentials, and never for invalid ones', async () => {
    const a = await authenticator(
      settings({ jwt: jwtSettings(), anonymous: { subscribe: ['public.>'], publish: [] } }),
    );
    const anon = await a.authenticate({});
    expect(anon).toMatchObject({ kind: 'anonymous', sub: null, credentialId: 'anonymous' });
    expect(anon.grants.canSubscribe('public.news')).toBe(true);
    expect(anon.grants.canSubscribe('private.x')).toBe(false);
    expect(anon.grants.canPublish('public.news')).toBe(false);
    for (const creds of [
      { authorization: `Bearer ${await jwt({}, NEW_SECRET)}` },
      { accessToken: 'garbage' },
      { accessToken: '' },
      { authorization: `Bearer ${OTHER_KEY}` },
    ]) {
      expect((await refused(a, creds)).code, JSON.stringify(creds)).toBe('unauthorized');
    }
  });

  it('without anonymous access, refuses a request without credentials with a plain challenge', async () => {
    const a = await authenticator(settings({ jwt: jwtSettings() }));
    const err = await refused(a, {});
    expect(err.status).toBe(401);
    expect(wwwAuthenticate(err)).toBe('Bearer realm="rill"');
    const expired = await refused(a, {
      accessToken: await jwt({
        iat: Math.floor(Date.now() / 1000) - 7200,
        exp: Math.floor(Date.now() / 1000) - 3600,
      }),
    });
    expect(expired).toMatchObject({
      code: 'token_expired',
      status: 401,
      retryable: true,
      closeCode: 4006,
    });
    expect(wwwAuthenticate(expired)).toBe('Bearer realm="rill", error="invalid_token"');
  });

  it('allows everything when authentication is off', async () => {
    const a = await authenticator(settings({ cookie: 'rill_token' }));
    expect(a.enabled).toBe(false);
    const id = await a.authenticate({ authorization: 'anything at all' });
    expect(id.grants.canPublish('x.y')).toBe(true);
    expect(id.grants.canSubscribe('>')).toBe(true);
  });
});

describe('JWT identities', () => {
  it('carries sub, expiry, grants and info from the rill claim', async () => {
    const a = await authenticator(settings({ jwt: jwtSettings() }));
    const exp = Math.floor(Date.now() / 1000) + 600;
    const id = await a.identify(
      await jwt({
        exp,
        rill: { subscribe: ['chat.*'], publish: ['chat.room-1'], info: { name: 'Alice' } },
      }),
    );
    expect(id).toMatchObject({
      kind: 'jwt',
      sub: 'alice',
      credentialId: 'jwt:default:alice',
      expiresAt: exp * 1000,
      info: { name: 'Alice' },
    });
    expect(id.grants.toJSON()).toEqual({
      subscribe: ['chat.*'],
      publish: ['chat.room-1'],
      admin: false,
    });
    expect(id.grants.canSubscribe('chat.a')).toBe(true);
    expect(id.grants.canSubscribe('chat.*')).toBe(true);
    expect(id.grants.canSubscribe('chat.>')).toBe(false);
    expect(id.grants.canPublish('chat.room-1')).toBe(true);
    expect(id.grants.canPublish('chat.room-2')).toBe(false);
    // No rill claim: nothing allowed.
    const bare = await a.identify(await jwt());
    expect(bare.grants.canRead('chat.a')).toBe(false);
  });

  it('refuses a token whose rill claim is malformed', async () => {
    const a = await authenticator(settings({ jwt: jwtSettings() }));
    for (const rill of [
      'all',
      { subscribe: 'chat.>' },
      { publish: ['chat.>.x'] },
      { admin: 'yes' },
      { info: [1] },
    ]) {
      const err = await a.identify(await jwt({ rill })).catch((e: unknown) => e);
      expect(err, JSON.stringify(rill)).toMatchObject({
        code: 'unauthorized',
        message: expect.stringMatching(/Malformed rill claim/) as unknown,
      });
    }
  });
});

describe('verified tokens', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('checks a token once: the same text gives the same identity until its exp', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const a = await authenticator(settings({ jwt: { ...jwtSettings(), clockSkew: 0 } }));
    const now = Math.floor(Date.now() / 1000);
    const token = await jwt({ iat: now, exp: now + 60 });
    const first = await a.identify(token);
    expect(await a.identify(token)).toBe(first);
    expect(await a.authenticate({ authorization: `Bearer ${token}` })).toBe(first);
    // Another token of the same subject is checked on its own.
    expect(await a.identify(await jwt({ iat: now, exp: now + 30 }))).not.toBe(first);
    // Past exp the kept identity is not used: the token is checked again, and refused.
    vi.setSystemTime((now + 61) * 1000);
    await expect(a.identify(token)).rejects.toMatchObject({ code: 'token_expired' });
  });

  it('keeps nothing across a reload', async () => {
    let current = settings({ jwt: jwtSettings() });
    const a = await authenticator(current, () => current);
    const token = await jwt();
    const first = await a.identify(token);
    await a.reload();
    // Same settings: still valid, but checked again.
    const again = await a.identify(token);
    expect(again).toEqual(first);
    expect(again).not.toBe(first);
    current = settings({ jwt: jwtSettings(NEW_SECRET) });
    await a.reload();
    await expect(a.identify(token)).rejects.toMatchObject({ code: 'unauthorized' });
  });
});

describe('grants', () => {
  it('reads with subscribe patterns, publishes with publish patterns, admin does all', () => {
    const g = new Grants({ subscribe: ['chat.>'], publish: ['chat.*.in'] });
    expect(g.canRead('chat.a.b')).toBe(true);
    expect(g.canRead('news.a')).toBe(false);
    expect(g.canPublish('chat.a.in')).toBe(true);
    expect(g.canPublish('chat.a.out')).toBe(false);
    // A pattern where a topic is expected is never let through on a textual match.
    expect(new Grants({ publish: ['chat.*'] }).canPublish('chat.*')).toBe(true);
    expect(new Grants({ publish: ['chat.a'] }).canPublish('chat.*')).toBe(false);
    const admin = new Grants({ admin: true });
    expect(admin.canPublish('any.thing') && admin.canSubscribe('>') && admin.canRead('x')).toBe(
      true,
    );
    expect(Grants.none.canSubscribe('a')).toBe(false);
  });
});

describe('reload', () => {
  it('revokes every token of a replaced secret, and reports changed anonymous grants', async () => {
    let current = settings({ jwt: jwtSettings(), anonymous: { subscribe: ['a.>'], publish: [] } });
    const a = await authenticator(current, () => current);
    const old = await jwt();
    expect(await a.identify(old)).toMatchObject({ credentialId: 'jwt:default:alice' });
    current = settings({
      jwt: jwtSettings(NEW_SECRET),
      anonymous: { subscribe: ['b.>'], publish: [] },
    });
    const report = await a.reload();
    expect(report).toEqual({
      trigger: 'reload',
      revoked: ['jwt:default:*'],
      changed: ['anonymous'],
    });
    expect(isRevoked('jwt:default:alice', report.revoked)).toBe(true);
    expect(isRevoked('jwt:other:alice', report.revoked)).toBe(false);
    expect(isRevoked('key:backend', report.revoked)).toBe(false);
    await expect(a.identify(old)).rejects.toMatchObject({ code: 'unauthorized' });
    expect(await a.identify(await jwt({}, NEW_SECRET))).toMatchObject({ sub: 'alice' });
    expect((await a.authenticate({})).grants.canSubscribe('b.x')).toBe(true);
  });

  it('revokes every JWT when the audience changes, and anonymous when it goes', async () => {
    let current = settings({ jwt: jwtSettings(), anonymous: { subscribe: [], publish: [] } });
    const a = await authenticator(current, () => current);
    current = settings({ jwt: { ...jwtSettings(), audience: 'rill' } });
    expect((await a.reload()).revoked).toEqual(['jwt:default:*', 'anonymous']);
  });

  it('refuses to turn authentication off, and keeps the state in use when a reload fails', async () => {
    let current = settings({ apiKeys: [backend] });
    const a = await authenticator(current, () => current);
    current = settings();
    const failed = once(a, 'reloadFailed');
    await expect(a.reload()).rejects.toThrow(/turning authentication off needs a restart/);
    expect(await failed).toMatchObject([{ trigger: 'reload' }]);
    current = settings({ jwt: { ...jwtSettings(), secret: 'short' } });
    await expect(a.reload()).rejects.toThrow(/at least 32 bytes/);
    expect(await a.authenticate({ authorization: `Bearer ${BACKEND_KEY}` })).toMatchObject({
      name: 'backend',
    });
  });
});
