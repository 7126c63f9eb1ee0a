/**
 * Errors the SDK throws or reports. Every one is a `RillError` with the server's stable `code`
 * (docs/protocol.md#errors) or a client-side one (`connection_failed`, `stream_blocked`,
 * `aborted`, `bad_response`); named subclasses group them by what the caller can do about it.
 */
export class RillError extends Error {
  override name = 'RillError';
  /** Whether the same request may succeed later (reconnecting, retrying). */
  readonly retryable: boolean;
  constructor(code: string, message: string, opts: RillErrorOptions = {}) {
    super(message, { cause: opts.cause });
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.status = opts.status;
    this.closeCode = opts.closeCode;
    this.retryAfter = opts.retryAfter;
    this.details = opts.details ?? {};
    const d = this.details;
    this.limit = typeof d.limit === 'string' ? d.limit : undefined;
    this.scope = typeof d.scope === 'string' ? d.scope : undefined;
    this.limitValue =
      typeof d.limitValue === 'number'
        ? d.limitValue
        : typeof d.limit === 'number'
          ? d.limit
          : undefined;
  }
  /** The server's stable error code (docs/protocol.md § Errors), or a client-side one. */
  readonly code: string;
  /** HTTP status, when the error came with one. */
  readonly status: number | undefined;
  /** WebSocket close code (4000–4499 reconnect, 4500–4999 stop), when known. */
  readonly closeCode: number | undefined;
  /**
   * Seconds the server asked the client to wait before trying again (`Retry-After`, or
   * `retryAfter` in the error body), when it said.
   */
  readonly retryAfter: number | undefined;
  /** The limit that was reached (`rate_limited`: `publishesPerSecond`, `connections`, …). */
  readonly limit: string | undefined;
  /** Whose limit it is (`rate_limited`: `key`, `user` or `address`). */
  readonly scope: string | undefined;
  /** The limit's value (events per second, connections, …), when the server said. */
  readonly limitValue: number | undefined;
  /** Every other member of the server's error body (never the four fixed ones). */
  readonly details: Readonly<Record<string, unknown>>;
}

/** What a {@link RillError} is built from. */
export interface RillErrorOptions {
  retryable?: boolean;
  status?: number;
  closeCode?: number;
  cause?: unknown;
  /** Seconds to wait before retrying, as the server said. */
  retryAfter?: number;
  details?: Record<string, unknown>;
}

/** The longest `Retry-After` honoured, ms: a longer one (a misconfigured server) is cut to it. */
export const MAX_RETRY_AFTER = 300_000;

/**
 * How long to wait before retrying after `err`, ms: the server's `Retry-After` (at most `max`),
 * or undefined when it gave none.
 */
export function retryDelay(err: RillError, max = MAX_RETRY_AFTER): number | undefined {
  return err.retryAfter === undefined ? undefined : Math.min(err.retryAfter * 1000, max);
}

/**
 * A `Retry-After` value in seconds: a number of seconds, or an HTTP date (RFC 9110 §10.2.3);
 * undefined for none, a malformed one, or one in the past.
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) {
    const n = Number(v);
    return n > 0 && Number.isSafeInteger(n) ? n : undefined;
  }
  const at = Date.parse(v);
  if (Number.isNaN(at) || at <= now) return undefined;
  return Math.ceil((at - now) / 1000);
}

/** The request itself is wrong (bad topic, pattern, cursor, parameter, event): do not retry. */
export class InvalidRequestError extends RillError {
  override name = 'InvalidRequestError';
}
/** The topic, route or subscription does not exist. */
export class NotFoundError extends RillError {
  override name = 'NotFoundError';
}
/** An event, batch or body is over a server limit. */
export class TooLargeError extends RillError {
  override name = 'TooLargeError';
}
/**
 * Refused by policy: origin, authentication (`unauthorized`, `token_expired`) or authorization
 * (`forbidden`).
 */
export class ForbiddenError extends RillError {
  override name = 'ForbiddenError';
}
/**
 * The server cannot serve now (engine down, shutting down, overloaded, internal error): retry
 * later, after {@link RillError.retryAfter} when it says.
 */
export class UnavailableError extends RillError {
  override name = 'UnavailableError';
}
/**
 * A rate or count limit was reached (`rate_limited`, HTTP 429, close 4008): retry after
 * {@link RillError.retryAfter}. {@link RillError.limit}, {@link RillError.scope} and
 * {@link RillError.limitValue} say which limit and whose.
 */
export class RateLimitedError extends RillError {
  override name = 'RateLimitedError';
}
/** The network failed, or the answer was not what a Rill server sends. */
export class ConnectionError extends RillError {
  override name = 'ConnectionError';
}
/** The caller aborted (an `AbortSignal`, `close()`). */
export class AbortError extends RillError {
  override name = 'AbortError';
}

