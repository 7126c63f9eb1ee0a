/**
 * The one catalogue of Rill errors. Every error a client can see has a stable string `code`, an
 * HTTP status, whether retrying the same request can help, and a WebSocket close code whose range
 * tells a client what to do: 4000–4499 reconnect, 4500–4999 stop. SSE carries the same code in an
 * `event: error` frame before the stream ends.
 *
 * Codes are part of the public API: never rename one, only add.
 */
export const ERRORS = {
  invalid_json: { status: 400, retryable: false, close: 4500, message: 'Body is not valid JSON' },
  invalid_event: { status: 400, retryable: false, close: 4501, message: 'Invalid event' },
  invalid_topic: { status: 400, retryable: false, close: 4502, message: 'Invalid topic name' },
  invalid_pattern: {
    status: 400,
    retryable: false,
    close: 4503,
    message: 'Invalid topic pattern',
  },
  invalid_cursor: { status: 400, retryable: false, close: 4504, message: 'Malformed cursor' },
  invalid_parameter: {
    status: 400,
    retryable: false,
    close: 4505,
    message: 'Invalid parameter',
  },
  too_many_topics: {
    status: 400,
    retryable: false,
    close: 4506,
    message: 'Too many topics in one subscription',
  },
  invalid_message: {
    status: 400,
    retryable: false,
    close: 4515,
    message: 'Invalid WebSocket message',
  },
  unknown_op: { status: 400, retryable: false, close: 4516, message: 'Unknown op' },
  subscription_not_found: {
    status: 404,
    retryable: false,
    close: 4517,
    message: 'No such subscription on this connection',
  },
  too_many_subscriptions: {
    status: 400,
    retryable: false,
    close: 4518,
    message: 'Too many subscriptions on this connection',
  },
  forbidden_origin: {
    status: 403,
    retryable: false,
    close: 4519,
    message: 'Origin not allowed',
  },
  upgrade_required: {
    status: 426,
    retryable: false,
    close: 4520,
    message: 'Unsupported WebSocket version',
  },
  json_too_deep: {
    status: 400,
    retryable: false,
    close: 4521,
    message: 'JSON nested too deeply',
  },
  host_not_allowed: {
    status: 421,
    retryable: false,
    close: 4522,
    message: 'Host not served here',
  },
  bad_request: { status: 400, retryable: false, close: 4523, message: 'Malformed HTTP request' },
  unauthorized: {
    status: 401,
    retryable: false,
    close: 4524,
    message: 'Missing or invalid credentials',
  },
  forbidden: {
    status: 403,
    retryable: false,
    close: 4525,
    message: 'Not allowed for this identity',
  },
  topic_not_found: { status: 404, retryable: false, close: 4507, message: 'Unknown topic' },
  not_found: { status: 404, retryable: false, close: 4508, message: 'Not found' },
  method_not_allowed: {
    status: 405,
    retryable: false,
    close: 4509,
    message: 'Method not allowed',
  },
  not_acceptable: {
    status: 406,
    retryable: false,
    close: 4510,
    message: 'Not acceptable',
  },
  event_too_large: { status: 413, retryable: false, close: 4511, message: 'Event too large' },
  batch_too_large: {
    status: 413,
    retryable: false,
    close: 4512,
    message: 'Too many events in one batch',
  },
  payload_too_large: {
    status: 413,
    retryable: false,
    close: 4513,
    message: 'Request body too large',
  },
  unsupported_media_type: {
    status: 415,
    retryable: false,
    close: 4514,
    message: 'Unsupported media type',
  },
  engine_unavailable: {
    status: 503,
    retryable: true,
    close: 4000,
    message: 'Storage engine unavailable',
  },
  shutting_down: {
    status: 503,
    retryable: true,
    close: 4001,
    message: 'Server is shutting down; reconnect and resume',
  },
  ping_timeout: {
    status: 408,
    retryable: true,
    close: 4003,
    message: 'No pong within the ping timeout',
  },
  request_timeout: {
    status: 408,
    retryable: true,
    close: 4004,
    message: 'The request was not received in time',
  },
  too_many_connections: {
    status: 503,
    retryable: true,
    close: 4005,
    message: 'This server holds as many streams as it can; retry later or on another node',
  },
  token_expired: {
    status: 401,
    retryable: true,
    close: 4006,
    message: 'The token has expired; get a new one and resume',
  },
  insufficient_storage: {
    status: 507,
    retryable: true,
    close: 4007,
    message: 'Storage is full: nothing was stored; retry once retention or an operator frees space',
  },
  rate_limited: {
    status: 429,
    retryable: true,
    close: 4008,
    message: 'A rate or count limit was reached; retry after the time given',
  },
  overloaded: {
    status: 503,
    retryable: true,
    close: 4009,
    message: 'The server is overloaded; retry later or on another node',
  },
  disconnected_by_admin: {
    status: 503,
    retryable: true,
    close: 4010,
    message: 'An administrator ended this connection; reconnect and resume',
  },
  hook_denied: {
    status: 403,
    retryable: false,
    close: 4526,
    message: "The application's backend refused this",
  },
  hook_unavailable: {
    status: 503,
    retryable: true,
    close: 4011,
    message: "The application's backend did not answer in time; retry later",
  },
  internal: { status: 500, retryable: true, close: 4002, message: 'Internal error' },
} as const satisfies Record<string, ErrorSpec>;

