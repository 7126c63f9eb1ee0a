import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RillError } from '../model/errors.js';
import type { EventInput } from '../model/event.js';
import { eventId, parseEventInput, rawDataText } from '../model/event.js';
import { assertTopic } from '../model/topic.js';
import { forbidden, identityOf } from './authn.js';
import type { AppContext } from './context.js';

const topicParams = {
  type: 'object',
  properties: { topic: { type: 'string' } },
  required: ['topic'],
} as const;

/**
 * `POST /v1/topics/{topic}/events`: one event `{type?, key?, data}`, a JSON array of them, or an
 * `application/x-ndjson` body of one event per line. The whole batch is validated before any of it
 * is appended, so a rejected request stores nothing; `201` lists each event's seq and id.
 */
export function publishRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { limits } = ctx.config;
  const meters = ctx.obs?.meters;
  const duration = ctx.obs?.publishDuration?.http;

  app.post<{ Params: { topic: string }; Headers: { 'idempotency-key'?: string } }>(
    '/v1/topics/:topic/events',
    {
      schema: { params: topicParams },
      // From the request's arrival to its answer, whatever the outcome.
      ...(duration
        ? {
            onResponse: (
              _req: FastifyRequest,
              reply: { elapsedTime: number },
              done: () => void,
            ) => {
              duration.observe(reply.elapsedTime / 1000);
              done();
            },
          }
        : {}),
      // Before the body is read: a publish the identity may not make is not worth receiving.
      // Without authentication every publish is allowed, and the hot path gets no extra hook.
      ...(ctx.auth.enabled
        ? {
            preParsing: async (req: FastifyRequest<{ Params: { topic: string } }>) => {
              const topic = assertTopic(req.params.topic);
              if (!identityOf(req, ctx.auth).grants.canPublish(topic)) {
                throw forbidden('publish to', topic);
              }
            },
          }
        : {}),
    },
    async (req, reply) => {
      const topic = assertTopic(req.params.topic);
      const { raws, lines } = bodyToEvents(req.body, req.headers['content-type']);
      if (raws.length === 0) throw new RillError('invalid_event', 'No events in the request');
      if (raws.length > limits.maxBatchEvents) {
        throw new RillError(
          'batch_too_large',
          `At most ${limits.maxBatchEvents} events per request`,
          { details: { limit: limits.maxBatchEvents } },
        );
      }
      const inputs: EventInput[] = raws.map((r, i) =>
        parseEventInput(
          r,
          limits,
          raws.length > 1 ? i : undefined,
          lines === undefined ? undefined : rawDataText(lines[i]!),
        ),
      );
      const headerKey = req.headers['idempotency-key'];
      if (headerKey !== undefined) {
        if (inputs.length !== 1) {
          throw new RillError(
            'invalid_parameter',
            'Idempotency-Key applies to single-event requests; give each event of a batch its own "key"',
          );
        }
        const first = inputs[0]!;
        if (first.key === undefined) {
          first.key = parseEventInput({ key: headerKey, data: null }, limits).key;
        } else if (first.key !== headerKey) {
          throw new RillError('invalid_event', 'Idempotency-Key header and event key differ');
        }
      }
      let results;
      try {
        results = await ctx.engine.append(topic, inputs);
      } catch (err) {
        if (err instanceof RillError) throw err;
        throw new RillError('engine_unavailable', 'The event was not stored', { cause: err });
      }
      if (meters) meters.publishedEvents('http', topic, stored(results));
      const first = results[0]!.event;
      let out = `{"topic":"${topic}","epoch":"${first.epoch}","events":[`;
      for (let i = 0; i < results.length; i++) {
        const { event, duplicate } = results[i]!;
        if (i > 0) out += ',';
        out += `{"seq":${event.seq},"id":"${eventId(event)}","time":${event.time},"duplicate":${duplicate}}`;
      }
      out += ']}';
      return reply.code(201).type('application/json; charset=utf-8').send(out);
    },
  );
}

/** How many of an append's results were stored (not duplicates). */
export function stored(results: readonly { duplicate: boolean }[]): number {
  let n = 0;
  for (const r of results) if (!r.duplicate) n++;
  return n;
}

/** The raw events of a body and, for NDJSON, the line each came from. */
function bodyToEvents(
  body: unknown,
  contentType: string | undefined,
): { raws: unknown[]; lines?: string[] } {
  if (contentType?.toLowerCase().startsWith('application/x-ndjson')) {
    const out: unknown[] = [];
    const texts: string[] = [];
    const lines = String(body).split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (line === '') continue;
      try {
        out.push(JSON.parse(line));
        texts.push(line);
      } catch {
        throw new RillError('invalid_json', `Line ${i + 1} is not valid JSON`, {
          details: { line: i + 1 },
        });
      }
    }
    return { raws: out, lines: texts };
  }
  if (body === undefined) throw new RillError('invalid_json', 'Empty body');
  return { raws: Array.isArray(body) ? body : [body] };
}
