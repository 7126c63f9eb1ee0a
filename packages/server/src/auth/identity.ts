import type { LimitOverride } from '../model/limits.js';
import { Grants } from './grants.js';

/** Who made a request, and what they may do. */
export interface Identity {
  kind: 'jwt' | 'apiKey' | 'anonymous';
  /**
   * The JWT's `sub`, or the API key entry's `sub` when it has one; null for other API keys and
   * anonymous requests.
   */
  sub: string | null;
  /** The API key's name (for logs). */
  name?: string;
  /**
   * Names the credential, so that streams opened with it can be ended when it is revoked:
   * `jwt:<kid or 'default'>:<sub>`, `key:<name>`, or `anonymous`.
   */
  credentialId: string;
  /** When the credential stops being valid, ms since the epoch (a JWT's `exp`); null: never. */
  expiresAt: number | null;
  grants: Grants;
  /** An API key's own rate and count limits (its entry's `limits`). */
  limits?: LimitOverride;
  /**
   * The JWT's `rill.info` or the API key entry's `info`, passed through for the application
   * (presence lists it; a connect hook may replace it for its connection).
   */
  info?: Record<string, unknown>;
}

/** The identity of every request on a server without authentication: everything allowed. */
export const OPEN_IDENTITY: Identity = Object.freeze({
  kind: 'anonymous',
  sub: null,
  credentialId: 'anonymous',
  expiresAt: null,
  grants: Grants.all,
});

/**
 * Whether `credentialId` is among `revoked`: exact ids (`key:backend`, `anonymous`), and
 * `jwt:<kid>:*` for every subject of a JWT key.
 */
export function isRevoked(credentialId: string, revoked: readonly string[]): boolean {
  return revoked.some((r) =>
    r.endsWith(':*') && r.startsWith('jwt:')
      ? credentialId.startsWith(r.slice(0, -1))
      : credentialId === r,
  );
}
