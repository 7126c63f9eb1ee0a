import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors as joseErrors,
  jwksCache,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type RemoteJWKSet,
} from 'jose';
import { isHmacAlgorithm, MIN_SECRET_BYTES, type JwtAlgorithm } from '../model/credentials.js';
import { RillError } from '../model/errors.js';
import { AuthConfigError, type JwtKeySettings, type JwtSettings } from './settings.js';

/**
 * JWT verification with `jose`. Which key checks a token, and with which algorithms, comes from
 * the configuration only: the header's `kid` picks a configured key, its `alg` must be one that
 * key allows, and header parameters that name other keys (`jwk`, `jku`, `x5u`, `x5c`) are never
 * looked at. `none` cannot be configured; a secret never checks an asymmetric algorithm, nor a
 * public key an HMAC one.
 */

/** A verified token's facts. */
export interface VerifiedJwt {
  /** The key's kid, or null for the kid-less key. */
  kid: string | null;
  sub: string;
  /** `exp` in ms since the epoch. */
  expiresAt: number;
  claims: JWTPayload;
}

/** The kid used in credential ids for the key without one. */
export const DEFAULT_KID = 'default';

interface StaticKey {
  kid: string | null;
  algorithms: JwtAlgorithm[];
  key: KeyObject | Uint8Array;
  /** Identifies the key material (never the material itself). */
  fingerprint: string;
}

interface JwksSource {
  url: string;
  algorithms: JwtAlgorithm[];
  set: RemoteJWKSet;
  /** jose's cache of this set (the last keys fetched, and when), kept across reloads. */
  cache: { jwks?: JSONWebKeySet; uat?: number };
}

/** The state of a JWKS fetched before, handed to the next verifier so a reload refetches nothing. */
export type JwksCaches = Map<string, { jwks?: JSONWebKeySet; uat?: number }>;

export interface JwtVerifierOptions {
  /** Caches of JWKS URLs from a verifier this one replaces (see {@link JwtVerifier.caches}). */
  jwksCaches?: JwksCaches;
  /** How long a JWKS request may take, ms. */
  jwksTimeout?: number;
}

export class JwtVerifier {
  private readonly byKid = new Map<string, StaticKey>();
  private kidless: StaticKey | undefined;
  private readonly jwks: JwksSource[] = [];

  private constructor(private readonly settings: JwtSettings) {}

  /**
   * Builds a verifier: reads and checks every key (throws {@link AuthConfigError} naming the key)
   * and sets up each JWKS, starting from the cache of a previous verifier when given one. Nothing
   * is fetched here: see {@link refreshJwks}.
   */
  static create(settings: JwtSettings, options: JwtVerifierOptions = {}): JwtVerifier {
    const v = new JwtVerifier(settings);
    const keys: Array<{ where: string; k: JwtKeySettings }> = settings.keys.map((k, i) => ({
      where: `auth.jwt.keys[${i}]`,
      k,
    }));
    if (settings.secret !== undefined) {
      keys.unshift({ where: 'auth.jwt.secret', k: { secret: settings.secret } });
    }
    if (keys.length === 0) throw new AuthConfigError('auth.jwt: no keys (set secret or keys)');
    for (const { where, k } of keys) {
      if (k.jwksUrl !== undefined) {
        v.jwks.push(v.jwksSource(where, k, options));
        continue;
      }
      const key = staticKey(where, k);
      if (key.kid === null) {
        if (v.kidless) {
          throw new AuthConfigError(`${where}: a second key without a kid (give each key a kid)`);
        }
        v.kidless = key;
      } else {
        if (v.byKid.has(key.kid)) {
          throw new AuthConfigError(`${where}: kid ${JSON.stringify(key.kid)} is used twice`);
        }
        v.byKid.set(key.kid, key);
      }
    }
    return v;
  }

