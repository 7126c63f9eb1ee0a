import type { FastifyRequest } from 'fastify';
import type { Identity } from '../auth/index.js';
import { HookSession, type HookClientInfo } from '../hooks/index.js';
import { checkSubscribe } from './authn.js';
import type { AppContext } from './context.js';

/** Where an HTTP request comes from, as a backend hook is told (behind trusted proxies, the client). */
export function hookClient(
  req: FastifyRequest,
  ctx: AppContext,
  transport: HookClientInfo['transport'],
): HookClientInfo {
  return {
    address: ctx.limits.address(req.raw.socket?.remoteAddress, req.headers) ?? req.ip,
    transport,
    connection: String(req.id),
  };
}

/**
 * The connect and subscribe hooks of a stream opening (SSE, NDJSON) or a long-poll (`shared`: its
 * decisions are kept for `hooks.cacheTtl`, a long-poll being a new request each time): resolves
 * with the identity the stream acts as (the connect hook's `info` and narrowed grants), or throws
 * `hook_denied` / `hook_unavailable` before anything is opened. Without hooks: `identity`.
 */
export async function admitStream(
  ctx: AppContext,
  req: FastifyRequest,
  identity: Identity,
  transport: 'sse' | 'ndjson' | 'poll',
  patterns: readonly string[],
): Promise<Identity> {
  const hooks = ctx.hooks;
  if (!hooks || (!hooks.has('connect') && !hooks.has('subscribe'))) return identity;
  const client = hookClient(req, ctx, transport);
  const shared = transport === 'poll';
  const connected = await hooks.connect(identity, client, patterns, shared);
  // Narrowed grants apply to the topics asked for now, as they would on a WebSocket.
  if (connected.identity !== identity) checkSubscribe(connected.identity, patterns);
  await hooks.subscribe(connected.identity, client, patterns, shared ? null : new HookSession());
  return connected.identity;
}
