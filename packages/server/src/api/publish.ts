import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RillError } from '../model/errors.js';
import type { EphemeralEvent, EventInput } from '../model/event.js';
import { eventId, parseEventInput, rawDataText } from '../model/event.js';
import { assertTopic } from '../model/topic.js';
import { parseTraceContext } from '../model/trace.js';
import { forbidden, identityOf } from './authn.js';
import type { AppContext } from './context.js';
import { hookClient } from './hooks.js';
import { summarize } from '../hooks/index.js';
import { AUTH_ERRORS, errors, json, route, topicParam } from './schemas.js';
import { endSpan, startPublishSpan, tracedAppend } from './tracing.js';

const int = { type: 'integer', minimum: 0 } as const;

/** The publish route's schema: the body is described here and parsed by the route, once. */
const PUBLISH = route({
  summary: 'Publish events',
  description:
    'One event, a JSON array of events, or NDJSON (one event per line). The whole batch is checked before any of it is stored: a refused request stores nothing. Ephemeral events (all of the batch) are delivered to live subscribers and never stored (202).',
  tags: ['publish'],
  operationId: 'publish',
  params: { topic: topicParam },
  headers: {
    'idempotency-key': {
      type: 'string',
      description: 'The key of a single-event request (the event’s own key must then be the same).',
    },
    traceparent: { type: 'string', description: 'W3C trace context for events without their own.' },
    tracestate: { type: 'string' },
  },
  body: {
    schema: { $ref: 'EventInput#' },
    consumes: {
      'application/json': {
        schema: {
          oneOf: [
            { $ref: 'EventInput#' },
            { type: 'array', items: { $ref: 'EventInput#' }, minItems: 1 },
          ],
        },
      },
      'application/x-ndjson': {
        schema: { type: 'string', description: 'One event object per line (UTF-8).' },
      },
    },
  },
  response: {
    201: json('Stored (or already stored: duplicate), in order', {
      type: 'object',
      required: ['topic', 'epoch', 'events'],
      properties: {
        topic: { type: 'string' },
        epoch: { type: 'string' },
        events: {
          type: 'array',
          items: {
            type: 'object',
            required: ['seq', 'id', 'time', 'duplicate'],
            properties: {
              seq: int,
              id: { type: 'string' },
              time: int,
              duplicate: { type: 'boolean' },
            },
          },
        },
      },
    }),
    202: json('Ephemeral events sent to live subscribers (not stored)', {
      type: 'object',
      required: ['topic', 'ephemeral', 'count', 'time'],
      properties: {
        topic: { type: 'string' },
        ephemeral: { const: true },
        count: int,
        time: int,
      },
    }),
    ...errors(
      'invalid_json',
      'invalid_event',
      'invalid_topic',
      'invalid_parameter',
      'json_too_deep',
      ...AUTH_ERRORS,
      'event_too_large',
      'batch_too_large',
      'payload_too_large',
      'unsupported_media_type',
      'rate_limited',
      'engine_unavailable',
      'overloaded',
      'insufficient_storage',
    ),
  },
});

/**
 * `POST /v1/topics/{topic}/events`: one event `{type?, key?, data}`, a JSON array of them, or an
 * `application/x-ndjson` body of one event per line. The whole batch is validated before any of it
 * is appended, so a rejected request stores nothing; `201` lists each event's seq and id.
 */
export function publishRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { limits } = ctx.config;
  const rate = ctx.limits;
  app.decorateRequest('limitSubjects', null);
  const meters = ctx.obs?.meters;
  const duration = ctx.obs?.publishDuration?.http;

  app.post<{
    Params: { topic: string };
    Headers: { 'idempotency-key'?: string; traceparent?: string; tracestate?: string };
  }>(
    '/v1/topics/:topic/events',
    {
      ...PUBLISH,
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
      // Overloaded: refused before the body is read (after authentication, in the app's hooks).
      ...(ctx.load?.enabled
        ? {
            onRequest: async () => {
              const overloaded = ctx.load?.refuse();
              if (overloaded) throw overloaded;
            },
          }
        : {}),
      // Before the body is read: a publish the identity may not make, or that its limits refuse
      // already, is not worth receiving. Without authentication or limits every publish is
      // allowed, and the hot path gets no extra hook.
      ...(ctx.auth.enabled || rate.enabled
        ? {
            preParsing: async (req: FastifyRequest<{ Params: { topic: string } }>) => {
              const topic = assertTopic(req.params.topic);
              const identity = identityOf(req, ctx.auth);
              if (!identity.grants.canPublish(topic)) throw forbidden('publish to', topic);
              if (!rate.enabled) return;
              const subjects = rate.ofRequest(req, identity);
              req.limitSubjects = subjects;
              const announced = Number(req.headers['content-length']);
              rate.limiter.precheckPublish(
                subjects,
                Number.isSafeInteger(announced) ? announced : 0,
              );
            },
          }
        : {}),
    },
    async (req, reply) => {
      const startTime = Date.now();
      const topic = assertTopic(req.params.topic);
      // The request's trace context applies to every event that does not carry its own.
      const requestTrace =
        req.headers.traceparent === undefined
          ? undefined
          : parseTraceContext(req.headers.traceparent, req.headers.tracestate);
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
      const subjects = req.limitSubjects;
      if (subjects !== null && subjects.length > 0) {
        await rate.checkTopic(topic, subjects);
        rate.limiter.publish(subjects, inputs.length, req.bodyBytes);
      }
      // Within the limits, the application's backend decides (never told the events' data).
      if (ctx.hooks?.has('publish')) {
        await ctx.hooks.publish(
          identityOf(req, ctx.auth),
          hookClient(req, ctx, 'http'),
          topic,
          summarize(inputs, req.bodyBytes),
        );
      }
      if (requestTrace !== undefined) {
        for (const input of inputs) input.trace ??= requestTrace;
      }
      const ephemeral = inputs.filter((i) => i.ephemeral === true).length;
      if (ephemeral > 0) {
        if (ephemeral < inputs.length) {
          throw new RillError(
            'invalid_event',
            'A batch is either all ephemeral or all stored: send ephemeral events on their own',
          );
        }
        const time = Date.now();
        try {
          await ctx.engine.broadcast(
            topic,
            inputs.map((i) => ephemeralOf(topic, i, time)),
          );
        } catch (err) {
          throw err instanceof RillError
            ? err
            : new RillError('engine_unavailable', 'The events were not sent', { cause: err });
        }
        return reply
          .code(202)
          .type('application/json; charset=utf-8')
          .send(`{"topic":"${topic}","ephemeral":true,"count":${inputs.length},"time":${time}}`);
      }
      const span = startPublishSpan('http', topic, inputs, requestTrace, startTime);
      let results;
      try {
        results = await tracedAppend(ctx.engine, topic, inputs, span);
      } catch (err) {
        const e =
          err instanceof RillError
            ? err
            : new RillError('engine_unavailable', 'The event was not stored', { cause: err });
        endSpan(span, e);
        throw e;
      }
      span.end();
      if (subjects !== null) rate.published(topic);
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

/** The ephemeral event a validated input stands for (received at `time`). */
export function ephemeralOf(topic: string, input: EventInput, time: number): EphemeralEvent {
  const ev: { -readonly [K in keyof EphemeralEvent]: EphemeralEvent[K] } = {
    topic,
    time,
    data: input.data,
  };
  if (input.type !== undefined) ev.type = input.type;
  if (input.trace !== undefined) ev.trace = input.trace;
  return ev;
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
