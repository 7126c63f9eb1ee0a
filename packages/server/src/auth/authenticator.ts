import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { API_KEY_PREFIX, type ApiKeyEntry } from '../model/credentials.js';
import { RillError } from '../model/errors.js';
import { isValidPattern } from '../model/topic.js';
import { ApiKeyStore, readApiKeysFile } from './api-keys.js';
import { Grants } from './grants.js';
import { OPEN_IDENTITY, type Identity } from './identity.js';
import { DEFAULT_KID, JwtVerifier } from './jwt.js';
import { AuthConfigError, authConfigured, type AuthSettings } from './settings.js';
import { extractToken, missingCredentials, type Credentials } from './token.js';

/** Verified JWTs kept at most (see `Authenticator.verified`). */
const MAX_CACHED_TOKENS = 10_000;
/** Longer tokens are verified every time rather than kept. */
const MAX_CACHED_TOKEN_LENGTH = 4096;

/** What the authenticator logs through (a pino logger fits). */
export interface AuthLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface AuthenticatorOptions {
  /**
   * Reads the `auth` settings again (the config file and the environment) for {@link
   * Authenticator.reload}. Without it a reload keeps the settings it has and re-reads only the
   * keys file and the JWKS.
   */
  loadSettings?: () => AuthSettings | Promise<AuthSettings>;
  logger?: AuthLogger;
  /** Watch `apiKeysFile` and reload it on change (default true). */
  watchKeysFile?: boolean;
  /** How long a JWKS request may take, ms (default 5 s). */
  jwksTimeout?: number;
}

/** What changed in one reload. */
export interface ReloadReport {
  /** What caused it: {@link Authenticator.reload}, the keys file changing, the JWKS schedule. */
  trigger: 'reload' | 'keysFile' | 'jwks';
  /**
   * Credentials no longer valid, whose streams must end with `unauthorized`: exact ids
   * (`key:backend`, `anonymous`) and `jwt:<kid>:*` for every token a vanished or replaced key
   * verified (see `isRevoked`).
   */
  revoked: string[];
  /** Credentials still valid whose grants changed (API keys by id, `anonymous`). */
  changed: string[];
}

export interface AuthenticatorEvents {
  /** A reload revoked credentials (only when it did). */
  revoked: [ReloadReport];
  /** A reload succeeded, whatever it changed. */
  reloaded: [ReloadReport];
  /** A reload failed; the settings in use before it stay in use. */
  reloadFailed: [{ trigger: ReloadReport['trigger']; error: Error }];
}

interface State {
  settings: AuthSettings;
  verifier: JwtVerifier | undefined;
  keys: ApiKeyStore;
  anonymous: Grants | undefined;
}

/**
 * Turns a request's credentials into an {@link Identity}, from the resolved `auth` settings: an
 * API key (`rill_…`) or a JWT from the `Authorization: Bearer` header, the `access_token` query
 * parameter or the configured cookie; anonymous when there are none and `anonymous` is configured.
 * Invalid credentials are refused, never taken for anonymous.
 *
 * It keeps itself current: the keys file is watched, each JWKS re-fetched every `jwksRefresh`,
 * and {@link reload} (SIGHUP) re-reads everything. Each reload swaps in the new state at once and
 * reports the credentials it revoked, so the server can end their streams.
 */
export class Authenticator extends EventEmitter<AuthenticatorEvents> {
  /** Whether authentication is on; fixed for the life of the server. */
  readonly enabled: boolean;
  private state: State;
  private fingerprints: Map<string, string>;
  private queue: Promise<unknown> = Promise.resolve();
  private watcher: FSWatcher | undefined;
  private watchedFile: string | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private jwksTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /**
   * JWTs verified since the last reload, by their exact text: a publisher or a reconnecting
   * client that sends the same token again costs a lookup instead of a signature check (about
   * 150 µs for HS256, more for RSA). An entry is used only before the token's `exp` and all of
   * them are dropped by every reload, so a key removed or rotated out is never trusted from here.
   * Bounded: the oldest entry goes when it is full.
   */
  private readonly verified = new Map<string, Identity>();

  private constructor(
    state: State,
    private readonly options: AuthenticatorOptions,
  ) {
    super();
    this.state = state;
    this.enabled = authConfigured(state.settings);
    this.fingerprints = state.verifier?.fingerprints() ?? new Map();
  }

  /**
   * Builds an authenticator and fetches each JWKS once (a failure is logged, not thrown: the
   * identity provider may come back, and tokens are checked against it when it does). Throws
   * {@link AuthConfigError} for settings that cannot be used.
   */
  static async create(
    settings: AuthSettings,
    options: AuthenticatorOptions = {},
  ): Promise<Authenticator> {
    const auth = new Authenticator(build(settings, options), options);
    if (auth.enabled) {
      await auth.fetchJwks(auth.state);
      auth.fingerprints = auth.state.verifier?.fingerprints() ?? new Map();
      auth.startWatching();
      auth.scheduleJwks();
    }
    return auth;
  }

