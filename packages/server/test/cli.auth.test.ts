/**
 * `rill token` and `rill keys add` as operators run them: the built bin in a child process. A
 * minted token must pass the server's verifier with the grants asked for; a printed key must match
 * the hash in the entry printed (or added to the keys file) with it.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator, JwtVerifier, readApiKeysFile } from '../src/auth/index.js';
import { configFromEnv, resolveConfig } from '../src/config.js';
import { ApiKeyEntrySchema } from '../src/model/credentials.js';
import { BIN, tempDir } from '@rill/testkit';

// The children inherit this environment: no stray RILL_* setting may decide an outcome.
for (const k of Object.keys(process.env)) if (k.startsWith('RILL_')) delete process.env[k];

const SECRET = 'cli-test-secret-0123456789-abcdefghijkl';
let scratch: ReturnType<typeof tempDir>;
beforeAll(() => {
  scratch = tempDir('rill-cli-auth-');
});
afterAll(() => scratch.remove());

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function rill(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, ...env }, cwd: scratch.path, timeout: 20_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe('rill token', () => {
  it('signs with the secret from the environment a token the verifier accepts', async () => {
    const env = { RILL_AUTH__JWT__SECRET: SECRET };
    const r = await rill(
      [
        'token',
        '--sub',
        'alice',
        '--subscribe',
        'chat.*',
        '--publish',
        'chat.room-1',
        '--ttl',
        '1h',
      ],
      env,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const token = r.stdout.trim();
    const auth = await Authenticator.create(resolveConfig(configFromEnv(env)).auth);
    const id = await auth.identify(token);
    expect(id).toMatchObject({ kind: 'jwt', sub: 'alice', credentialId: 'jwt:default:alice' });
    expect(id.grants.toJSON()).toEqual({
      subscribe: ['chat.*'],
      publish: ['chat.room-1'],
      admin: false,
    });
    expect(id.expiresAt! - Date.now()).toBeGreaterThan(3_590_000);
    expect(id.expiresAt! - Date.now()).toBeLessThanOrEqual(3_601_000);
  });

  it('picks the secret by --kid from --config, with the configured audience and issuer', async () => {
    const config = join(scratch.path, 'rill.yaml');
    writeFileSync(
      config,
      [
        'auth:',
        '  jwt:',
        '    audience: rill',
        '    issuer: https://issuer.example',
        '    keys:',
        `      - { kid: "2026-10", secret: "${SECRET}-old" }`,
        `      - { kid: "2026-11", secret: "${SECRET}-new", algorithms: [HS512] }`,
      ].join('\n'),
    );
    const r = await rill([
      'token',
      '--config',
      config,
      '--kid',
      '2026-11',
      '--sub',
      'bob',
      '--admin',
    ]);
    expect(r.code).toBe(0);
    const token = r.stdout.trim();
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'HS512', kid: '2026-11' });
    const jwt = resolveConfig(parseYaml(readFileSync(config, 'utf8'))).auth.jwt!;
    const verified = await JwtVerifier.create(jwt).verify(token);
    expect(verified).toMatchObject({
      kid: '2026-11',
      sub: 'bob',
      claims: { aud: 'rill', iss: 'https://issuer.example', rill: { admin: true } },
    });
    // Two secrets and no --kid: which one is not guessed.
    const ambiguous = await rill(['token', '--config', config, '--sub', 'bob']);
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toMatch(/several secrets are configured: pick one with --kid/);
  });

  it('signs with --private-key (Ed25519, ES256) for a server holding the public key', async () => {
    for (const [type, alg] of [
      ['ed25519', 'EdDSA'],
      ['ec', 'ES256'],
    ] as const) {
      const pair =
        type === 'ec'
          ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
          : generateKeyPairSync('ed25519');
      const file = join(scratch.path, `${type}.pem`);
      writeFileSync(file, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
      const r = await rill(['token', '--private-key', file, '--kid', 'k1', '--sub', 'svc']);
      expect(r.code, r.stderr).toBe(0);
      const token = r.stdout.trim();
      expect(decodeProtectedHeader(token)).toMatchObject({ alg, kid: 'k1' });
      const jwt = resolveConfig({
        auth: {
          jwt: {
            keys: [
              {
                kid: 'k1',
                publicKey: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
              },
            ],
          },
        },
      }).auth.jwt!;
      expect(await JwtVerifier.create(jwt).verify(token)).toMatchObject({ sub: 'svc' });
    }
  });

  it('refuses a --ttl above the maximum lifetime, a bad pattern, and signing without a key', async () => {
    const env = { RILL_AUTH__JWT__SECRET: SECRET, RILL_AUTH__JWT__MAX_LIFETIME: '1h' };
    const long = await rill(['token', '--sub', 'a', '--ttl', '2h'], env);
    expect(long.code).toBe(2);
    expect(long.stderr).toMatch(/--ttl 2h is above auth\.jwt\.maxLifetime/);
    expect(long.stdout).toBe('');
    const bad = await rill(['token', '--sub', 'a', '--subscribe', 'chat.>.x'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/"chat\.>\.x" is not a topic or pattern/);
    const none = await rill(['token', '--sub', 'a']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no secret to sign with/);
  });
});

describe('rill keys add', () => {
  it('prints a new key and the entry with its hash, which together authenticate', async () => {
    const r = await rill([
      'keys',
      'add',
      'backend',
      '--publish',
      'orders.>',
      '--subscribe',
      'acks.*',
    ]);
    expect(r.code).toBe(0);
    const [key, ...rest] = r.stdout.trimEnd().split('\n');
    expect(key).toMatch(/^rill_[A-Za-z0-9_-]{43}$/);
    // The rest is YAML: a comment and a one-entry list, ready to paste.
    const entries = (parseYaml(rest.join('\n')) as unknown[]).map((e) =>
      ApiKeyEntrySchema.parse(e),
    );
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      name: 'backend',
      publish: ['orders.>'],
      subscribe: ['acks.*'],
      admin: false,
    });
    // The entry holds the hash only, never the key.
    expect(rest.join('\n')).not.toContain(key!.slice(5));
    const auth = await Authenticator.create(resolveConfig({ auth: { apiKeys: entries } }).auth);
    const id = await auth.authenticate({ authorization: `Bearer ${key}` });
    expect(id).toMatchObject({ credentialId: 'key:backend' });
    expect(id.grants.canPublish('orders.1')).toBe(true);
    // Another run, another key.
    const again = await rill(['keys', 'add', 'backend']);
    expect(again.stdout.split('\n')[0]).not.toBe(key);
  });

  it('adds the entry to a keys file with --file, keeping what was there, and refuses a name twice', async () => {
    const file = join(scratch.path, 'keys.yaml');
    const first = await rill(['keys', 'add', 'one', '--file', file, '--subscribe', 'a.>']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout.trim()).toMatch(/^rill_[A-Za-z0-9_-]{43}$/);
    writeFileSync(file, `# API keys of this deployment\n${readFileSync(file, 'utf8')}`);
    const second = await rill(['keys', 'add', 'two', '--file', file, '--admin']);
    expect(second.code, second.stderr).toBe(0);
    expect(readFileSync(file, 'utf8')).toMatch(/^# API keys of this deployment\n/);
    expect(readApiKeysFile(file).map((e) => [e.name, e.admin])).toEqual([
      ['one', false],
      ['two', true],
    ]);
    const auth = await Authenticator.create(resolveConfig({ auth: { apiKeysFile: file } }).auth, {
      watchKeysFile: false,
    });
    for (const [run, name] of [
      [first, 'one'],
      [second, 'two'],
    ] as const) {
      expect(await auth.identify(run.stdout.trim())).toMatchObject({ name });
    }
    const twice = await rill(['keys', 'add', 'one', '--file', file]);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toMatch(/already has a key named one/);
    expect(twice.stdout).toBe('');
  });

  it('refuses a bad name', async () => {
    const r = await rill(['keys', 'add', 'has space']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/key name "has space"/);
  });
});
