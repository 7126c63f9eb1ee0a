import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERRORS } from '../src/model/errors.js';
import { publish, startServer } from '@rill/testkit';

let url: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ url, close } = await startServer({
    limits: {
      maxEventBytes: 1024,
      maxBatchEvents: 5,
      maxBodyBytes: 64 * 1024,
      maxCursorLength: 1024,
    },
  }));
  await publish(url, 'exists', { data: 1 });
});
afterAll(async () => close());

interface Case {
  name: string;
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
  status: number;
  code: keyof typeof ERRORS;
}

const ev = (o: unknown): string => JSON.stringify(o);
const P = '/v1/topics/t/events';

const cases: Case[] = [
  {
    name: 'invalid JSON',
    method: 'POST',
    path: P,
    body: '{"data":',
    status: 400,
    code: 'invalid_json',
  },
  { name: 'empty JSON body', method: 'POST', path: P, body: '', status: 400, code: 'invalid_json' },
  {
    name: 'proto poisoning',
    method: 'POST',
    path: P,
    body: '{"__proto__":{"x":1},"data":1}',
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'NDJSON bad line',
    method: 'POST',
    path: P,
    headers: { 'content-type': 'application/x-ndjson' },
    body: '{"data":1}\nnope\n',
    status: 400,
    code: 'invalid_json',
  },
  {
    name: 'event not an object',
    method: 'POST',
    path: P,
    body: '42',
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'missing data',
    method: 'POST',
    path: P,
    body: ev({ type: 'x' }),
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'unknown field',
    method: 'POST',
    path: P,
    body: ev({ data: 1, extra: true }),
    status: 400,
    code: 'invalid_event',
  },
  { name: 'empty batch', method: 'POST', path: P, body: '[]', status: 400, code: 'invalid_event' },
  {
    name: 'type with LF (frame injection)',
    method: 'POST',
    path: P,
    body: ev({ type: 'a\ndata: evil', data: 1 }),
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'type with CR',
    method: 'POST',
    path: P,
    body: ev({ type: 'a\rb', data: 1 }),
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'key with NUL',
    method: 'POST',
    path: P,
    body: ev({ key: 'a\u0000b', data: 1 }),
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'reserved type',
    method: 'POST',
    path: P,
    body: ev({ type: 'reset', data: 1 }),
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'non-string type',
    method: 'POST',
    path: P,
    body: ev({ type: 5, data: 1 }),
    status: 400,
    code: 'invalid_event',
  },
  {
    name: 'bad topic name',
    method: 'POST',
    path: '/v1/topics/bad%20topic/events',
    body: ev({ data: 1 }),
    status: 400,
    code: 'invalid_topic',
  },
  {
    name: 'empty topic segment',
    method: 'POST',
    path: '/v1/topics/a..b/events',
    body: ev({ data: 1 }),
    status: 400,
    code: 'invalid_topic',
  },
  {
    name: 'wildcard as publish topic',
    method: 'POST',
    path: '/v1/topics/a.*/events',
    body: ev({ data: 1 }),
    status: 400,
    code: 'invalid_topic',
  },
  {
    name: 'event too large',
    method: 'POST',
    path: P,
    body: ev({ data: 'x'.repeat(2000) }),
    status: 413,
    code: 'event_too_large',
  },
  {
    name: 'batch too large',
    method: 'POST',
    path: P,
    body: ev(Array.from({ length: 6 }, () => ({ data: 1 }))),
    status: 413,
    code: 'batch_too_large',
  },
  {
    name: 'body too large',
    method: 'POST',
    path: P,
    body: ev({ data: 'x'.repeat(70_000) }),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'unsupported media type',
    method: 'POST',
    path: P,
    headers: { 'content-type': 'text/plain' },
    body: 'hello',
    status: 415,
    code: 'unsupported_media_type',
  },
  {
    name: 'Idempotency-Key on a batch',
    method: 'POST',
    path: P,
    headers: { 'idempotency-key': 'k' },
    body: ev([{ data: 1 }, { data: 2 }]),
    status: 400,
    code: 'invalid_parameter',
  },
  { name: 'unknown topic info', path: '/v1/topics/nope', status: 404, code: 'topic_not_found' },
  {
    name: 'unknown topic history',
    path: '/v1/topics/nope/events',
    status: 404,
    code: 'topic_not_found',
  },
  {
    name: 'bad limit',
    path: '/v1/topics/exists/events?limit=-1',
    status: 400,
    code: 'invalid_parameter',
  },
  {
    name: 'bad after',
    path: '/v1/topics/exists/events?after=abc',
    status: 400,
    code: 'invalid_cursor',
  },
  { name: 'unknown route', path: '/v2/nothing', status: 404, code: 'not_found' },
  {
    name: 'malformed Last-Event-ID',
    path: '/v1/topics/exists/stream',
    headers: { 'last-event-id': 'garbage' },
    status: 400,
    code: 'invalid_cursor',
  },
  {
    name: 'Last-Event-ID with bad seq',
    path: '/v1/topics/exists/stream',
    headers: { 'last-event-id': 'exists:abc:-1' },
    status: 400,
    code: 'invalid_cursor',
  },
  {
    name: 'huge Last-Event-ID',
    path: '/v1/topics/exists/stream',
    headers: { 'last-event-id': 'a:b:1,'.repeat(300) },
    status: 400,
    code: 'invalid_cursor',
  },
  {
    name: 'malformed lastEventId query',
    path: '/v1/topics/exists/stream?lastEventId=%3A%3A',
    status: 400,
    code: 'invalid_cursor',
  },
  {
    name: 'bad from',
    path: '/v1/topics/exists/stream?from=yesterday',
    status: 400,
    code: 'invalid_parameter',
  },
  {
    name: 'from=0',
    path: '/v1/topics/exists/stream?from=0',
    status: 400,
    code: 'invalid_parameter',
  },
  {
    name: 'bad since',
    path: '/v1/topics/exists/stream?since=soon',
    status: 400,
    code: 'invalid_parameter',
  },
  {
    name: 'stream of a bad topic',
    path: '/v1/topics/a%0Ab/stream',
    status: 400,
    code: 'invalid_topic',
  },
  {
    name: 'multi stream without topics',
    path: '/v1/stream',
    status: 400,
    code: 'invalid_parameter',
  },
  {
    name: 'multi stream bad pattern',
    path: '/v1/stream?topics=a.>.b',
    status: 400,
    code: 'invalid_pattern',
  },
];

describe('bad input answers with a status and a stable code', () => {
  it.each(cases)('$name → $status $code', async (c) => {
    const res = await fetch(`${url}${c.path}`, {
      method: c.method ?? 'GET',
      headers: {
        ...(c.method === 'POST' ? { 'content-type': 'application/json' } : {}),
        ...c.headers,
      },
      ...(c.body === undefined ? {} : { body: c.body }),
    });
    expect(res.status).toBe(c.status);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe(c.code);
    expect(body.error.message.length).toBeGreaterThan(0);
    expect(ERRORS[c.code].status).toBe(c.status);
  });

  it('stored nothing for any rejected publish, and the server still serves', async () => {
    const res = await fetch(`${url}/v1/topics/t/events`);
    expect(res.status).toBe(404);
    const ok = await publish(url, 't', { data: 'fine' });
    expect(ok.status).toBe(201);
    expect((ok.json.events as Array<{ seq: number }>)[0]!.seq).toBe(1);
  });
});
