import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MAX_JSON_DEPTH } from '../src/model/event.js';
import { startServer } from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';

/**
 * One event, one verdict: the same bad event gets the same catalogue code whether it is published
 * as an HTTP JSON body, an NDJSON line or a WebSocket `publish`, because all three go through the
 * one event validator.
 */

let url: string;
let close: () => Promise<void>;
let server: Awaited<ReturnType<typeof startServer>>['server'];
let ws: WsClient;

beforeAll(async () => {
  ({ url, close, server } = await startServer());
  ws = await WsClient.open(wsUrl(url));
});
afterAll(async () => {
  ws.terminate();
  await close();
});

/** A JSON value nested `depth` arrays deep around `1` (depth 0 is `1` itself). */
const nested = (depth: number): string => '['.repeat(depth) + '1' + ']'.repeat(depth);

/** Raw bytes, so a body can carry anything (invalid UTF-8 included). */
function post(
  path: string,
  body: Buffer | string,
  contentType: string,
): Promise<{ status: number; json: { error?: { code: string }; events?: unknown[] } }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': contentType },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
            error?: { code: string };
          },
        }),
      );
    });
    req.end(body);
  });
}

/** The JSON text of an event object `{"type"?,"key"?,"data":<dataJson>}`. */
function eventText(e: { type?: string; key?: string; dataJson: string }): string {
  let s = '{';
  if (e.type !== undefined) s += `"type":${JSON.stringify(e.type)},`;
  if (e.key !== undefined) s += `"key":${JSON.stringify(e.key)},`;
  return `${s}"data":${e.dataJson}}`;
}

/** What each publish path answers for one event: the error code, or 'ok'. */
async function verdicts(
  topic: string,
  e: { type?: string; key?: string; dataJson: string },
): Promise<{ json: string; ndjson: string; ws: string }> {
  const text = eventText(e);
  const path = `/v1/topics/${topic}/events`;
  const j = await post(path, text, 'application/json');
  const n = await post(path, `${text}\n`, 'application/x-ndjson');
  // The WebSocket publish carries the event's members next to op, id and topic; sent as text, since
  // JSON.stringify itself overflows the stack on the deepest data.
  const id = `p-${topic}`;
  ws.send(`{"op":"publish","id":"${id}","topic":"${topic}",${text.slice(1)}`);
  const reply = (await ws.until((m) => m.some((x) => x.id === id))).find((x) => x.id === id)!;
  return {
    json: j.status === 201 ? 'ok' : `${j.status} ${j.json.error?.code}`,
    ndjson: n.status === 201 ? 'ok' : `${n.status} ${n.json.error?.code}`,
    ws: reply.op === 'ack' ? 'ok' : `${reply.error?.code}`,
  };
}

interface Case {
  name: string;
  type?: string;
  key?: string;
  dataJson: string;
  /** The code every path must answer with, or 'ok'. */
  code: string;
}

const cases: Case[] = [
  { name: 'plain event', type: 'a.b', dataJson: '{"x":[1,"é😀"]}', code: 'ok' },
  {
    name: 'data nested maxJsonDepth (64) deep',
    dataJson: nested(DEFAULT_MAX_JSON_DEPTH),
    code: 'ok',
  },
  { name: 'data nested one level too deep', dataJson: nested(65), code: 'json_too_deep' },
  { name: 'data nested 20,000 deep', dataJson: nested(20_000), code: 'json_too_deep' },
  {
    name: 'objects nested too deep',
    dataJson: '{"a":'.repeat(65) + '1' + '}'.repeat(65),
    code: 'json_too_deep',
  },
  { name: 'type with NEL (C1 control)', type: 'a\u0085b', dataJson: '1', code: 'invalid_event' },
  { name: 'type with U+009F', type: 'a\u009f', dataJson: '1', code: 'invalid_event' },
  { name: 'key with C1 control', key: 'k\u0080', dataJson: '1', code: 'invalid_event' },
  { name: 'type with a lone surrogate', type: 'a\ud800', dataJson: '1', code: 'invalid_event' },
  { name: 'key with a lone surrogate', key: '\udc00k', dataJson: '1', code: 'invalid_event' },
  { name: 'data string with a lone surrogate', dataJson: '"x\\ud800"', code: 'invalid_event' },
  {
    name: 'data member name with a lone surrogate',
    dataJson: '{"\\udfff":1}',
    code: 'invalid_event',
  },
  {
    name: 'deep data string with a lone surrogate',
    dataJson: '[{"a":["\\ud83d"]}]',
    code: 'invalid_event',
  },
  { name: 'data with __proto__', dataJson: '{"__proto__":{"x":1}}', code: 'invalid_event' },
  { name: 'deep __proto__', dataJson: '[{"a":{"__proto__":1}}]', code: 'invalid_event' },
  {
    name: 'data with constructor.prototype',
    dataJson: '{"constructor":{"prototype":{"x":1}}}',
    code: 'invalid_event',
  },
  { name: 'data with a plain constructor member', dataJson: '{"constructor":1}', code: 'ok' },
  { name: 'surrogate pair in data', dataJson: '"\\ud83d\\ude00"', code: 'ok' },
];

