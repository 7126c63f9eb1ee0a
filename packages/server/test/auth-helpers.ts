/**
 * Credentials for the tests of a server with authentication: JWTs signed with a known secret,
 * API keys with their configured entries, and an in-process server configured with both.
 */
import { SignJWT } from 'jose';
import { pino, type Logger } from 'pino';
import { generateApiKey, hashApiKey } from '../src/auth/index.js';
import type { RillConfigInput } from '../src/config.js';
import type { ApiKeyEntry } from '../src/model/credentials.js';
import { createServer, type RillServer } from '../src/server.js';

/** The `auth.jwt.secret` of {@link authConfig}. */
export const SECRET = 'auth-test-secret-0123456789-abcdefghijklmnop';

export interface Claims {
  sub: string;
  subscribe?: string[];
  publish?: string[];
  admin?: boolean;
}

/** A JWT for `claims` expiring `ttlMs` from now (HS256, the test secret unless `secret`). */
export async function sign(
  claims: Claims,
  ttlMs = 3_600_000,
  opts: { secret?: string; kid?: string } = {},
): Promise<string> {
  const { sub, ...grants } = claims;
  const now = Date.now();
  return new SignJWT({ rill: grants })
    .setProtectedHeader({ alg: 'HS256', ...(opts.kid === undefined ? {} : { kid: opts.kid }) })
    .setSubject(sub)
    .setIssuedAt(Math.floor(now / 1000))
    .setExpirationTime((now + ttlMs) / 1000)
    .sign(new TextEncoder().encode(opts.secret ?? SECRET));
}

/** A new API key and its configured entry. */
export function apiKey(
  name: string,
  grants: { publish?: string[]; subscribe?: string[]; admin?: boolean } = {},
): { key: string; entry: ApiKeyEntry } {
  const key = generateApiKey();
  return {
    key,
    entry: {
      name,
      hash: hashApiKey(key),
      publish: grants.publish ?? [],
      subscribe: grants.subscribe ?? [],
      admin: grants.admin ?? false,
    },
  };
}

/** An `auth` section: the test secret (no clock skew, so expiry is exact), plus `extra`. */
export function authConfig(extra: Record<string, unknown> = {}): RillConfigInput['auth'] {
  return { jwt: { secret: SECRET, clockSkew: 0 }, ...extra } as RillConfigInput['auth'];
}

/** An in-process server (memory engine, loopback, any port) with `config`; its base URL. */
export async function startAuthServer(
  config: RillConfigInput,
  logger: Logger = pino({ level: 'silent' }),
): Promise<{ server: RillServer; url: string; close: () => Promise<void> }> {
  const server = await createServer(
    { engine: 'memory', port: 0, logLevel: 'silent', ...config },
    { logger },
  );
  const url = await server.listen();
  return { server, url, close: () => server.close() };
}

export const bearer = (token: string): Record<string, string> => ({
  authorization: `Bearer ${token}`,
});
