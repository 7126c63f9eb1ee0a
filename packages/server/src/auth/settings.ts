import type { ApiKeyEntry, JwtAlgorithm } from '../model/credentials.js';

export { authConfigured } from '../model/credentials.js';

/**
 * What the auth layer is built from: the resolved `auth` section of the configuration (durations
 * in ms). Declared here rather than imported so that this layer depends on the model only; the
 * configuration's schema produces exactly this shape.
 */
export interface AuthSettings {
  jwt?: JwtSettings | undefined;
  /** Keys listed in the configuration itself; `undefined` when the key is absent. */
  apiKeys?: ApiKeyEntry[] | undefined;
  /** A YAML or JSON file holding a list of the same entries; watched and reloaded. */
  apiKeysFile?: string | undefined;
  /** What a request without credentials may do; without it such a request is refused. */
  anonymous?: { subscribe: string[]; publish: string[] } | undefined;
  /** Name of the cookie a token is read from (same-site apps); none is read when unset. */
  cookie?: string | undefined;
  /** Deadline for the first WebSocket `auth` message when the upgrade carried no token. */
  wsAuthTimeout: number;
  /** How long before a token's `exp` a WebSocket gets `token_expiring`. */
  expiryWarning: number;
}

export interface JwtSettings {
  /** Shortcut for one HS256 key without a kid. */
  secret?: string | undefined;
  keys: JwtKeySettings[];
  /** Checked when set: the token's `aud` must name one of these. */
  audience?: string | string[] | undefined;
  /** Checked when set: the token's `iss` must be one of these. */
  issuer?: string | string[] | undefined;
  /** Longest `exp - (iat ?? now)` accepted, ms. */
  maxLifetime: number;
  /** Allowance on `exp`, `nbf` and `iat` for clocks that disagree, ms. */
  clockSkew: number;
  /** How often each JWKS is fetched again, ms. */
  jwksRefresh: number;
}

/** One verification key: exactly one of `secret`, `publicKey`, `publicKeyFile`, `jwksUrl`. */
export interface JwtKeySettings {
  /** Matched against the token header's `kid`; optional for one key. */
  kid?: string | undefined;
  /**
   * The algorithms this key accepts. Defaults: HS256 for a secret; for a public key, what its
   * type implies (RSA: RS256, P-256: ES256, P-384: ES384, P-521: ES512, Ed25519: EdDSA). Required
   * for a JWKS.
   */
  algorithms?: JwtAlgorithm[] | undefined;
  secret?: string | undefined;
  /** A PEM public key (SPKI or PKCS#1) or certificate. */
  publicKey?: string | undefined;
  publicKeyFile?: string | undefined;
  jwksUrl?: string | undefined;
}

/** Auth settings that cannot be used (a key file that cannot be read, a malformed key). */
export class AuthConfigError extends Error {
  override name = 'AuthConfigError';
}
