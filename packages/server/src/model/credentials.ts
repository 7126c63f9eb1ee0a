import { z } from 'zod';
import { LimitOverrideSchema } from './limits.js';
import { isValidPattern } from './topic.js';

/**
 * The formats of Rill's credentials, shared by the configuration (`auth.apiKeys`), the API keys
 * file, the auth layer that checks them and the `rill keys` / `rill token` commands.
 */

/** Every API key starts with this; anything else presented as a token is taken for a JWT. */
export const API_KEY_PREFIX = 'rill_';

/** `rill_` and 32 random bytes in base64url (43 characters). */
export const API_KEY_RE = /^rill_[A-Za-z0-9_-]{43}$/;

/** How a key is stored: `sha256:` and the base64url SHA-256 of the whole key (43 characters). */
export const API_KEY_HASH_RE = /^sha256:[A-Za-z0-9_-]{43}$/;

/** An API key's name: in logs and in its credential id `key:<name>`. */
export const API_KEY_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * The JWS algorithms a configured key may allow (never `none`). HS* take a shared secret, the
 * others a public key; one key never allows both kinds.
 */
export const JWT_ALGORITHMS = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;

export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** Bytes a shared JWT secret needs at least: what HS256's output holds (RFC 7518 § 3.2). */
export const MIN_SECRET_BYTES = 32;

/** Whether `alg` takes a shared secret (HMAC) rather than a public key. */
export function isHmacAlgorithm(alg: string): boolean {
  return alg.startsWith('HS');
}

/** Longest `sub` an API key entry may carry. */
export const MAX_KEY_SUB_LENGTH = 256;
/** Largest `info` an API key entry may carry, as JSON bytes (what presence keeps). */
export const MAX_KEY_INFO_BYTES = 1024;

const grantPattern = z
  .string()
  .refine(isValidPattern, { message: 'expected a topic or pattern such as "orders.>"' });

/**
 * One API key as configured (`auth.apiKeys`) or listed in the keys file: its name, the hash of the
 * key (never the key) and what it may do.
 */
export const ApiKeyEntrySchema = z.strictObject({
  name: z
    .string()
    .regex(API_KEY_NAME_RE, { message: 'expected 1-64 characters of [A-Za-z0-9_.-]' }),
  hash: z.string().regex(API_KEY_HASH_RE, {
    message: 'expected "sha256:" and 43 base64url characters (as `rill keys add` prints)',
  }),
  publish: z.array(grantPattern).default([]),
  subscribe: z.array(grantPattern).default([]),
  admin: z.boolean().default(false),
  /** This key's own rate and count limits; the others from `rateLimits.perKey`. */
  limits: LimitOverrideSchema.optional(),
  /**
   * The subject this key's connections are, as a JWT's `sub` is: presence lists them under it
   * (instead of only counting them), and `DELETE /v1/connections?sub=` ends them.
   */
  sub: z.string().min(1).max(MAX_KEY_SUB_LENGTH).optional(),
  /** What presence shows of this key's connections, as a JWT's `rill.info` (at most 1 KiB of JSON). */
  info: z
    .record(z.string(), z.unknown())
    .refine((v) => Buffer.byteLength(JSON.stringify(v)) <= MAX_KEY_INFO_BYTES, {
      message: `must be at most ${MAX_KEY_INFO_BYTES} bytes of JSON`,
    })
    .optional(),
});

export type ApiKeyEntry = z.output<typeof ApiKeyEntrySchema>;

/** The credential sources of the `auth` settings; any one of them configured turns auth on. */
export interface CredentialSources {
  jwt?: unknown;
  apiKeys?: unknown;
  apiKeysFile?: unknown;
  anonymous?: unknown;
}

/**
 * Whether authentication is on: any of `jwt`, `apiKeys` (even an empty list), `apiKeysFile` or
 * `anonymous` is configured. Off, everything is allowed and the server binds loopback only.
 */
export function authConfigured(s: CredentialSources): boolean {
  return (
    s.jwt !== undefined ||
    s.apiKeys !== undefined ||
    s.apiKeysFile !== undefined ||
    s.anonymous !== undefined
  );
}
