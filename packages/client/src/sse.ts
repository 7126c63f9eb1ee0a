/**
 * `@rill/client/sse`: the SSE-only build (smallest): subscriptions over SSE, publish, history.
 */
import { RillClient, type ClientOptions } from './client.js';
import { sseTransport } from './transport/sse.js';

/** A client whose subscriptions use SSE over `fetch`. */
export function createClient(
  options: Omit<ClientOptions, 'transport' | 'WebSocket'> = {},
): RillClient {
  return new RillClient(options, { sse: sseTransport });
}

export { RillClient } from './client.js';
export type { ClientOptions, PublishOptions } from './client.js';
export type { TokenOption } from './token.js';
export { Subscription } from './subscription.js';
export type { SubscribeOptions, StateChange, TransportName } from './subscription.js';
export * from './errors.js';
export type * from './types.js';
