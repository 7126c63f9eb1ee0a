/**
 * The OpenAPI 3.1 description of the HTTP API, generated from the route schemas
 * (`api/schemas.ts`) by `@fastify/swagger` and served at `GET /v1/openapi.json`. The copy in
 * `docs/openapi.json` is the description of a server with the default configuration
 * (`npm run openapi` writes it; `openapi.test.ts` fails when they differ). The streams' frames and
 * the WebSocket messages are described in `docs/asyncapi.yaml`.
 */
import { createRequire } from 'node:module';
import fastifySwagger from '@fastify/swagger';
import type { OpenAPIV3_1 } from 'openapi-types';
import type { FastifyInstance } from 'fastify';
import type { AppContext } from './context.js';
import { errors, json, route, TAGS } from './schemas.js';

/** Where the description is served. */
export const OPENAPI_PATH = '/v1/openapi.json';

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

const DESCRIPTION = [
  'Rill: a durable per-topic event log with HTTP publish and SSE, NDJSON, long-poll and WebSocket subscriptions.',
  'Errors are one catalogue (`Error`; docs/protocol.md § Errors). The frames of the streams and the WebSocket messages are described in asyncapi.yaml.',
  'Credentials (when authentication is on): `Authorization: Bearer` with a JWT or an API key (`rill_…`), else the `access_token` query parameter, else the cookie named by `auth.cookie`; without any, a request is anonymous when `auth.anonymous` is configured. Without authentication every route is open.',
].join('\n\n');

/**
 * Registers `@fastify/swagger` (before the routes, which it collects as they are added) with
 * the credentials this server takes.
 */
export function registerOpenapi(app: FastifyInstance, ctx: AppContext): void {
  const cookie = ctx.auth.settings.cookie;
  const securitySchemes: Record<string, OpenAPIV3_1.SecuritySchemeObject> = {
    bearer: {
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'JWT or API key (rill_…)',
      description: 'A JWT signed with a configured key, or an API key.',
    },
    accessToken: {
      type: 'apiKey',
      in: 'query',
      name: 'access_token',
      description:
        'The same token as a query parameter, for clients that cannot set headers (EventSource).',
    },
  };
  if (cookie !== undefined) {
    securitySchemes.cookie = {
      type: 'apiKey',
      in: 'cookie',
      name: cookie,
      description: 'The same token in the cookie named by auth.cookie.',
    };
  }
  void app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Rill HTTP API',
        version,
        description: DESCRIPTION,
        license: { name: 'MIT', identifier: 'MIT' },
      },
      tags: [...TAGS],
      components: { securitySchemes },
      // Any one credential, or none where anonymous access is allowed (or authentication is off).
      security: [...Object.keys(securitySchemes).map((k) => ({ [k]: [] })), {}],
    },
    // Shared schemas are named by their `$id` in #/components/schemas.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
  });
}

/** `GET /v1/openapi.json`: the description, open to anyone (it holds nothing secret). */
export function openapiRoute(app: FastifyInstance): void {
  let text: string | undefined;
  app.get(
    OPENAPI_PATH,
    route({
      summary: 'This API description',
      description:
        'The OpenAPI 3.1 description of this server’s HTTP routes. Open without credentials: it is the same as docs/openapi.json for the same version and settings.',
      tags: ['meta'],
      operationId: 'getOpenapi',
      security: [],
      response: { 200: json('OpenAPI 3.1 document', { type: 'object' }), ...errors() },
    }),
    async (_req, reply) => {
      text ??= JSON.stringify(app.swagger());
      return reply
        .type('application/json; charset=utf-8')
        .header('cache-control', 'no-cache')
        .send(text);
    },
  );
}
