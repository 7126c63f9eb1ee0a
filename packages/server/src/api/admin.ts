import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RillError } from '../model/errors.js';
import { checkAdmin, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { parseLimit } from './params.js';
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

/** `after` of a connections page: the `next` of the page before it. */
function parseAfter(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 0;
  if (!/^(?:0|[1-9][0-9]{0,15})$/.test(raw)) {
    throw new RillError('invalid_parameter', 'after must be the next of a connections page');
  }
  return Number(raw);
}

/**
 * The admin endpoints of one node (docs/operations.md § Dashboard), with `--workers` over all its
 * workers (each lists its own, api/worker-views.ts; a worker that does not answer in time is
 * named in `missingWorkers`):
 * - `GET /v1/connections?limit=&after=`: its open streams and WebSockets, oldest first (with
 *   workers: worker by worker), paged;
 * - `DELETE /v1/connections/{id}`: ends one, on whichever worker holds it, with
 *   `disconnected_by_admin` (a WebSocket closes with 4010); the client may reconnect and resume.
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

  app.delete<{ Params: { id: string } }>('/v1/connections/:id', async (req, reply) => {
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
  });
}
