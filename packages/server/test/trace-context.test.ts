import http from 'node:http';
import { trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { openSse, startServer, useCleanups } from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const TP1 = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const TP2 = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';
const TP3 = '00-11111111111111111111111111111111-2222222222222222-01';

type Traced = { seq: number; trace?: { traceparent: string; tracestate?: string } };

/** Reads an NDJSON stream until `n` event lines have arrived, then closes it. */
function ndjsonEvents(url: string, n: number): Promise<Traced[]> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'application/x-ndjson' } }, (res) => {
      let buf = '';
      const got: Traced[] = [];
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line !== '') got.push(JSON.parse(line) as Traced);
        }
        if (got.length >= n) {
          req.destroy();
          resolve(got);
        }
      });
    });
    req.on('error', reject);
  });
}

const traces = (events: Traced[]): Array<Traced['trace']> => events.map((e) => e.trace);

describe('trace context', () => {
  const { cleanups } = useCleanups();

  it('is stored from the traceparent header or each event, and delivered on every transport', async () => {
    const { url, close } = await startServer();
    cleanups.push(close);
    const t = 'traced';
    const post = (body: string, headers: Record<string, string>): Promise<Response> =>
      fetch(`${url}/v1/topics/${t}/events`, { method: 'POST', body, headers });
    // 1, 2: the header, for every event of the batch without its own (2 has its own).
    let r = await post(
      JSON.stringify([{ data: 1 }, { data: 2, trace: { traceparent: TP2, tracestate: 'k=v' } }]),
      { 'content-type': 'application/json', traceparent: TP1, tracestate: 'rojo=1' },
    );
    expect(r.status).toBe(201);
    // 3: NDJSON with a per-event trace; 4: an invalid header is ignored (stored without trace).
    r = await post(`{"data":3,"trace":{"traceparent":"${TP3}"}}\n`, {
      'content-type': 'application/x-ndjson',
    });
    expect(r.status).toBe(201);
    r = await post('{"data":4}', {
      'content-type': 'application/json',
      traceparent: TP1.toUpperCase(),
    });
    expect(r.status).toBe(201);
    // 5: over the WebSocket.
    const ws = await WsClient.open(wsUrl(url));
    cleanups.push(() => ws.ws.terminate());
    const ack = await ws.request({ op: 'publish', topic: t, data: 5, trace: { traceparent: TP2 } });
    expect(ack.op).toBe('ack');

    const expected = [
      { traceparent: TP1, tracestate: 'rojo=1' },
      { traceparent: TP2, tracestate: 'k=v' },
      { traceparent: TP3 },
      undefined,
      { traceparent: TP2 },
    ];
    // History.
    const page = (await (await fetch(`${url}/v1/topics/${t}/events`)).json()) as {
      events: Traced[];
    };
    expect(traces(page.events)).toEqual(expected);
    // Long-poll.
    const poll = (await (
      await fetch(`${url}/v1/events?topics=${t}&from=earliest&wait=0`)
    ).json()) as { events: Traced[] };
    expect(traces(poll.events)).toEqual(expected);
    // SSE.
    const sse = await openSse(`${url}/v1/topics/${t}/stream?from=earliest`);
    cleanups.push(() => sse.close());
    await sse.until((f) => f.length >= 5);
    expect(traces(sse.events() as Traced[])).toEqual(expected);
    // NDJSON.
    expect(traces(await ndjsonEvents(`${url}/v1/topics/${t}/stream?from=earliest`, 5))).toEqual(
      expected,
    );
    // WebSocket, single topic and multi-topic (a frame of its own per subscriber).
    for (const topics of [[t], [t, 'other']]) {
      const sub = await ws.request({ op: 'subscribe', topics, from: 'earliest' });
      await ws.until(() => ws.events(sub.sub).length >= 5);
      expect(traces(ws.events(sub.sub) as Traced[])).toEqual(expected);
    }
  });

  it('refuses a trace member that is not an object', async () => {
    const { url, close } = await startServer();
    cleanups.push(close);
    const r = await fetch(`${url}/v1/topics/t/events`, {
      method: 'POST',
      body: JSON.stringify({ data: 1, trace: TP1 }),
      headers: { 'content-type': 'application/json' },
    });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('invalid_event');
  });
});

describe('OpenTelemetry spans', () => {
  const { cleanups } = useCleanups();
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

  beforeAll(() => {
    trace.setGlobalTracerProvider(provider);
  });
  afterAll(async () => {
    trace.disable();
    await provider.shutdown();
  });

  it("records rill.publish and its child rill.append, parented by the publisher's traceparent", async () => {
    const { url, close } = await startServer();
    cleanups.push(close);
    exporter.reset();
    const r = await fetch(`${url}/v1/topics/spans/events`, {
      method: 'POST',
      body: JSON.stringify([{ data: 1 }, { data: 2, trace: { traceparent: TP2 } }]),
      headers: { 'content-type': 'application/json', traceparent: TP1 },
    });
    expect(r.status).toBe(201);
    // Over the WebSocket, parented by the event's own (sampled) trace.
    const ws = await WsClient.open(wsUrl(url));
    cleanups.push(() => ws.ws.terminate());
    expect(
      (await ws.request({ op: 'publish', topic: 'spans', data: 3, trace: { traceparent: TP3 } }))
        .op,
    ).toBe('ack');

    const spans = exporter.getFinishedSpans();
    const named = (name: string): typeof spans => spans.filter((s) => s.name === name);
    expect(named('rill.publish')).toHaveLength(2);
    expect(named('rill.append')).toHaveLength(2);
    const cases = [
      { tp: TP1, transport: 'http', events: 2, first: 1, last: 2 },
      { tp: TP3, transport: 'ws', events: 1, first: 3, last: 3 },
    ];
    for (const c of cases) {
      const traceId = c.tp.slice(3, 35);
      const publish = named('rill.publish').find((s) => s.spanContext().traceId === traceId)!;
      expect(publish).toBeDefined();
      // The publisher's span is the parent.
      expect(publish.parentSpanContext?.spanId).toBe(c.tp.slice(36, 52));
      expect(publish.attributes).toMatchObject({
        'messaging.system': 'rill',
        'messaging.destination.name': 'spans',
        'messaging.batch.message_count': c.events,
        'rill.transport': c.transport,
      });
      const append = named('rill.append').find((s) => s.spanContext().traceId === traceId)!;
      expect(append.parentSpanContext?.spanId).toBe(publish.spanContext().spanId);
      expect(append.attributes).toMatchObject({
        'rill.engine': 'memory',
        'rill.seq.first': c.first,
        'rill.seq.last': c.last,
        'rill.duplicates': 0,
      });
    }
    // The batch's other trace is linked.
    const http = named('rill.publish').find((s) => s.attributes['rill.transport'] === 'http')!;
    expect(http.links.map((l) => l.context.traceId)).toEqual([TP2.slice(3, 35)]);
  });

  it('marks a refused append as failed with its error code', async () => {
    const { url, close } = await startServer({ storage: { maxBytes: 10 } });
    cleanups.push(close);
    exporter.reset();
    const r = await fetch(`${url}/v1/topics/full/events`, {
      method: 'POST',
      body: JSON.stringify({ data: 'x'.repeat(100) }),
      headers: { 'content-type': 'application/json', traceparent: TP1 },
    });
    expect(r.status).toBe(507);
    const spans = exporter.getFinishedSpans();
    for (const name of ['rill.publish', 'rill.append']) {
      const s = spans.find((x) => x.name === name)!;
      expect(s.status.code).toBe(2);
      expect(s.attributes['error.type']).toBe('insufficient_storage');
    }
  });
});
