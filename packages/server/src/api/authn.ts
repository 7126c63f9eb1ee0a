import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  OPEN_IDENTITY,
  wwwAuthenticate,
  type Authenticator,
  type Credentials,
  type Identity,
} from '../auth/index.js';
import { RillError } from '../model/errors.js';
import { redactAccessToken } from '../model/redact.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request; set by the auth hook on `/v1` routes when authentication is on. */
    identity: Identity | null;
  }
}

/**
 * `/v1` routes the hook leaves alone: the WebSocket endpoint authenticates in its own handshake
 * (`ws-upgrade.ts`); the API description is public (it is the repository's docs/openapi.json).
 */
const SELF_AUTHENTICATED = new Set(['/v1/ws', '/v1/openapi.json']);

/**
 * Authenticates every request to a `/v1` route in one `onRequest` hook, before its body is read:
 * the identity goes on the request, a refusal is answered by the error handler (401 with
 * `WWW-Authenticate`). Health checks, the index or demo page, the API description, CORS preflights
 * and unknown paths stay open. Without authentication no hook is added: nothing changes.
 */
export function authHook(app: FastifyInstance, auth: Authenticator): void {
  app.decorateRequest('identity', null);
  if (!auth.enabled) return;
  app.addHook('onRequest', async (req) => {
    const route = req.routeOptions.url;
    if (route === undefined || !route.startsWith('/v1/') || SELF_AUTHENTICATED.has(route)) return;
    try {
      req.identity = await auth.authenticate(requestCredentials(req));
    } catch (err) {
      req.log.debug(
        {
          method: req.method,
          url: redactAccessToken(req.url),
          code: err instanceof RillError ? err.code : undefined,
        },
        'auth: request refused',
      );
      throw err;
    }
  });
}

/** Where a request's credentials may be: the `Authorization` header, `access_token`, the cookie. */
export function requestCredentials(req: FastifyRequest): Credentials {
  const q = req.query as Record<string, unknown> | undefined;
  const token = q?.access_token;
  return {
    authorization: req.headers.authorization,
    accessToken: typeof token === 'string' ? token : undefined,
    cookie: req.headers.cookie,
  };
}

/**
 * The identity a route acts for: the hook's, or everything allowed on a server without
 * authentication. A route the hook did not cover on a server with authentication is refused
 * rather than left open.
 */
export function identityOf(req: FastifyRequest, auth: Authenticator): Identity {
  if (req.identity) return req.identity;
  if (!auth.enabled) return OPEN_IDENTITY;
  throw new RillError('unauthorized', 'This request was not authenticated');
}

/** `forbidden` naming what the identity may not do on which topic. */
export function forbidden(what: 'publish to' | 'read' | 'subscribe to', topic: string): RillError {
  return new RillError('forbidden', `Not allowed to ${what} ${topic}`, { details: { topic } });
}

/** Refuses an identity without the admin permission with `forbidden`; `message` says what needs it. */
export function checkAdmin(identity: Identity, message: string): void {
  if (!identity.grants.admin) {
    throw new RillError('forbidden', message, { details: { permission: 'admin' } });
  }
}

/** Refuses subscribing to any of `patterns` the identity's grants do not wholly cover. */
export function checkSubscribe(identity: Identity, patterns: readonly string[]): void {
  for (const p of patterns)
    if (!identity.grants.canSubscribe(p)) throw forbidden('subscribe to', p);
}

/** The `WWW-Authenticate` header a 401 answer carries (RFC 6750), or undefined for other codes. */
export function challengeFor(err: RillError): string | undefined {
  return err.status === 401 ? wwwAuthenticate(err) : undefined;
}