export interface ErrorSpec {
  /** HTTP status used when the error answers a request. */
  status: number;
  /** Whether the same request may succeed later. */
  retryable: boolean;
  /** WebSocket close code: 4000–4499 reconnect, 4500–4999 do not. */
  close: number;
  /** Default human-readable message. */
  message: string;
}

export type ErrorCode = keyof typeof ERRORS;

/** The single error class of Rill. `code` is stable and documented in docs/protocol.md. */
export class RillError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly closeCode: number;
  /** Extra machine-readable detail included in the error body (never secrets). */
  readonly details: Record<string, unknown> | undefined;
  /**
   * Whole seconds a client should wait before retrying (the `Retry-After` header, and
   * `retryAfter` in the body); undefined for the default ({@link retryAfterSeconds}).
   */
  readonly retryAfter: number | undefined;

  constructor(
    code: ErrorCode,
    message?: string,
    options?: { cause?: unknown; details?: Record<string, unknown>; retryAfter?: number },
  ) {
    const spec: ErrorSpec = ERRORS[code];
    super(message ?? spec.message, options?.cause === undefined ? {} : { cause: options.cause });
    this.name = 'RillError';
    this.code = code;
    this.status = spec.status;
    this.retryable = spec.retryable;
    this.closeCode = spec.close;
    this.details = options?.details;
    this.retryAfter =
      options?.retryAfter === undefined ? undefined : Math.max(1, Math.ceil(options.retryAfter));
  }

  /**
   * The one encoding of an error, the same on every transport: the `error` member of an HTTP body
   * ({@link toJSON}), the data of an SSE `error` frame and of an NDJSON error line, the `error` of
   * a WebSocket `error` message. Details (such as `limit`) follow the four fixed fields.
   */
  body(): ErrorBody {
    return {
      ...this.details,
      ...(this.retryAfter === undefined ? {} : { retryAfter: this.retryAfter }),
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      closeCode: this.closeCode,
    };
  }

  /** An HTTP error body: `{"error":{...body()}}`. */
  toJSON(): { error: ErrorBody } {
    return { error: this.body() };
  }
}

/** What every transport says about an error (see {@link RillError.body}). */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  retryable: boolean;
  closeCode: number;
  [detail: string]: unknown;
}

/**
 * The `Retry-After` header (seconds) an HTTP answer carrying `err` sends, or undefined for none:
 * the error's own `retryAfter`, else 1 s for the retryable states 503 and 507 (engine down or
 * full, shutting down, connection budget, overload).
 */
export function retryAfterSeconds(err: RillError | undefined | null): number | undefined {
  if (!err) return undefined;
  if (err.retryAfter !== undefined) return err.retryAfter;
  return err.retryable && (err.status === 503 || err.status === 507) ? 1 : undefined;
}

export function isRillError(err: unknown): err is RillError {
  return err instanceof RillError;
}
