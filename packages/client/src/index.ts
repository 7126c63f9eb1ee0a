/**
 * `@rill/client`: the Rill SDK for browsers and Node ≥ 20. SSE over `fetch`, WebSocket (`rill.v1`)
 * and long-poll; reconnect with backoff and jitter, exact resume, dedupe, gap filling.
 * `@rill/client/sse` is the same API with SSE only, for the smallest bundle.
 */
import { RillClient, type ClientOptions } from './client.js';
import { pollTransport } from './transport/poll.js';
import { sseTransport } from './transport/sse.js';
import { wsTransport } from './transport/ws.js';

/** A client with every transport: `auto` is SSE, falling back to long-poll when streaming is blocked. */
export function createClient(options: ClientOptions = {}): RillClient {
  return new RillClient(options, { sse: sseTransport, ws: wsTransport, poll: pollTransport });
}

export { RillClient, newKey } from './client.js';
export type { ClientOptions, PublishOptions, PublishRetry } from './client.js';
export { jwtExpiry, refreshDelay } from './token.js';
export type { TokenOption, Tokens } from './token.js';
export { Subscription } from './subscription.js';
export type { SubscribeOptions, StateChange, TransportName } from './subscription.js';
export { Backoff, backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { parseId, cursorPositions } from './cursor.js';
export type { Position } from './cursor.js';
export type {
  Transport,
  StreamHandlers,
  StreamRequest,
  TransportContext,
} from './transport/transport.js';
export type { WebSocketLike } from './transport/ws.js';
export { sseTransport, pollTransport, wsTransport };
export * from './errors.js';
export type * from './types.js';
export type * from './stats.js';
