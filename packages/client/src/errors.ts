/**
 * Errors the SDK throws or reports. Every one is a `RillError` with the server's stable `code`
 * (docs/protocol.md#errors) or a client-side one (`connection_failed`, `stream_blocked`,
 * `aborted`, `bad_response`); named subclasses group them by what the caller can do about it.
 */
export class RillError extends Error {
  override name = 'RillError';
  /** Whether the same request may succeed later (reconnecting, retrying). */
  readonly retryable: boolean;
  constructor(
    readonly code: string,
    message: string,
    opts: { retryable?: boolean; status?: number; closeCode?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.retryable = opts.retryable ?? false;
    this.status = opts.status;
    this.closeCode = opts.closeCode;
  }
  /** HTTP status, when the error came with one. */
  readonly status: number | undefined;
  /** WebSocket close code (4000–4499 reconnect, 4500–4999 stop), when known. */
  readonly closeCode: number | undefined;
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
/** The server cannot serve now (engine down, shutting down, internal error): retry later. */
export class UnavailableError extends RillError {
  override name = 'UnavailableError';
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
  if (code === 'connection_failed' || code === 'stream_blocked' || code === 'bad_response')
    return ConnectionError;
  if (code === 'aborted') return AbortError;
  if (status !== undefined && status >= 500) return UnavailableError;
  if (/^(engine_unavailable|shutting_down|internal|ping_timeout|too_many_connections)$/.test(code))
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
export function rillError(
  code: string,
  message: string,
  opts: { retryable?: boolean; status?: number; closeCode?: number; cause?: unknown } = {},
): RillError {
  const retryable =
    opts.retryable ??
    (opts.closeCode !== undefined
      ? closeCodeRetryable(opts.closeCode)
      : opts.status !== undefined
        ? opts.status >= 500 || opts.status === 408 || opts.status === 429
        : false);
  return new (classFor(code, opts.status))(code, message, { ...opts, retryable });
}

/** The error of a server error body `{error: {code, message, retryable?, closeCode?}}`. */
export function fromBody(body: unknown, status?: number): RillError {
  const e = (body as { error?: Record<string, unknown> } | null)?.error;
  if (e && typeof e.code === 'string') {
    return rillError(e.code, typeof e.message === 'string' ? e.message : e.code, {
      status,
      retryable: typeof e.retryable === 'boolean' ? e.retryable : undefined,
      closeCode: typeof e.closeCode === 'number' ? e.closeCode : undefined,
    });
  }
  return rillError('bad_response', `Unexpected answer${status ? ` (HTTP ${status})` : ''}`, {
    status,
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
  return fromBody(body, res.status);
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