  /** The settings in use (cookie name, WebSocket deadlines). */
  get settings(): AuthSettings {
    return this.state.settings;
  }

  /**
   * The identity behind a request's credentials. Throws RillError `unauthorized` (no or invalid
   * credentials) or `token_expired`. On a server without authentication, everything is allowed.
   */
  async authenticate(creds: Credentials): Promise<Identity> {
    if (!this.enabled) return OPEN_IDENTITY;
    const st = this.state;
    const token = extractToken(creds, st.settings.cookie);
    if (token !== null) return this.identify(token);
    if (st.anonymous) {
      return {
        kind: 'anonymous',
        sub: null,
        credentialId: 'anonymous',
        expiresAt: null,
        grants: st.anonymous,
      };
    }
    throw missingCredentials(
      'Credentials required: send a token as "Authorization: Bearer <token>"',
    );
  }

  /** The identity behind a token (an API key or a JWT), as the WebSocket `auth` message sends. */
  async identify(token: string): Promise<Identity> {
    if (!this.enabled) return OPEN_IDENTITY;
    const st = this.state;
    if (token.startsWith(API_KEY_PREFIX)) {
      const entry = st.keys.find(token);
      if (!entry) throw new RillError('unauthorized', 'Unknown or revoked API key');
      return {
        kind: 'apiKey',
        sub: entry.sub ?? null,
        name: entry.name,
        credentialId: `key:${entry.name}`,
        expiresAt: null,
        grants: new Grants(entry),
        ...(entry.limits === undefined ? {} : { limits: entry.limits }),
        ...(entry.info === undefined ? {} : { info: entry.info }),
      };
    }
    if (!st.verifier) throw new RillError('unauthorized', 'This server does not accept JWTs');
    const known = this.verified.get(token);
    if (known !== undefined) {
      if (known.expiresAt !== null && Date.now() < known.expiresAt) return known;
      this.verified.delete(token);
    }
    const jwt = await st.verifier.verify(token);
    const { grants, info } = fromRillClaim(jwt.claims.rill);
    const identity: Identity = {
      kind: 'jwt',
      sub: jwt.sub,
      credentialId: `jwt:${jwt.kid ?? DEFAULT_KID}:${jwt.sub}`,
      expiresAt: jwt.expiresAt,
      grants,
      ...(info === undefined ? {} : { info }),
    };
    // A reload may have swapped the state while the signature was checked: keep nothing then.
    if (this.state === st && token.length <= MAX_CACHED_TOKEN_LENGTH) {
      if (this.verified.size >= MAX_CACHED_TOKENS) {
        this.verified.delete(this.verified.keys().next().value as string);
      }
      this.verified.set(token, identity);
    }
    return identity;
  }

  /**
   * Re-reads the settings (through `loadSettings`), the keys file and every JWKS, and swaps them in
   * when all are valid. Turning authentication on or off needs a restart and is refused. Resolves
   * with what changed (also emitted: `reloaded`, and `revoked` when credentials were revoked);
   * rejects, keeping the current state, when something cannot be used.
   */
  reload(): Promise<ReloadReport> {
    return this.enqueue('reload');
  }

  /** Stops watching the keys file and fetching JWKS. */
  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.debounce);
    clearInterval(this.jwksTimer);
  }

  private enqueue(trigger: ReloadReport['trigger']): Promise<ReloadReport> {
    const run = this.queue.then(() => this.run(trigger));
    this.queue = run.catch(() => undefined);
    return run.catch((err: unknown) => {
      const error = err instanceof Error ? err : new Error(String(err));
      this.options.logger?.warn(
        { err: error, trigger },
        'auth: reload failed; keeping the current settings',
      );
      this.emit('reloadFailed', { trigger, error });
      throw error;
    });
  }

  private async run(trigger: ReloadReport['trigger']): Promise<ReloadReport> {
    const old = this.state;
    let next: State;
    if (trigger === 'jwks') {
      next = old;
      await this.fetchJwks(old);
    } else if (trigger === 'keysFile') {
      next = { ...old, keys: keyStore(old.settings) };
    } else {
      const settings = this.options.loadSettings ? await this.options.loadSettings() : old.settings;
      if (authConfigured(settings) !== this.enabled) {
        throw new AuthConfigError(
          `turning authentication ${this.enabled ? 'off' : 'on'} needs a restart`,
        );
      }
      next = build(settings, this.options, old.verifier);
      await this.fetchJwks(next);
    }
    const fingerprints = next.verifier?.fingerprints() ?? new Map<string, string>();
    const report = { trigger, ...compare(old, next, this.fingerprints, fingerprints) };
    this.state = next;
    this.verified.clear();
    this.fingerprints = fingerprints;
    if (trigger === 'reload' && !this.closed) {
      this.startWatching();
      this.scheduleJwks();
    }
    if (report.revoked.length > 0 || report.changed.length > 0) {
      this.options.logger?.info(
        { trigger, revoked: report.revoked, changed: report.changed },
        'auth: credentials revoked or changed',
      );
    }
    if (report.revoked.length > 0) this.emit('revoked', report);
    this.emit('reloaded', report);
    return report;
  }

  private async fetchJwks(st: State): Promise<void> {
    for (const { url, error } of (await st.verifier?.refreshJwks()) ?? []) {
      this.options.logger?.warn(
        { err: error, url },
        'auth: cannot fetch the JWKS; keeping its last keys',
      );
    }
  }

  /**
   * Watches the keys file's directory (an editor or `rill keys add --file` replaces the file, which
   * a watch on the file itself would not survive), reloading the file a moment after the last
   * change so that a burst of writes is read once.
   */
  private startWatching(): void {
    const file = this.state.settings.apiKeysFile;
    const path = file === undefined ? undefined : resolve(file);
    if (path === this.watchedFile) return;
    this.watcher?.close();
    this.watcher = undefined;
    this.watchedFile = path;
    if (path === undefined || this.options.watchKeysFile === false) return;
    const name = basename(path);
    this.watcher = watch(dirname(path), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed !== name) return;
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => {
        this.enqueue('keysFile').catch(() => undefined);
      }, KEYS_FILE_SETTLE_MS);
    });
    this.watcher.on('error', (err) => {
      this.options.logger?.warn(
        { err, path },
        'auth: cannot watch the keys file; reload with SIGHUP',
      );
    });
  }

  private scheduleJwks(): void {
    clearInterval(this.jwksTimer);
    this.jwksTimer = undefined;
    const jwt = this.state.settings.jwt;
    if (!jwt || !jwt.keys.some((k) => k.jwksUrl !== undefined)) return;
    this.jwksTimer = setInterval(() => {
      this.enqueue('jwks').catch(() => undefined);
    }, jwt.jwksRefresh);
    this.jwksTimer.unref();
  }
}