type Ctor = new (...a: ConstructorParameters<typeof RillError>) => RillError;

function classFor(code: string, status: number | undefined): Ctor {
  if (/not_found$/.test(code) || status === 404) return NotFoundError;
  if (/too_large$/.test(code) || status === 413) return TooLargeError;
  if (/forbidden|unauthorized|token_expired/.test(code) || status === 401 || status === 403)
    return ForbiddenError;
  // Before bad_response: a proxy's own 429 page is a rate limit too.
  if (code === 'rate_limited' || status === 429) return RateLimitedError;
  if (code === 'connection_failed' || code === 'stream_blocked' || code === 'bad_response')
    return ConnectionError;
  if (code === 'aborted') return AbortError;
  if (status !== undefined && status >= 500) return UnavailableError;
  if (
    /^(engine_unavailable|shutting_down|internal|ping_timeout|too_many_connections|overloaded)$/.test(
      code,
    )
  )
    return UnavailableError;
  return InvalidRequestError;
}

/** Whether a WebSocket close code asks the client to reconnect (it does unless told to stop). */
export function closeCodeRetryable(code: number): boolean {
  if (code >= 4500 && code <= 4999) return false;
  // Protocol errors a reconnect would repeat: bad frames, bad data, policy, too big.
  return !(code === 1002 || code === 1003 || code === 1007 || code === 1008 || code === 1009);
}

/** Builds the right subclass for a code. */
export function rillError(code: string, message: string, opts: RillErrorOptions = {}): RillError {
  const retryable =
    opts.retryable ??
    (opts.closeCode !== undefined
      ? closeCodeRetryable(opts.closeCode)
      : opts.status !== undefined
        ? opts.status >= 500 || opts.status === 408 || opts.status === 429
        : false);
  return new (classFor(code, opts.status))(code, message, { ...opts, retryable });
}

/** The members every error body has (and `retryAfter`); the rest are details. */
const FIXED = new Set(['code', 'message', 'retryable', 'closeCode', 'retryAfter']);

/**
 * The error of a server error body `{error: {code, message, retryable, closeCode, retryAfter?,
 * …details}}` (an HTTP body, a WebSocket `error` message). `retryAfter`, when the body has none,
 * is the response's `Retry-After` header.
 */
export function fromBody(body: unknown, status?: number, retryAfterHeader?: number): RillError {
  const e = (body as { error?: Record<string, unknown> } | null)?.error;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    const details: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(e)) if (!FIXED.has(k)) details[k] = v;
    const ra =
      typeof e.retryAfter === 'number' && e.retryAfter > 0 && Number.isFinite(e.retryAfter)
        ? Math.ceil(e.retryAfter)
        : retryAfterHeader;
    return rillError(e.code, typeof e.message === 'string' ? e.message : e.code, {
      status,
      retryable: typeof e.retryable === 'boolean' ? e.retryable : undefined,
      closeCode: typeof e.closeCode === 'number' ? e.closeCode : undefined,
      ...(ra === undefined ? {} : { retryAfter: ra }),
      details,
    });
  }
  return rillError('bad_response', `Unexpected answer${status ? ` (HTTP ${status})` : ''}`, {
    status,
    ...(retryAfterHeader === undefined ? {} : { retryAfter: retryAfterHeader }),
  });
}

/** The error of a failed HTTP response (reads its JSON body when there is one). */
export async function fromResponse(res: Response): Promise<RillError> {
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: a proxy's page; the status says enough
  }
  return fromBody(body, res.status, parseRetryAfter(res.headers.get('retry-after')));
}

/**
 * The system error under a failed `fetch` (`ECONNREFUSED`, `ENOTFOUND`, ...): `fetch failed` alone
 * says nothing. Undici puts it in `cause`, an AggregateError when every address of a name failed.
 */
export function networkCause(err: unknown): string {
  let e: unknown = err;
  let message = String((err as Error)?.message ?? err);
  for (let i = 0; i < 5 && e !== null && typeof e === 'object'; i++) {
    const x = e as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown[] };
    if (typeof x.code === 'string' && /^E[A-Z]+$/.test(x.code)) return x.code;
    if (i > 0 && typeof x.message === 'string' && x.message !== '') {
      message = `${message}: ${x.message}`;
    }
    e = x.cause ?? (Array.isArray(x.errors) ? x.errors[0] : undefined);
  }
  return message;
}

/** Wraps whatever `fetch` threw; `url`, when given, is named in the message. */
export function networkError(err: unknown, signal?: AbortSignal, url?: string): RillError {
  if (err instanceof RillError) return err;
  if (signal?.aborted) return rillError('aborted', 'Aborted', { cause: err });
  const cause = networkCause(err);
  const message =
    url === undefined ? `Connection failed: ${cause}` : `Cannot reach ${url}: ${cause}`;
  return rillError('connection_failed', message, { retryable: true, cause: err });
}
