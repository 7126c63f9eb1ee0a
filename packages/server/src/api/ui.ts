import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { RillError } from '../model/errors.js';
import { errors, route } from './schemas.js';

/** `/ui`: the dashboard's page, or `not_found` saying it was not built. */
const UI_ROUTE = route({
  summary: 'Dashboard',
  description:
    'The dashboard’s page (its files are under /ui/); what it shows comes from the API, which asks for credentials.',
  tags: ['meta'],
  operationId: 'getDashboard',
  security: [],
  response: {
    200: { description: 'The page', content: { 'text/html': { schema: { type: 'string' } } } },
    ...errors('not_found'),
  },
});

/**
 * Where the dashboard's build lands: `packages/ui` builds into the server's `dist/ui`, beside this
 * module once compiled (`dist/api`); run from its source (`src/api`, the tests), two levels up.
 */
export const UI_DIR =
  [new URL('../ui/', import.meta.url), new URL('../../dist/ui/', import.meta.url)]
    .map((u) => fileURLToPath(u))
    .find((dir) => existsSync(join(dir, 'index.html'))) ??
  fileURLToPath(new URL('../ui/', import.meta.url));

/** Where the dashboard is served. */
export const UI_PATH = '/ui/';

/**
 * The dashboard's pages may load only their own scripts and styles and talk only to this origin;
 * no other site may frame them.
 */
export const UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Hashed file names (Vite's `assets/name-HASH.ext`) never change content: cached for good. */
const HASHED = /[\\/]assets[\\/][^\\/]+-[A-Za-z0-9_-]{8,}\.[a-z0-9]+$/;

/**
 * Serves the dashboard's static build at `/ui/` (`@fastify/static`): hashed assets cached as
 * immutable, the index revalidated on every load (`no-cache`), every file with a strict CSP. The
 * pages are public (they hold no data); what they show comes from the API, which asks for
 * credentials. A server whose dashboard was not built answers `not_found` there, saying so.
 */
export function uiRoutes(app: FastifyInstance): void {
  if (!existsSync(join(UI_DIR, 'index.html'))) {
    const notBuilt = async (): Promise<never> => {
      throw new RillError('not_found', 'The dashboard was not built: run npm run build');
    };
    app.get('/ui', UI_ROUTE, notBuilt);
    app.get('/ui/*', { schema: { hide: true } }, notBuilt);
    return;
  }
  void app.register(fastifyStatic, {
    root: UI_DIR,
    prefix: UI_PATH,
    index: 'index.html',
    redirect: false,
    cacheControl: false,
    etag: true,
    lastModified: true,
    setHeaders: (res, path) => {
      res.setHeader(
        'cache-control',
        HASHED.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache',
      );
      res.setHeader('content-security-policy', UI_CSP);
      res.setHeader('x-content-type-options', 'nosniff');
      res.setHeader('referrer-policy', 'no-referrer');
      res.setHeader('x-frame-options', 'DENY');
    },
  });
  // `/ui` and `/ui/` (one route: the router ignores a trailing slash, so the plugin's `/ui/*`
  // never sees an empty rest): the index.
  app.get('/ui', UI_ROUTE, (_req, reply) => reply.sendFile('index.html'));
}

/** Whether a `GET /` comes from a browser navigating (it asks for HTML), not from a script. */
export function wantsHtml(accept: string | undefined): boolean {
  return accept !== undefined && /(^|,)\s*text\/html\s*(;|,|$)/i.test(accept);
}