/** How long the keys file must stay unchanged before it is read, ms. */
const KEYS_FILE_SETTLE_MS = 100;

function build(
  settings: AuthSettings,
  options: AuthenticatorOptions,
  previous?: JwtVerifier,
): State {
  return {
    settings,
    verifier: settings.jwt
      ? JwtVerifier.create(settings.jwt, {
          ...(previous ? { jwksCaches: previous.caches() } : {}),
          ...(options.jwksTimeout === undefined ? {} : { jwksTimeout: options.jwksTimeout }),
        })
      : undefined,
    keys: keyStore(settings),
    anonymous: settings.anonymous ? new Grants(settings.anonymous) : undefined,
  };
}

/** The configured keys and those of the keys file, read now. */
function keyStore(settings: AuthSettings): ApiKeyStore {
  const entries: ApiKeyEntry[] = [...(settings.apiKeys ?? [])];
  if (settings.apiKeysFile !== undefined) entries.push(...readApiKeysFile(settings.apiKeysFile));
  return new ApiKeyStore(entries);
}

/** What a reload from `old` to `next` revoked and changed. */
function compare(
  old: State,
  next: State,
  oldPrints: Map<string, string>,
  newPrints: Map<string, string>,
): { revoked: string[]; changed: string[] } {
  const revoked: string[] = [];
  const changed: string[] = [];
  const nextKeys = next.keys.byName();
  for (const [name, entry] of old.keys.byName()) {
    const now = nextKeys.get(name);
    if (!now || now.hash !== entry.hash) revoked.push(`key:${name}`);
    else if (
      !new Grants(entry).equals(now) ||
      entry.sub !== now.sub ||
      JSON.stringify(entry.info) !== JSON.stringify(now.info)
    ) {
      changed.push(`key:${name}`);
    }
  }
  for (const [kid, print] of oldPrints) {
    if (newPrints.get(kid) !== print) revoked.push(`jwt:${kid}:*`);
  }
  if (old.anonymous && !next.anonymous) revoked.push('anonymous');
  else if (old.anonymous && next.anonymous && !old.anonymous.equals(next.anonymous)) {
    changed.push('anonymous');
  }
  return { revoked, changed };
}

/**
 * The grants and info of a JWT's `rill` claim: `{subscribe?, publish?, admin?, info?}`. A claim
 * that is there but malformed refuses the token rather than granting less than it says.
 */
function fromRillClaim(claim: unknown): { grants: Grants; info?: Record<string, unknown> } {
  if (claim === undefined) return { grants: Grants.none };
  const bad = (what: string): RillError =>
    new RillError('unauthorized', `Malformed rill claim in the token: ${what}`);
  if (!isPlainObject(claim)) throw bad('not an object');
  const patterns = (key: 'subscribe' | 'publish'): string[] => {
    const v = claim[key];
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every((p) => typeof p === 'string' && isValidPattern(p))) {
      throw bad(`${key} must be a list of topics or patterns`);
    }
    return v as string[];
  };
  const admin = claim.admin ?? false;
  if (typeof admin !== 'boolean') throw bad('admin must be true or false');
  const info = claim.info;
  if (info !== undefined && !isPlainObject(info)) throw bad('info must be an object');
  return {
    grants: new Grants({ subscribe: patterns('subscribe'), publish: patterns('publish'), admin }),
    ...(info === undefined ? {} : { info }),
  };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