  private jwksSource(where: string, k: JwtKeySettings, options: JwtVerifierOptions): JwksSource {
    const url = k.jwksUrl!;
    const algorithms = k.algorithms ?? [];
    if (algorithms.length === 0) {
      throw new AuthConfigError(`${where}.algorithms: required for a JWKS`);
    }
    if (algorithms.some(isHmacAlgorithm)) {
      throw new AuthConfigError(`${where}.algorithms: a JWKS holds public keys, not HS* secrets`);
    }
    const cache = structuredClone(options.jwksCaches?.get(url) ?? {});
    const set = createRemoteJWKSet(new URL(url), {
      // Fetched on a schedule (refreshJwks): a key once fetched stays usable while the identity
      // provider is unreachable. A token naming a kid not in the set triggers a fetch, at most
      // once per cooldown.
      cacheMaxAge: Infinity,
      cooldownDuration: Math.min(30_000, this.settings.jwksRefresh),
      timeoutDuration: options.jwksTimeout ?? 5_000,
      [jwksCache]: cache as { jwks: JSONWebKeySet; uat: number },
    });
    return { url, algorithms, set, cache };
  }

  /** JWKS caches to hand to the verifier that replaces this one. */
  caches(): JwksCaches {
    return new Map(this.jwks.map((s) => [s.url, structuredClone(s.cache)]));
  }

  /**
   * Fetches every JWKS now. Resolves with the URLs that could not be fetched (their last keys
   * stay in use) and their errors.
   */
  async refreshJwks(): Promise<Array<{ url: string; error: Error }>> {
    const failed: Array<{ url: string; error: Error }> = [];
    await Promise.all(
      this.jwks.map((s) =>
        s.set.reload().catch((error: unknown) => {
          failed.push({ url: s.url, error: error as Error });
        }),
      ),
    );
    return failed;
  }

  /**
   * Every key by the kid credential ids use (`default` for the kid-less one), with a fingerprint
   * that changes when the key material or the checks tokens must pass (audience, issuer) do. A kid
   * whose fingerprint vanished or changed between two calls no longer vouches for the tokens it
   * verified.
   */
  fingerprints(): Map<string, string> {
    const checks = JSON.stringify([this.settings.audience ?? null, this.settings.issuer ?? null]);
    const out = new Map<string, string>();
    for (const s of this.jwks) {
      for (const jwk of s.set.jwks()?.keys ?? []) {
        out.set(
          jwk.kid ?? DEFAULT_KID,
          digest(`jwks ${s.url} ${jwkMaterial(jwk)} ${s.algorithms.join()} ${checks}`),
        );
      }
    }
    for (const k of [...this.byKid.values(), ...(this.kidless ? [this.kidless] : [])]) {
      out.set(k.kid ?? DEFAULT_KID, digest(`${k.fingerprint} ${k.algorithms.join()} ${checks}`));
    }
    return out;
  }