describe('one event validator: the same verdict on every publish path', () => {
  it.each(cases)('$name → $code', async (c) => {
    const topic = `v${cases.indexOf(c)}`;
    const v = await verdicts(topic, c);
    const want = c.code === 'ok' ? 'ok' : `400 ${c.code}`;
    expect(v).toEqual({ json: want, ndjson: want, ws: c.code });
    const h = await server.engine.head(topic);
    // Refused means nothing stored; accepted means one event per path.
    expect(h?.lastSeq ?? 0).toBe(c.code === 'ok' ? 3 : 0);
  });

  it('maxJsonDepth is a config limit every path honours', async () => {
    const s = await startServer({ limits: { maxJsonDepth: 3 } });
    const c = await WsClient.open(wsUrl(s.url));
    try {
      for (const [depth, ok] of [
        [3, true],
        [4, false],
      ] as const) {
        const body = `{"data":${nested(depth)}}`;
        const path = `${s.url}/v1/topics/d/events`;
        const j = await fetch(path, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });
        const n = await fetch(path, {
          method: 'POST',
          headers: { 'content-type': 'application/x-ndjson' },
          body,
        });
        const w = await c.request({ op: 'publish', topic: 'd', data: JSON.parse(nested(depth)) });
        expect([j.status, n.status, w.op]).toEqual(ok ? [201, 201, 'ack'] : [400, 400, 'error']);
        if (!ok) {
          const body = (await j.json()) as { error: { code: string; limit: number } };
          expect(body.error).toMatchObject({ code: 'json_too_deep', limit: 3 });
          expect(w.error).toMatchObject({ code: 'json_too_deep', limit: 3 });
        }
      }
    } finally {
      c.terminate();
      await s.close();
    }
  });
});

describe('request bodies must be UTF-8', () => {
  // 0xff never occurs in UTF-8; 0xc3 0x28 is a broken two-byte sequence; 0xed 0xa0 0x80 is an
  // encoded surrogate (CESU-8), which UTF-8 forbids.
  const bad = [Buffer.from([0xff]), Buffer.from([0xc3, 0x28]), Buffer.from([0xed, 0xa0, 0x80])];

  it.each(['application/json', 'application/x-ndjson'])(
    '%s with invalid UTF-8 is refused with invalid_json, nothing stored',
    async (contentType) => {
      for (const [i, b] of bad.entries()) {
        const topic = `utf8-${contentType.length}-${i}`;
        const body = Buffer.concat([Buffer.from('{"type":"t","data":"a'), b, Buffer.from('"}\n')]);
        const r = await post(`/v1/topics/${topic}/events`, body, contentType);
        expect(r.status).toBe(400);
        expect(r.json.error?.code).toBe('invalid_json');
        expect(await server.engine.head(topic)).toBeNull();
      }
    },
  );

  it('valid multi-byte UTF-8 is stored as sent', async () => {
    const r = await post('/v1/topics/utf8-ok/events', '{"data":"é€😀"}', 'application/json');
    expect(r.status).toBe(201);
    const page = await server.engine.read('utf8-ok', 0, 10);
    expect(page.events[0]!.data).toBe('"é€😀"');
  });
});

describe('NDJSON framing: one event, one line, for any line splitter', () => {
  /** Lines as a splitter that honours every Unicode line break (NEL, LS, PS included) sees them. */
  const unicodeLines = (text: string): string[] =>
    text.split(/\r\n|[\n\r\u0085\u2028\u2029]/).filter((l) => l !== '');

  async function readNdjson(path: string, want: number): Promise<string> {
    const ac = new AbortController();
    const res = await fetch(`${url}${path}`, { signal: ac.signal });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let text = '';
    while (text.split('\n').filter((l) => l !== '').length < want) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
    }
    ac.abort();
    return text;
  }

  it('U+0085, U+2028 and U+2029 in published data are sent escaped', async () => {
    const datas = ['a\u0085b', 'c\u2028d', 'e\u2029f', { k: '\u0085\u0085' }, 'plain'];
    const lines = datas.map((d) => JSON.stringify({ type: 'x', data: d })).join('\n');
    const r = await post('/v1/topics/nel/events', lines, 'application/x-ndjson');
    expect(r.status).toBe(201);
    await post('/v1/topics/nel/events', JSON.stringify({ data: 'g\u0085h' }), 'application/json');
    const c = await ws.request({ op: 'publish', topic: 'nel', data: 'i\u0085j' });
    expect(c.op).toBe('ack');
    const text = await readNdjson('/v1/topics/nel/stream?from=earliest&format=ndjson', 7);
    expect(unicodeLines(text)).toHaveLength(7);
    expect(text).not.toMatch(/[\u0085\u2028\u2029]/);
    const parsed = text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { data: unknown }).data);
    expect(parsed).toEqual([...datas, 'g\u0085h', 'i\u0085j']);
  });

  it('events appended through the engine API are framed on one line too', async () => {
    const datas = ['"a\u0085b"', '"c\u2028d"', '{\n  "e": "\u2029"\r\n}', '[1,\r2]'];
    await server.engine.append(
      'nel-engine',
      datas.map((data) => ({ data })),
    );
    const text = await readNdjson('/v1/topics/nel-engine/stream?from=earliest&format=ndjson', 4);
    expect(unicodeLines(text)).toHaveLength(4);
    const parsed = text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { data: unknown }).data);
    expect(parsed).toEqual(datas.map((d) => JSON.parse(d) as unknown));
  });
});
