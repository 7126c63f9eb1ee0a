/** The `auth` section of the configuration: its schema, defaults, environment mapping, refusals. */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { AuthSettings } from '../src/auth/index.js';
import { authEnabled, ConfigError, configFromEnv, resolveConfig } from '../src/config.js';

const SECRET = 'a-secret-of-thirty-two-bytes-at-least!';
const rsaPublic = generateKeyPairSync('rsa', { modulusLength: 2048 })
  .publicKey.export({ type: 'spki', format: 'pem' })
  .toString();
const HASH = `sha256:${'A'.repeat(43)}`;

/** The ConfigError message resolving `auth` gives. */
function refusal(auth: unknown): string {
  try {
    resolveConfig({ auth });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('auth config', () => {
  it('is off by default, and on with any credential source', () => {
    expect(authEnabled(resolveConfig({}))).toBe(false);
    expect(authEnabled(resolveConfig({ auth: { cookie: 'rill_token' } }))).toBe(false);
    for (const auth of [
      { jwt: { secret: SECRET } },
      { apiKeys: [] },
      { apiKeysFile: './keys.yaml' },
      { anonymous: {} },
    ]) {
      expect(authEnabled(resolveConfig({ auth })), JSON.stringify(auth)).toBe(true);
    }
  });

  it('resolves durations and defaults into the settings the auth layer takes', () => {
    const cfg = resolveConfig({
      auth: {
        jwt: {
          keys: [
            { kid: '2026-11', algorithms: ['HS256'], secret: SECRET },
            { kid: 'rsa-1', publicKey: rsaPublic },
            {
              jwksUrl: 'https://idp.example/.well-known/jwks.json',
              algorithms: ['RS256', 'ES256'],
            },
          ],
          audience: 'rill',
          maxLifetime: '2h',
          clockSkew: '5s',
        },
        apiKeys: [{ name: 'backend', hash: HASH, publish: ['orders.>'] }],
        anonymous: { subscribe: ['public.>'] },
        cookie: 'rill_token',
      },
    });
    const settings: AuthSettings = cfg.auth;
    expect(settings.jwt).toMatchObject({
      maxLifetime: 7_200_000,
      clockSkew: 5_000,
      jwksRefresh: 60_000,
      audience: 'rill',
    });
    expect(settings.apiKeys).toEqual([
      { name: 'backend', hash: HASH, publish: ['orders.>'], subscribe: [], admin: false },
    ]);
    expect(settings.anonymous).toEqual({ subscribe: ['public.>'], publish: [] });
    expect(settings).toMatchObject({ wsAuthTimeout: 10_000, expiryWarning: 30_000 });
    expect(resolveConfig({}).auth).toEqual({ wsAuthTimeout: 10_000, expiryWarning: 30_000 });
  });

  it('maps RILL_AUTH__* variables, keeping a secret of digits as text', () => {
    const digits = '12345678901234567890123456789012345';
    const env = configFromEnv({
      RILL_AUTH__JWT__SECRET: digits,
      RILL_AUTH__JWT__MAX_LIFETIME: '1h',
      RILL_AUTH__JWT__AUDIENCE: 'rill',
      RILL_AUTH__API_KEYS_FILE: '/etc/rill/keys.yaml',
      RILL_AUTH__ANONYMOUS__SUBSCRIBE: '["public.>"]',
      RILL_AUTH__WS_AUTH_TIMEOUT: '5s',
    });
    const cfg = resolveConfig(env);
    expect(cfg.auth.jwt).toMatchObject({
      secret: digits,
      maxLifetime: 3_600_000,
      audience: 'rill',
    });
    expect(cfg.auth.apiKeysFile).toBe('/etc/rill/keys.yaml');
    expect(cfg.auth.anonymous).toEqual({ subscribe: ['public.>'], publish: [] });
    expect(cfg.auth.wsAuthTimeout).toBe(5_000);
    expect(authEnabled(cfg)).toBe(true);
  });

  it('refuses a key with both a public key and a secret, naming the key, not echoing the secret', () => {
    const msg = refusal({ jwt: { keys: [{ kid: 'k', secret: SECRET, publicKey: rsaPublic }] } });
    expect(msg).toMatch(/auth\.jwt\.keys\.0.*give only one of secret, publicKey/);
    expect(msg).not.toContain(SECRET.slice(0, 8));
    expect(refusal({ jwt: { keys: [{ kid: 'k' }] } })).toMatch(
      /auth\.jwt\.keys\.0.*give one of secret, publicKey, publicKeyFile, jwksUrl/,
    );
  });

  it('refuses algorithms that do not fit the key: never an HMAC and a public key together', () => {
    expect(
      refusal({ jwt: { keys: [{ publicKey: rsaPublic, algorithms: ['HS256', 'RS256'] }] } }),
    ).toMatch(/auth\.jwt\.keys\.0\.algorithms.*HS256 needs a secret/);
    expect(refusal({ jwt: { keys: [{ secret: SECRET, algorithms: ['RS256'] }] } })).toMatch(
      /auth\.jwt\.keys\.0\.algorithms.*a secret allows HS256, HS384 and HS512 only/,
    );
    expect(refusal({ jwt: { keys: [{ secret: SECRET, algorithms: ['none'] }] } })).toMatch(
      /auth\.jwt\.keys\.0\.algorithms\.0/,
    );
    expect(refusal({ jwt: { keys: [{ jwksUrl: 'https://idp.example/jwks' }] } })).toMatch(
      /auth\.jwt\.keys\.0\.algorithms.*required with jwksUrl/,
    );
  });

  it('refuses a JWKS over plain HTTP except on loopback', () => {
    expect(
      refusal({ jwt: { keys: [{ jwksUrl: 'http://idp.example/jwks', algorithms: ['RS256'] }] } }),
    ).toMatch(/auth\.jwt\.keys\.0\.jwksUrl.*https:\/\//);
    expect(
      resolveConfig({
        auth: { jwt: { keys: [{ jwksUrl: 'http://127.0.0.1:9/jwks', algorithms: ['RS256'] }] } },
      }).auth.jwt?.keys[0]?.jwksUrl,
    ).toBe('http://127.0.0.1:9/jwks');
  });

  it('refuses a short secret without printing it, a private key, and malformed PEM', () => {
    const msg = refusal({ jwt: { secret: 'hunter2-hunter2' } });
    expect(msg).toMatch(/auth\.jwt\.secret \(RILL_AUTH__JWT__SECRET\): must be at least 32 bytes/);
    expect(msg).not.toContain('hunter2');
    const privatePem = generateKeyPairSync('ed25519')
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    expect(refusal({ jwt: { keys: [{ publicKey: privatePem }] } })).toMatch(
      /auth\.jwt\.keys\.0\.publicKey: expected a PEM public key/,
    );
    expect(refusal({ jwt: { keys: [{ publicKey: 'not a key' }] } })).toMatch(
      /auth\.jwt\.keys\.0\.publicKey/,
    );
  });

  it('refuses ambiguous keys: a kid twice, two keys without a kid, no key at all', () => {
    expect(
      refusal({
        jwt: {
          keys: [
            { kid: 'a', secret: SECRET },
            { kid: 'a', publicKey: rsaPublic },
          ],
        },
      }),
    ).toMatch(/auth\.jwt\.keys\.1\.kid.*"a" is used twice/);
    expect(refusal({ jwt: { secret: SECRET, keys: [{ publicKey: rsaPublic }] } })).toMatch(
      /auth\.jwt\.keys\.0\.kid.*only one key may go without a kid/,
    );
    expect(refusal({ jwt: {} })).toMatch(/auth\.jwt.*set secret or keys/);
  });

  it('refuses malformed API keys and unknown keys, naming them', () => {
    expect(refusal({ apiKeys: [{ name: 'b', hash: 'sha1:abc' }] })).toMatch(
      /auth\.apiKeys\.0\.hash.*sha256:/,
    );
    expect(refusal({ apiKeys: [{ name: 'has space', hash: HASH }] })).toMatch(
      /auth\.apiKeys\.0\.name/,
    );
    expect(
      refusal({
        apiKeys: [
          { name: 'b', hash: HASH },
          { name: 'b', hash: HASH },
        ],
      }),
    ).toMatch(/auth\.apiKeys\.1\.name.*"b" is used twice/);
    expect(refusal({ apiKeys: [{ name: 'b', hash: HASH, publish: ['a.>.b'] }] })).toMatch(
      /auth\.apiKeys\.0\.publish\.0/,
    );
    expect(refusal({ anonymous: { read: ['x'] } })).toMatch(/auth\.anonymous: unknown key.*"read"/);
    expect(refusal({ tokens: [] })).toMatch(/auth: unknown key.*"tokens"/);
  });
});