  /**
   * Verifies `token` as of `now` (ms): signature by the configured key its `kid` names (or the
   * kid-less key), an allowed algorithm, `exp` present and not past, `nbf` and `iat` not in the
   * future, the lifetime within `maxLifetime`, `aud` and `iss` when configured, a `sub`. Clocks may
   * disagree by `clockSkew` either way. Throws `token_expired` for an expired token, else
   * `unauthorized` saying why.
   */
  async verify(token: string, now = Date.now()): Promise<VerifiedJwt> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw unauthorized('Malformed token: not a JWT');
    }
    const { alg, kid } = header;
    if (typeof alg !== 'string') throw unauthorized('Malformed token: no alg');
    if (kid !== undefined && typeof kid !== 'string') throw unauthorized('Malformed token: kid');

    const s = this.settings;
    const options = {
      audience: s.audience,
      issuer: s.issuer,
      clockTolerance: s.clockSkew / 1000,
      requiredClaims: ['exp', 'sub'],
      currentDate: new Date(now),
    };
    let claims: JWTPayload;
    try {
      const key = kid === undefined ? this.kidless : this.byKid.get(kid);
      if (key) {
        if (!key.algorithms.includes(alg as JwtAlgorithm)) {
          throw unauthorized(`Algorithm ${alg} is not allowed for key ${kid ?? '(no kid)'}`);
        }
        ({ payload: claims } = await jwtVerify(token, key.key, {
          ...options,
          algorithms: key.algorithms,
        }));
      } else {
        claims = await this.verifyByJwks(token, alg, kid, options);
      }
    } catch (err) {
      throw fromJose(err);
    }

    const nowS = now / 1000;
    const skewS = s.clockSkew / 1000;
    const exp = claims.exp!;
    if (typeof claims.sub !== 'string' || claims.sub === '') {
      throw unauthorized('The token has no sub');
    }
    if (claims.iat !== undefined && claims.iat > nowS + skewS) {
      throw unauthorized('The token was issued in the future (iat)');
    }
    const lifetimeS = exp - (claims.iat ?? nowS);
    if (lifetimeS * 1000 > s.maxLifetime) {
      throw unauthorized(
        `The token's lifetime (${Math.round(lifetimeS)} s) is above the maximum (${s.maxLifetime / 1000} s)`,
      );
    }
    return { kid: kid ?? null, sub: claims.sub, expiresAt: exp * 1000, claims };
  }

  /** Verifies with the JWKS whose keys hold `kid` (or, kid-less, the one key matching `alg`). */
  private async verifyByJwks(
    token: string,
    alg: string,
    kid: string | undefined,
    options: Parameters<typeof jwtVerify>[2],
  ): Promise<JWTPayload> {
    const usable = this.jwks.filter((s) => s.algorithms.includes(alg as JwtAlgorithm));
    if (usable.length === 0) {
      throw unauthorized(
        kid === undefined
          ? `No key without a kid for algorithm ${alg}`
          : `Unknown key id ${JSON.stringify(kid)} for algorithm ${alg}`,
      );
    }
    // The set already holding the kid first; the others may fetch it (rotation), at most once
    // per cooldown each.
    const holds = (s: JwksSource): boolean =>
      kid !== undefined && (s.set.jwks()?.keys ?? []).some((k) => k.kid === kid);
    const ordered = [...usable.filter(holds), ...usable.filter((s) => !holds(s))];
    let last: unknown;
    for (const source of ordered) {
      try {
        const { payload } = await jwtVerify(token, source.set, {
          ...options,
          algorithms: source.algorithms,
        });
        return payload;
      } catch (err) {
        if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err;
        last = err;
      }
    }
    throw last;
  }
}

function unauthorized(message: string): RillError {
  return new RillError('unauthorized', message);
}

/** A jose error as the RillError a client sees. */
function fromJose(err: unknown): RillError {
  if (err instanceof RillError) return err;
  if (err instanceof joseErrors.JWTExpired) {
    return new RillError('token_expired', 'The token has expired');
  }
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const what: Record<string, string> = {
      aud: 'The token is not for this audience (aud)',
      iss: 'The token is not from an accepted issuer (iss)',
      nbf: 'The token is not valid yet (nbf)',
      exp: 'The token has no valid exp',
      sub: 'The token has no sub',
      iat: 'The token has an invalid iat',
    };
    return unauthorized(what[err.claim] ?? `The token's ${err.claim} claim is invalid`);
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return unauthorized('Bad token signature');
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) {
    return unauthorized('The token uses an algorithm this key does not allow');
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) {
    return unauthorized('Unknown key id (kid)');
  }
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return unauthorized('The token names no kid and several keys could verify it');
  }
  if (
    err instanceof joseErrors.JWKSTimeout ||
    err instanceof joseErrors.JWKSInvalid ||
    (err instanceof Error && !(err instanceof joseErrors.JOSEError)) ||
    (err instanceof joseErrors.JOSEError && err.code === 'ERR_JOSE_GENERIC')
  ) {
    // The keys could not be fetched: not the client's fault, and it may work in a moment.
    return new RillError('internal', 'Cannot fetch the keys to verify the token; retry later', {
      cause: err,
    });
  }
  return unauthorized('Malformed token');
}

