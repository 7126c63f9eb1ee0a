import {
  context,
  createTraceState,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Context,
  type Link,
  type Span,
} from '@opentelemetry/api';
import type { AppendResult, Engine } from '../engine/engine.js';
import { RillError } from '../model/errors.js';
import type { EventInput } from '../model/event.js';
import type { TraceContext } from '../model/trace.js';

/**
 * OpenTelemetry spans for publishing: `rill.publish` (one publish request, HTTP or WebSocket) and
 * its child `rill.append` (the engine's append). They go through `@opentelemetry/api` only, which
 * does nothing until the application embedding Rill registers an SDK: then they are recorded,
 * parented by the publisher's `traceparent`. Without an SDK a publish pays for two non-recording
 * span objects.
 */

const tracer = trace.getTracer('rill');

/** Most links a publish span gets to the traces of a batch's other events. */
const MAX_LINKS = 32;

/** The remote span a trace context names, as an OpenTelemetry parent context. */
function remoteContext(tc: TraceContext, base: Context): Context {
  const p = tc.traceparent;
  return trace.setSpanContext(base, {
    traceId: p.slice(3, 35),
    spanId: p.slice(36, 52),
    traceFlags: parseInt(p.slice(53, 55), 16),
    isRemote: true,
    ...(tc.tracestate === undefined ? {} : { traceState: createTraceState(tc.tracestate) }),
  });
}

/** Links to the distinct traces of `inputs` other than `parent`'s, at most {@link MAX_LINKS}. */
function eventLinks(inputs: readonly EventInput[], parent: TraceContext | undefined): Link[] {
  const links: Link[] = [];
  const seen = new Set<string>();
  if (parent !== undefined) seen.add(parent.traceparent);
  for (const input of inputs) {
    const t = input.trace;
    if (t === undefined || seen.has(t.traceparent)) continue;
    seen.add(t.traceparent);
    const sc = trace.getSpanContext(remoteContext(t, ROOT_CONTEXT));
    if (sc !== undefined) links.push({ context: sc });
    if (links.length === MAX_LINKS) break;
  }
  return links;
}

/**
 * Starts the span of a publish request of `inputs` to `topic`: its parent is the request's trace
 * context (the `traceparent` header), else the first event's; other events' traces are linked.
 * `startTime` (ms since the epoch) is when the request's handling began.
 */
export function startPublishSpan(
  transport: 'http' | 'ws',
  topic: string,
  inputs: readonly EventInput[],
  requestTrace: TraceContext | undefined,
  startTime: number,
): Span {
  const parent = requestTrace ?? inputs[0]?.trace;
  const base = context.active();
  const links = inputs.length > 1 || requestTrace !== undefined ? eventLinks(inputs, parent) : [];
  return tracer.startSpan(
    'rill.publish',
    {
      kind: SpanKind.SERVER,
      startTime,
      attributes: {
        'messaging.system': 'rill',
        'messaging.operation.type': 'send',
        'messaging.destination.name': topic,
        'messaging.batch.message_count': inputs.length,
        'rill.transport': transport,
      },
      ...(links.length > 0 ? { links } : {}),
    },
    parent === undefined ? base : remoteContext(parent, base),
  );
}

/** Ends a span, marking it failed with the error's catalogue code when there is one. */
export function endSpan(span: Span, err?: unknown): void {
  if (err !== undefined && span.isRecording()) {
    const code = err instanceof RillError ? err.code : 'internal';
    span.setAttribute('error.type', code);
    span.setStatus({ code: SpanStatusCode.ERROR, message: code });
  }
  span.end();
}

/** `engine.append` inside a `rill.append` span, the child of `publish`. */
export async function tracedAppend(
  engine: Engine,
  topic: string,
  inputs: EventInput[],
  publish: Span,
): Promise<AppendResult[]> {
  const span = tracer.startSpan(
    'rill.append',
    {
      kind: SpanKind.INTERNAL,
      attributes: {
        'rill.engine': engine.name,
        'messaging.destination.name': topic,
        'messaging.batch.message_count': inputs.length,
      },
    },
    trace.setSpan(context.active(), publish),
  );
  let results: AppendResult[];
  try {
    results = await engine.append(topic, inputs);
  } catch (err) {
    endSpan(span, err);
    throw err;
  }
  if (span.isRecording() && results.length > 0) {
    let duplicates = 0;
    for (const r of results) if (r.duplicate) duplicates++;
    span.setAttributes({
      'rill.seq.first': results[0]!.event.seq,
      'rill.seq.last': results[results.length - 1]!.event.seq,
      'rill.duplicates': duplicates,
    });
  }
  span.end();
  return results;
}
