/**
 * JWT keys from a JWKS served over a real loopback HTTP server: tokens verify by kid, a key removed
 * from the set is revoked at the next reload or scheduled refresh, a key added is picked up, and
 * the keys last fetched stay in use while the set cannot be fetched.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, SignJWT, type JWK } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { Authenticator, isRevoked, type AuthSettings } from '../src/auth/index.js';
import { resolveConfig } from '../src/config.js';
import { RillError } from '../src/model/errors.js';

interface Served {
  url: string;
  /** The keys the server hands out now. */
  keys: JWK[];
  /** Requests it answered. */
  hits: number;
  close: () => Promise<void>;
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serveJwks(keys: JWK[]): Promise<Served> {
  const served: Served = { url: '', keys, hits: 0, close: async () => undefined };
  const server = http.createServer((_req, res) => {
    served.hits++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: served.keys }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  served.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  let closed = false;
  served.close = async () => {
    if (closed) return;
    closed = true;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  };
  cleanups.push(served.close);
  return served;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa2 = generateKeyPairSync('rsa', { modulusLength: 2048 });

async function jwk(key: KeyObject, kid: string, alg: string): Promise<JWK> {
  return { ...(await exportJWK(key)), kid, alg, use: 'sig' };
}

async function token(key: KeyObject, alg: string, kid: string, sub = 'alice'): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub, iat: now, exp: now + 600 }).setProtectedHeader({ alg, kid }).sign(key);
}

/** Auth settings through the real config schema, so the JWKS URL rules apply. */
function settings(url: string, jwksRefresh = '60s'): AuthSettings {
  return resolveConfig({
    auth: { jwt: { keys: [{ jwksUrl: url, algorithms: ['RS256', 'ES256'] }], jwksRefresh } },
  }).auth;
}

async function authenticator(s: AuthSettings): Promise<Authenticator> {
  const a = await Authenticator.create(s, { jwksTimeout: 2_000 });
  cleanups.push(() => a.close());
  return a;
}

describe('JWKS', () => {
  it('verifies tokens by kid with the keys the set serves', async () => {
    const idp = await serveJwks([
      await jwk(rsa.publicKey, 'r1', 'RS256'),
      await jwk(ec.publicKey, 'e1', 'ES256'),
    ]);
    const a = await authenticator(settings(idp.url));
    expect(idp.hits).toBe(1);
    expect(await a.identify(await token(rsa.privateKey, 'RS256', 'r1'))).toMatchObject({
      kind: 'jwt',
      credentialId: 'jwt:r1:alice',
    });
    expect(await a.identify(await token(ec.privateKey, 'ES256', 'e1', 'bob'))).toMatchObject({
      credentialId: 'jwt:e1:bob',
    });
    // A key of the set under another kid, and a kid the set does not have: refused.
    await expect(a.identify(await token(rsa.privateKey, 'RS256', 'e1'))).rejects.toMatchObject({
      code: 'unauthorized',
    });
    await expect(a.identify(await token(rsa2.privateKey, 'RS256', 'r9'))).rejects.toMatchObject({
      code: 'unauthorized',
    });
  });

  it('revokes the tokens of a key removed from the set at reload', async () => {
    const idp = await serveJwks([
      await jwk(rsa.publicKey, 'r1', 'RS256'),
      await jwk(ec.publicKey, 'e1', 'ES256'),
    ]);
    const a = await authenticator(settings(idp.url));
    const r1 = await token(rsa.privateKey, 'RS256', 'r1');
    const e1 = await token(ec.privateKey, 'ES256', 'e1');
    await a.identify(r1);
    idp.keys = [await jwk(ec.publicKey, 'e1', 'ES256')];
    const revoked = once(a, 'revoked');
    const report = await a.reload();
    expect(report.revoked).toEqual(['jwt:r1:*']);
    expect(await revoked).toEqual([report]);
    expect(isRevoked('jwt:r1:alice', report.revoked)).toBe(true);
    expect(isRevoked('jwt:e1:alice', report.revoked)).toBe(false);
    await expect(a.identify(r1)).rejects.toMatchObject({ code: 'unauthorized' });
    expect(await a.identify(e1)).toMatchObject({ credentialId: 'jwt:e1:alice' });
  });

  it('revokes on the scheduled refresh too, and picks up a key added to the set', async () => {
    const idp = await serveJwks([await jwk(rsa.publicKey, 'r1', 'RS256')]);
    const a = await authenticator(settings(idp.url, '1s'));
    const r1 = await token(rsa.privateKey, 'RS256', 'r1');
    await a.identify(r1);
    // Rotation: the new key is published, then the old one withdrawn.
    idp.keys = [await jwk(rsa2.publicKey, 'r2', 'RS256')];
    const [report] = await once(a, 'revoked');
    expect(report).toEqual({ trigger: 'jwks', revoked: ['jwt:r1:*'], changed: [] });
    await expect(a.identify(r1)).rejects.toMatchObject({ code: 'unauthorized' });
    expect(await a.identify(await token(rsa2.privateKey, 'RS256', 'r2'))).toMatchObject({
      credentialId: 'jwt:r2:alice',
    });
  });

  it('keeps the last keys while the set cannot be fetched, revoking nothing', async () => {
    const idp = await serveJwks([await jwk(rsa.publicKey, 'r1', 'RS256')]);
    const a = await authenticator(settings(idp.url));
    const r1 = await token(rsa.privateKey, 'RS256', 'r1');
    await idp.close();
    const report = await a.reload();
    expect(report.revoked).toEqual([]);
    expect(await a.identify(r1)).toMatchObject({ credentialId: 'jwt:r1:alice' });
  });

  it('answers a retryable error, not unauthorized, when the keys were never fetched', async () => {
    const idp = await serveJwks([]);
    const url = idp.url;
    await idp.close();
    const a = await authenticator(settings(url));
    const err = await a
      .identify(await token(rsa.privateKey, 'RS256', 'r1'))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RillError);
    expect(err).toMatchObject({ code: 'internal', retryable: true });
  });
});