function digest(s: string): string {
  return createHash('sha256').update(s).digest('base64url');
}

/** The members of a JWK that make up the key, in a stable order. */
function jwkMaterial(jwk: JWK): string {
  const { kty, crv, n, e, x, y } = jwk as Record<string, string | undefined>;
  return JSON.stringify([kty, crv, n, e, x, y, jwk.alg ?? null]);
}

/** A configured secret or public key, checked and ready for jose. */
function staticKey(where: string, k: JwtKeySettings): StaticKey {
  const kid = k.kid ?? null;
  const sources = [k.secret, k.publicKey, k.publicKeyFile].filter((x) => x !== undefined);
  if (sources.length !== 1) {
    throw new AuthConfigError(
      `${where}: give exactly one of secret, publicKey, publicKeyFile, jwksUrl`,
    );
  }
  if (k.secret !== undefined) {
    const algorithms = k.algorithms ?? ['HS256'];
    if (!algorithms.every(isHmacAlgorithm)) {
      throw new AuthConfigError(`${where}.algorithms: a secret allows HS256, HS384 or HS512 only`);
    }
    const key = new TextEncoder().encode(k.secret);
    if (key.length < MIN_SECRET_BYTES) {
      throw new AuthConfigError(`${where}: a secret needs at least ${MIN_SECRET_BYTES} bytes`);
    }
    return { kid, algorithms, key, fingerprint: digest(`secret ${k.secret}`) };
  }
  let pem: string;
  if (k.publicKeyFile !== undefined) {
    try {
      pem = readFileSync(k.publicKeyFile, 'utf8');
    } catch (err) {
      throw new AuthConfigError(`${where}.publicKeyFile: cannot read: ${(err as Error).message}`);
    }
  } else {
    pem = k.publicKey!;
  }
  const key = publicKeyFromPem(pem, where);
  const fits = algorithmsFor(key, where);
  const algorithms = k.algorithms ?? [fits[0]!];
  const misfit = algorithms.find((a) => !fits.includes(a));
  if (misfit !== undefined) {
    throw new AuthConfigError(
      `${where}.algorithms: ${misfit} does not fit this ${describeKey(key)} key (it allows ${fits.join(', ')})`,
    );
  }
  const spki = key.export({ type: 'spki', format: 'der' });
  return { kid, algorithms, key, fingerprint: digest(`spki ${spki.toString('base64')}`) };
}

/** A public key from PEM (SPKI, PKCS#1 or a certificate); a private key is refused. */
export function publicKeyFromPem(pem: string, where: string): KeyObject {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new AuthConfigError(
      `${where}: this is a private key; the server needs only the public one`,
    );
  }
  try {
    return createPublicKey(pem);
  } catch (err) {
    throw new AuthConfigError(`${where}: not a PEM public key: ${(err as Error).message}`);
  }
}

/** The algorithms a public key can check, the default first. */
export function algorithmsFor(key: KeyObject, where: string): JwtAlgorithm[] {
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048) {
    throw new AuthConfigError(
      `${where}: an RSA key needs at least 2048 bits (this one has ${bits})`,
    );
  }
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ed25519':
      return ['EdDSA', 'Ed25519'];
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return ['ES256'];
      if (curve === 'secp384r1') return ['ES384'];
      if (curve === 'secp521r1') return ['ES512'];
      throw new AuthConfigError(`${where}: EC curve ${curve} is not one JWTs use`);
    }
    default:
      throw new AuthConfigError(`${where}: ${key.asymmetricKeyType} keys are not supported`);
  }
}

function describeKey(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return curve ? `${key.asymmetricKeyType} ${curve}` : String(key.asymmetricKeyType);
}
