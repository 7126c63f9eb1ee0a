import type { FastifyInstance } from 'fastify';
import { RillError } from '../model/errors.js';
import { assertTopic, isPattern } from '../model/topic.js';
import type { Identity } from '../auth/index.js';
import type { PresenceCount, PresencePage, PresenceService } from '../presence/index.js';
import type { PresenceNotice } from '../wire/presence.js';
import { checkSubscribe, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { parseLimit } from './params.js';
import {
  answer,
  asString,
  AUTH_ERRORS,
  errors,
  limitQuery,
  route,
  text,
  topicParam,
  type Field,
} from './schemas.js';

/** Members one presence page lists by default, and at most. */
export const PRESENCE_PAGE = 100;
export const MAX_PRESENCE_PAGE = 1000;

/** Longest `after` (a `sub`) a presence page accepts. */
const MAX_AFTER_LENGTH = 1024;

export const presenceQuery: Field = {
  schema: text('true (or 1): the stream also carries its topics’ joins and leaves.', {
    enum: ['true', 'false', '1', '0', ''],
  }),
  check: (v) => parsePresenceFlag(asString(v)),
};

/** `presence=true|1|false|0` on a stream's query string; absent is false. */
export function parsePresenceFlag(raw: string | undefined): boolean {
  if (raw === undefined || raw === '' || raw === 'false' || raw === '0') return false;
  if (raw === 'true' || raw === '1') return true;
  throw new RillError('invalid_parameter', 'presence must be true or false');
}

function checkAfter(after: string): void {
  if (after.length > MAX_AFTER_LENGTH) {
    throw new RillError(
      'invalid_parameter',
      `after must be at most ${MAX_AFTER_LENGTH} characters`,
    );
  }
}

function enabled(ctx: AppContext): PresenceService {
  if (!ctx.presence) throw new RillError('not_found', 'Presence is turned off on this server');
  return ctx.presence;
}

/** A presence page for `identity`, which needs subscribe permission on the topic. */
export async function presencePage(
  ctx: AppContext,
  identity: Identity,
  topic: string,
  opts: { after?: string | undefined; limit?: string | number | undefined },
): Promise<PresencePage> {
  const presence = enabled(ctx);
  checkSubscribe(identity, [topic]);
  if (opts.after !== undefined) checkAfter(opts.after);
  const limit =
    typeof opts.limit === 'number'
      ? parseLimit(String(opts.limit), PRESENCE_PAGE, MAX_PRESENCE_PAGE)
      : parseLimit(opts.limit, PRESENCE_PAGE, MAX_PRESENCE_PAGE);
  return presence.page(topic, {
    limit,
    ...(opts.after === undefined || opts.after === '' ? {} : { after: opts.after }),
  });
}

export async function presenceCount(
  ctx: AppContext,
  identity: Identity,
  topic: string,
): Promise<PresenceCount> {
  const presence = enabled(ctx);
  checkSubscribe(identity, [topic]);
  return presence.count(topic);
}

/**
 * A subscription's presence: the connection counts as present on each exact topic it names
 * (patterns do not: presence is per topic, and a pattern names no member set), and with `notify`
 * it hears the joins and leaves of those topics. Returns the function that ends both.
 */
export function enterPresence(
  ctx: AppContext,
  identity: Identity,
  patterns: readonly string[],
  notify: ((n: PresenceNotice) => void) | null,
): () => void {
  const presence = ctx.presence;
  if (!presence) return () => undefined;
  const ends: (() => void)[] = [];
  for (const topic of patterns) {
    if (isPattern(topic)) continue;
    if (notify) ends.push(presence.watch(topic, notify));
    ends.push(presence.enter(topic, identity.sub, identity.info));
  }
  return () => {
    for (const end of ends.splice(0)) end();
  };
}

export function presenceRoutes(app: FastifyInstance, ctx: AppContext): void {
  const presenceErrors = errors('invalid_topic', 'invalid_parameter', ...AUTH_ERRORS, 'not_found');
  app.get<{ Params: { topic: string }; Querystring: { after?: string; limit?: string } }>(
    '/v1/topics/:topic/presence',
    route({
      summary: 'Who is subscribed',
      description:
        'The members subscribed to the topic (across the cluster), a page at a time; anonymous subscribers are counted only. not_found when presence is off.',
      tags: ['presence'],
      operationId: 'getPresence',
      params: { topic: topicParam },
      querystring: {
        after: {
          schema: text('The next of the page before (a member’s sub).', {
            maxLength: MAX_AFTER_LENGTH,
          }),
          check: (v) => checkAfter(asString(v)),
        },
        limit: limitQuery(PRESENCE_PAGE, MAX_PRESENCE_PAGE),
      },
      response: { 200: answer('A page of members', 'Presence'), ...presenceErrors },
    }),
    async (req) => {
      const topic = assertTopic(req.params.topic);
      return presencePage(ctx, identityOf(req, ctx.auth), topic, req.query);
    },
  );
  app.get<{ Params: { topic: string } }>(
    '/v1/topics/:topic/presence/count',
    route({
      summary: 'How many are subscribed',
      tags: ['presence'],
      operationId: 'getPresenceCount',
      params: { topic: topicParam },
      response: { 200: answer('The counts', 'Presence'), ...presenceErrors },
    }),
    async (req) => {
      const topic = assertTopic(req.params.topic);
      return presenceCount(ctx, identityOf(req, ctx.auth), topic);
    },
  );
}
