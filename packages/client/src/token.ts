import { RillError, rillError } from './errors.js';

/**
 * The `token` client option: a fixed token (an API key, or a JWT that is never refreshed), or a
 * function the client calls whenever it needs a new one (on connect, ahead of a JWT's expiry,
 * after the server said `token_expired`). The function may return a promise.
 */
export type TokenOption = string | (() => string | Promise<string>);

/** A refresh is never scheduled later than this long before the token's expiry (ms)… */
export const REFRESH_MARGIN = 1000;
/** …nor sooner than this after the previous one, so a token about to expire cannot spin (ms). */
export const MIN_REFRESH_DELAY = 1000;
/** The share of the remaining lifetime after which a token is refreshed. */
export const REFRESH_AT = 0.8;
/** Longest delay `setTimeout` takes as given (larger ones fire at once). */
const MAX_TIMER = 2 ** 31 - 1;

/**
 * The `exp` of a JWT in ms since the epoch, read without verifying anything (the server does
 * that); undefined when the token is not a JWT with a numeric `exp` (API keys, opaque tokens).
 */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || token.startsWith('rill_')) return undefined;
  try {
    const b64 = parts[1]!.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const json = new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    const exp = (JSON.parse(json) as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How long to wait (ms) before refreshing a token that expires at `expiresAt`: after 80 % of the
 * lifetime left, but at least {@link REFRESH_MARGIN} before expiry, and never sooner than
 * {@link MIN_REFRESH_DELAY}.
 */
export function refreshDelay(expiresAt: number, now: number): number {
  const left = expiresAt - now;
  const d = Math.max(MIN_REFRESH_DELAY, Math.min(left * REFRESH_AT, left - REFRESH_MARGIN));
  return Math.min(d, MAX_TIMER);
}

/** What transports and requests see of the client's credentials. */
export interface Tokens {
  /** Whether a new token can be had when one expires (`token` or `headers` is a function). */
  readonly renewable: boolean;
  /** The token to send now; undefined without the `token` option. */
  get(): Promise<string | undefined>;
  /** The server refused `token` as expired: the next {@link get} obtains another one. */
  expired(token: string): void;
  /** Obtains a new token now (a WebSocket's `token_expiring`); nothing for a fixed token. */
  refresh(): Promise<void>;
  /**
   * Keeps refreshing ahead of a JWT's expiry while held (an open subscription holds it);
   * `onToken` is told every new token. Returns the function that lets go.
   */
  hold(onToken?: (token: string) => void): () => void;
}

/**
 * Whether an authentication error is retried: `token_expired` exactly when a new token can be
 * had; `unauthorized` and `forbidden` never (whatever the answer said), since the same
 * credentials would be refused again.
 */
export function settleAuth(err: RillError, tokens: Tokens): RillError {
  const retryable =
    err.code === 'token_expired'
      ? tokens.renewable
      : err.code === 'unauthorized' || err.code === 'forbidden'
        ? false
        : err.retryable;
  if (retryable === err.retryable) return err;
  return rillError(err.code, err.message, {
    retryable,
    status: err.status,
    closeCode: err.closeCode,
    cause: err,
  });
}

interface Held {
  token: string | undefined;
  /** When the token is due for a refresh (ms since the epoch); undefined: only when refused. */
  refreshAt: number | undefined;
}

/**
 * The client's token: obtained from the option once and shared by every request and connection,
 * obtained again when it is due (80 % of a JWT's lifetime), when the server refuses it as expired,
 * or when asked to. One call of the function at a time.
 */
export class TokenSource implements Tokens {
  readonly renewable: boolean;
  private held: Held | undefined;
  private pending: Promise<string | undefined> | undefined;
  private readonly holders = new Set<{ onToken?: ((token: string) => void) | undefined }>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** `headersRenew`: the client's `headers` is a function (it can carry a new token itself). */
  constructor(
    private readonly option: TokenOption | undefined,
    headersRenew = false,
  ) {
    this.renewable = typeof option === 'function' || (option === undefined && headersRenew);
  }

  async get(): Promise<string | undefined> {
    const o = this.option;
    if (typeof o !== 'function') return o || undefined;
    const h = this.held;
    if (h && (h.refreshAt === undefined || Date.now() < h.refreshAt)) return h.token;
    return this.obtain();
  }

  expired(token: string): void {
    if (this.held?.token !== token) return;
    this.held = undefined;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  async refresh(): Promise<void> {
    if (typeof this.option === 'function') await this.obtain();
  }

  hold(onToken?: (token: string) => void): () => void {
    const holder = { onToken };
    this.holders.add(holder);
    this.schedule();
    return () => {
      this.holders.delete(holder);
      if (this.holders.size === 0) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
    };
  }

  /** Calls the function (joining a call under way) and tells the holders a new token. */
  private obtain(): Promise<string | undefined> {
    if (this.pending) return this.pending;
    const fn = this.option as () => string | Promise<string>;
    const before = this.held?.token;
    const p = (async () => {
      let token: string | undefined;
      try {
        token = (await fn()) || undefined;
      } catch (err) {
        throw err instanceof RillError
          ? err
          : rillError(
              'connection_failed',
              `The token function failed: ${String((err as Error)?.message ?? err)}`,
              { retryable: true, cause: err },
            );
      }
      const now = Date.now();
      const exp = token === undefined ? undefined : jwtExpiry(token);
      // A token that looks expired already (a skewed clock) is used as is: the server decides.
      this.held = {
        token,
        refreshAt: exp !== undefined && exp > now ? now + refreshDelay(exp, now) : undefined,
      };
      clearTimeout(this.timer);
      this.timer = undefined;
      this.schedule();
      if (token !== undefined && token !== before) {
        for (const h of [...this.holders]) h.onToken?.(token);
      }
      return token;
    })().finally(() => {
      this.pending = undefined;
    });
    this.pending = p;
    return p;
  }

  /** Arms the refresh timer when someone holds the token and it has a due time. */
  private schedule(): void {
    const at = this.held?.refreshAt;
    if (this.timer !== undefined || this.holders.size === 0 || at === undefined) return;
    const t = setTimeout(
      () => {
        this.timer = undefined;
        this.obtain().catch(() => {
          // The function failed: try again later while the token is still good; past its
          // expiry the next connection obtains one (and reports the failure).
          const exp = this.held?.token === undefined ? undefined : jwtExpiry(this.held.token);
          const now = Date.now();
          if (this.held && exp !== undefined && exp > now) {
            this.held.refreshAt = now + refreshDelay(exp, now);
            this.schedule();
          }
        });
      },
      Math.max(0, at - Date.now()),
    );
    // A pending refresh alone does not keep a Node process alive.
    (t as { unref?: () => void }).unref?.();
    this.timer = t;
  }
}

/**
 * `headers` with `authorization: Bearer <token>` (replacing any other `authorization`, whatever
 * its case); `headers` unchanged without a token.
 */
export function withToken(
  headers: Record<string, string>,
  token: string | undefined,
): Record<string, string> {
  if (token === undefined) return headers;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'authorization') out[k] = v;
  out.authorization = `Bearer ${token}`;
  return out;
}
