import type { FastifyInstance, FastifyRequest } from 'fastify';
import { MAX_COMMAND_SUB_LENGTH } from '../cluster/index.js';
import { RillError } from '../model/errors.js';
import { checkAdmin, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { parseLimit } from './params.js';

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
 * The admin endpoints of one node (docs/operations.md § Dashboard):
 * - `GET /v1/connections?limit=&after=`: its open streams and WebSockets, oldest first, paged;
 * - `DELETE /v1/connections/{id}`: ends one with `disconnected_by_admin` (a WebSocket closes
 *   with 4010); the client may reconnect and resume.
 * - `DELETE /v1/connections?sub=`: ends every stream and WebSocket of one subject the same way, on
 *   this node and, with the redis and nats engines, on every other node (told through the broker).
 */
export function adminRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.get<{ Querystring: { limit?: string; after?: string } }>(
    '/v1/connections',
    async (req, reply) => {
      requireAdmin(req, ctx);
      const limit = parseLimit(req.query.limit, 100, 1000);
      const page = ctx.streams.list({ after: parseAfter(req.query.after), limit });
      return reply
        .header('cache-control', 'no-store')
        .send({ total: ctx.streams.connections, ...page });
    },
  );

  app.delete<{ Querystring: { sub?: string } }>('/v1/connections', async (req, reply) => {
    requireAdmin(req, ctx);
    const sub = req.query.sub;
    if (sub === undefined || sub === '' || sub.length > MAX_COMMAND_SUB_LENGTH) {
      throw new RillError(
        'invalid_parameter',
        `sub must name the subject whose connections end (1-${MAX_COMMAND_SUB_LENGTH} characters)`,
      );
    }
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
  });

  app.delete<{ Params: { id: string } }>('/v1/connections/:id', async (req, reply) => {
    requireAdmin(req, ctx);
    const id = req.params.id;
    const n = ctx.streams.disconnect(id);
    if (n === 0) {
      throw new RillError(
        'not_found',
        `No connection ${JSON.stringify(id.slice(0, 64))} on this node`,
      );
    }
    return reply.send({ disconnected: n });
  });
}
