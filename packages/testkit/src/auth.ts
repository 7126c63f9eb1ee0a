/**
 * Credentials for the tests of a server with authentication: JWTs signed with a known secret and
 * API keys with their configured entries, for an `auth` section ({@link authConfig}).
 */
import { SignJWT } from 'jose';
import { generateApiKey, hashApiKey } from '../../server/src/auth/index.js';
import type { RillConfigInput } from '../../server/src/config.js';
import type { ApiKeyEntry } from '../../server/src/model/credentials.js';

/** The `auth.jwt.secret` of {@link authConfig}. */
export const SECRET = 'auth-test-secret-0123456789-abcdefghijklmnop';

export interface Claims {
  sub: string;
  subscribe?: string[];
  publish?: string[];
  admin?: boolean;
  /** The `rill.info` claim (what presence lists with the `sub`). */
  info?: Record<string, unknown>;
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

/** `Authorization: Bearer <token>`. */
export const bearer = (token: string): Record<string, string> => ({
  authorization: `Bearer ${token}`,
});
