import fastifyCors from '@fastify/cors';
import type { FastifyInstance } from 'fastify';

/** An origin as compared: lower case, no trailing slash. */
function normaliseOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, '');
}

/** Whether `origin` is one of `allowed` (exact origins, or `*` for any). */
export function listsOrigin(allowed: readonly string[], origin: string): boolean {
  if (allowed.includes('*')) return true;
  const o = normaliseOrigin(origin);
  return allowed.some((a) => normaliseOrigin(a) === o);
}

/** Request headers a cross-origin page may send: a publish's and the client SDK's. */
export const CORS_ALLOWED_HEADERS = [
  'authorization',
  'content-type',
  'idempotency-key',
  'last-event-id',
  'accept',
];

/**
 * Response headers a cross-origin page may read besides the safelisted ones: when to retry, why a
 * request was refused (RFC 6750), and the server's clock (the client SDK reads `Date`).
 */
export const CORS_EXPOSED_HEADERS = ['retry-after', 'www-authenticate', 'date'];

/**
 * CORS for the pages of `http.allowedOrigins`, the list the WebSocket handshake checks `Origin`
 * against, so one setting says which other sites' pages may use this server: their requests get
 * `Access-Control-Allow-Origin`, and publishes (JSON or NDJSON, with `Authorization` and
 * `Idempotency-Key`) their preflight. Credentials (cookies) are allowed cross-origin only when
 * `auth.cookie` names a cookie to read, and never with `*`: any site's page could then act with a
 * signed-in user's cookie. With an empty list nothing is added: no `Access-Control-*` header, as
 * without CORS.
 */
export function corsPlugin(
  app: FastifyInstance,
  allowed: readonly string[],
  cookie: string | undefined,
): void {
  if (allowed.length === 0) return;
  const any = allowed.includes('*');
  void app.register(fastifyCors, {
    origin: (origin, cb) => {
      if (origin === undefined || !listsOrigin(allowed, origin)) cb(null, false);
      else cb(null, any ? '*' : true);
    },
    credentials: cookie !== undefined && !any,
    methods: ['GET', 'HEAD', 'POST'],
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: 600,
  });
}
