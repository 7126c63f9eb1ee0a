import type { RillError } from '../errors.js';
import type { Tokens } from '../token.js';
import type { PresenceChange, ResetNotice, RillEvent } from '../types.js';

/** What a subscription asks a transport to open. */
export interface StreamRequest {
  topics: string[];
  from?: string;
  since?: string;
  /** Resume cursor; wins over from/since for the topics it lists. */
  cursor?: string;
  /** Also carry the topics' joins and leaves (SSE and WebSocket; a long-poll has none). */
  presence?: boolean;
}

/**
 * What a transport reports, in wire order. `close` is called exactly once per `open`, unless the
 * subscription stopped it first; after it nothing else is called.
 */
export interface StreamHandlers {
  /** The stream is established. `serverTime` is the server's clock when known (ms). */
  open(info: { serverTime?: number }): void;
  /** One event; `cursor` is where to resume after it when the transport says so. */
  event(ev: RillEvent, cursor: string | undefined): void;
  reset(notice: ResetNotice, cursor: string | undefined): void;
  /** A join or leave (only when the request asked for presence). */
  presence(change: PresenceChange): void;
  /** A position without an event (WebSocket `subscribed`, an empty long-poll answer). */
  cursor(cursor: string): void;
  /** The server's reconnect hint (`retry:`), ms. */
  retry(ms: number): void;
  /** The stream ended: `err` says why (its `retryable` decides what happens next). */
  close(err: RillError, retryAfter?: number): void;
}

/** Everything a transport needs from its client. */
export interface TransportContext {
  url: string;
  fetch: typeof fetch;
  /** The client's `headers` option (a function is called each time); no token in them. */
  headers(): Promise<Record<string, string>>;
  /**
   * The client's token, to be placed as the transport carries it: `Authorization: Bearer` on
   * requests, the `auth` op on a WebSocket. A stream refused as `token_expired` reports the
   * token it sent to `tokens.expired` so the next attempt gets a new one.
   */
  tokens: Tokens;
  /** Options of the client, for transports that take their own (WebSocket implementation …). */
  options: Record<string, unknown>;
}

/** Opens one stream; returns the function that stops it (no `close` call follows a stop). */
export type Transport = (
  req: StreamRequest,
  handlers: StreamHandlers,
  ctx: TransportContext,
) => () => void;

/** `err`; a `token_expired` first marks `token` (the one the stream sent) as spent. */
export function noteExpiry(
  err: RillError,
  ctx: TransportContext,
  token: string | undefined,
): RillError {
  if (err.code === 'token_expired' && token !== undefined) ctx.tokens.expired(token);
  return err;
}
