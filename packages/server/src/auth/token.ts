import { parseCookie } from 'cookie';
import { RillError } from '../model/errors.js';

/** Where a request's credentials can be: each optional, as the transport found them. */
export interface Credentials {
  /** The `Authorization` header. */
  authorization?: string | undefined;
  /** The `access_token` query parameter (EventSource cannot set headers). */
  accessToken?: string | undefined;
  /** The `Cookie` header. */
  cookie?: string | undefined;
}

/** Errors whose 401 answer says "no token" rather than "bad token" (RFC 6750 § 3). */
const noTokenErrors = new WeakSet<RillError>();

/** `unauthorized` for a request that carried no credentials at all. */
export function missingCredentials(message: string): RillError {
  const err = new RillError('unauthorized', message);
  noTokenErrors.add(err);
  return err;
}

/**
 * The `WWW-Authenticate` value a 401 carries (RFC 6750): `Bearer realm="rill"` when the request
 * had no token, with `error="invalid_token"` when it had a bad or expired one.
 */
export function wwwAuthenticate(err: RillError): string {
  return noTokenErrors.has(err)
    ? 'Bearer realm="rill"'
    : 'Bearer realm="rill", error="invalid_token"';
}

/** RFC 6750's b64token: what may follow `Bearer `. */
const B64TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * The token of a request: the `Authorization: Bearer` header, else the `access_token` query
 * parameter, else the named cookie; null when there is none. A header that is there but not a
 * well-formed Bearer one is refused, never skipped: a client that sent credentials meant them.
 */
export function extractToken(creds: Credentials, cookieName: string | undefined): string | null {
  if (creds.authorization !== undefined) {
    const m = /^Bearer +(\S+) *$/i.exec(creds.authorization);
    if (!m || !B64TOKEN_RE.test(m[1]!)) {
      throw new RillError(
        'unauthorized',
        'Malformed Authorization header: expected "Bearer <token>"',
      );
    }
    return m[1]!;
  }
  if (creds.accessToken !== undefined) return creds.accessToken;
  if (cookieName !== undefined && creds.cookie !== undefined) {
    const value = parseCookie(creds.cookie)[cookieName];
    if (value !== undefined) return value;
  }
  return null;
}
