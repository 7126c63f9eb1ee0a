import type { FastifyInstance, FastifyRequest } from 'fastify';
import { MAX_COMMAND_SUB_LENGTH } from '../cluster/index.js';
import { RillError } from '../model/errors.js';
import { checkAdmin, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { parseLimit } from './params.js';
import { asString, AUTH_ERRORS, errors, json, limitQuery, route, text } from './schemas.js';
import {
  CURSOR_SPAN,
  isConnectionsArgs,
  mergeConnections,
  type ConnectionsAnswer,
  type ConnectionsArgs,
} from './worker-views.js';

/**
 * Refuses a request whose identity lacks the admin grant (`forbidden`). A server without
 * authentication allows everything, these endpoints included: it listens on loopback only unless
 * started with `--insecure`.
 */
export function requireAdmin(req: FastifyRequest, ctx: AppContext): void {
  checkAdmin(identityOf(req, ctx.auth), 'The admin permission is needed for this');
}

const AFTER_RE = /^(?:0|[1-9][0-9]{0,15})$/;

/** `after` of a connections page: the `next` of the page before it. */
function parseAfter(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 0;
  if (!AFTER_RE.test(raw)) {
    throw new RillError('invalid_parameter', 'after must be the next of a connections page');
  }
  return Number(raw);
}

/** `sub` of `DELETE /v1/connections?sub=`: the subject whose connections end. */
function parseSub(raw: string | undefined): string {
  if (raw === undefined || raw === '' || raw.length > MAX_COMMAND_SUB_LENGTH) {
    throw new RillError(
      'invalid_parameter',
      `sub must name the subject whose connections end (1-${MAX_COMMAND_SUB_LENGTH} characters)`,
    );
  }
  return raw;
}

/**
 * The admin endpoints of one node (docs/operations.md § Dashboard), with `--workers` over all its
 * workers (each lists its own, api/worker-views.ts; a worker that does not answer in time is
 * named in `missingWorkers`):
 * - `GET /v1/connections?limit=&after=`: its open streams and WebSockets, oldest first (with
 *   workers: worker by worker), paged;
 * - `DELETE /v1/connections/{id}`: ends one, on whichever worker holds it, with
 *   `disconnected_by_admin` (a WebSocket closes with 4010); the client may reconnect and resume.
 * - `DELETE /v1/connections?sub=`: ends every stream and WebSocket of one subject the same way, on
 *   this node and, with the redis and nats engines, on every other node (told through the broker).
 */
export function adminRoutes(app: FastifyInstance, ctx: AppContext): void {
  const peers = ctx.workers;
  if (peers) {
    peers.answer('connections', (args): ConnectionsAnswer => {
      if (!isConnectionsArgs(args)) throw new TypeError('connections: bad arguments');
      const total = ctx.streams.connections;
      // Workers before the cursor's are done with; the cursor's goes on after its place.
      if (peers.id < args.worker) return { total, rows: [], orders: [], more: false };
      const after = peers.id === args.worker ? args.after : 0;
      return { total, ...ctx.streams.page({ after, limit: args.limit }) };
    });
    peers.answer('disconnect', (id) => (typeof id === 'string' ? ctx.streams.disconnect(id) : 0));
  }

  app.get<{ Querystring: { limit?: string; after?: string } }>(
    '/v1/connections',
    route({
      summary: 'Open connections of this node',
      description:
        'Its open streams, long-polls and WebSockets, oldest first, a page at a time (docs/operations.md § Dashboard).',
      tags: ['admin'],
      operationId: 'listConnections',
      querystring: {
        limit: limitQuery(100, 1000),
        after: {
          schema: text('The next of the page before.', {
            pattern: `^(?:${AFTER_RE.source.slice(1, -1)})?$`,
          }),
          check: (v) => parseAfter(asString(v)),
        },
      },
      response: {
        200: json('A page of connections', {
          type: 'object',
          required: ['total', 'connections', 'next'],
          properties: {
            total: { type: 'integer', minimum: 0 },
            connections: {
              type: 'array',
              items: {
                type: 'object',
                required: ['id', 'transport', 'identity', 'address', 'state', 'openedAt'],
                properties: {
                  id: { type: 'string' },
                  transport: { type: 'string', enum: ['sse', 'ndjson', 'ws', 'poll'] },
                  identity: { type: 'object' },
                  address: { type: 'string' },
                  state: { type: 'string', enum: ['live', 'catch-up'] },
                  openedAt: { type: 'string', format: 'date-time' },
                  ageSeconds: { type: 'number' },
                },
                additionalProperties: true,
              },
            },
            next: { type: ['integer', 'null'] },
            missingWorkers: {
              type: 'array',
              items: { type: 'integer' },
              description: 'With --workers: the workers that did not answer in time.',
            },
          },
          additionalProperties: true,
        }),
        ...errors('invalid_parameter', ...AUTH_ERRORS),
      },
    }),
    async (req, reply) => {
      requireAdmin(req, ctx);
      const limit = parseLimit(req.query.limit, 100, 1000);
      const after = parseAfter(req.query.after);
      reply.header('cache-control', 'no-store');
      if (!peers) {
        const page = ctx.streams.list({ after, limit });
        return reply.send({ total: ctx.streams.connections, ...page });
      }
      const args: ConnectionsArgs = {
        worker: Math.floor(after / CURSOR_SPAN),
        after: after % CURSOR_SPAN,
        limit,
      };
      return reply.send(mergeConnections(await peers.gather('connections', args), limit));
    },
  );

  app.delete<{ Querystring: { sub?: string } }>(
    '/v1/connections',
    route({
      summary: 'End every connection of a subject',
      description:
        "Ends every stream of this JWT subject (or API key sub) with disconnected_by_admin (a WebSocket closes with 4010), on this node and, with the redis and nats engines, on every node; the count is this node's.",
      tags: ['admin'],
      operationId: 'disconnectSubject',
      querystring: {
        sub: {
          schema: text('The subject whose connections end.', {
            minLength: 1,
            maxLength: MAX_COMMAND_SUB_LENGTH,
          }),
          check: (v) => parseSub(asString(v)),
        },
      },
      required: ['sub'],
      response: {
        200: json('Ended', {
          type: 'object',
          required: ['sub', 'disconnected', 'cluster'],
          properties: {
            sub: { type: 'string' },
            disconnected: { type: 'integer', minimum: 0 },
            cluster: { type: 'boolean' },
          },
        }),
        ...errors('invalid_parameter', ...AUTH_ERRORS, 'engine_unavailable'),
      },
    }),
    async (req, reply) => {
      requireAdmin(req, ctx);
      const sub = parseSub(req.query.sub);
      const n = ctx.streams.disconnectSubject(sub);
      if (ctx.cluster) {
        try {
          await ctx.cluster.send({ op: 'disconnect', sub });
        } catch (err) {
          throw new RillError(
            'engine_unavailable',
            `Ended ${n} connection(s) of this subject on this node, but could not tell the other nodes; retry`,
            { cause: err, details: { disconnected: n } },
          );
        }
      }
      req.log.info(
        { sub, disconnected: n, cluster: ctx.cluster !== null },
        'admin: disconnected a subject',
      );
      return reply.send({ sub, disconnected: n, cluster: ctx.cluster !== null });
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/connections/:id',
    route({
      summary: 'End a connection',
      description:
        'Ends the streams of this connection id with disconnected_by_admin (a WebSocket closes with 4010); the client may reconnect and resume.',
      tags: ['admin'],
      operationId: 'disconnect',
      params: { id: { schema: text('A connection id from the listing.'), check: () => undefined } },
      response: {
        200: json('Ended', {
          type: 'object',
          required: ['disconnected'],
          properties: { disconnected: { type: 'integer', minimum: 1 } },
        }),
        ...errors(...AUTH_ERRORS, 'not_found'),
      },
    }),
    async (req, reply) => {
      requireAdmin(req, ctx);
      const id = req.params.id;
      let n: number;
      let missing: number[] = [];
      if (!peers) n = ctx.streams.disconnect(id);
      else {
        // Connection ids carry their worker's id, so one worker at most ends it.
        const g = await peers.gather('disconnect', id);
        n = g.answers.reduce((sum, a) => sum + (typeof a.body === 'number' ? a.body : 0), 0);
        missing = g.missing;
      }
      if (n === 0) {
        const quoted = JSON.stringify(id.slice(0, 64));
        throw missing.length === 0
          ? new RillError('not_found', `No connection ${quoted} on this node`)
          : new RillError(
              'not_found',
              `No connection ${quoted} on the workers that answered; ${missing.length === 1 ? 'worker' : 'workers'} ${missing.join(', ')} did not`,
              { details: { missingWorkers: missing } },
            );
      }
      return reply.send({ disconnected: n });
    },
  );
}
