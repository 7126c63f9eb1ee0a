import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RillServer } from '../src/server.js';
import type { HttpStreamSink } from '../src/net/http-sink.js';
import { openSse, publish, startServer, waitFor } from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';

let url: string;
let close: () => Promise<void>;
let server: RillServer;

beforeAll(async () => {
  ({ url, close, server } = await startServer({
    sse: { heartbeat: 150 },
    http: { compression: true },
  }));
});
afterAll(async () => close());

/** Reads an NDJSON response line by line through fetch's stream. */
async function ndjsonLines(
  res: Response,
  enough: (lines: string[]) => boolean,
  timeoutMs = 10_000,
): Promise<string[]> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  const lines: string[] = [];
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  try {
    while (!enough(lines)) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => undefined);
  }
  if (!enough(lines)) throw new Error(`stream ended or timed out with ${lines.length} lines`);
  return lines;
}

const eventLines = (lines: string[]): Array<Record<string, unknown>> =>
  lines.filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('NDJSON', () => {
  it('streams one event object per line with its cursor; odd payloads stay one line', async () => {
    const tricky = 'a\nb\u2028c\u2029d\r\ne';
    await publish(url, 'nd.a', [{ data: 1 }, { data: tricky }, { type: 't', data: { x: [1] } }]);
    const res = await fetch(`${url}/v1/topics/nd.a/stream?from=earliest`, {
      headers: { accept: 'application/x-ndjson' },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson; charset=utf-8');
    const lines = await ndjsonLines(res, (l) => eventLines(l).length >= 3);
    const evs = eventLines(lines);
    expect(evs.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(evs[1]!.data).toBe(tricky);
    expect(evs[2]!.type).toBe('t');
    for (const e of evs) expect(e.cursor).toBe(e.id);
    // No raw line separators on the wire: one JSON object per physical line.
    for (const l of lines) expect(l).not.toMatch(/[\u2028\u2029\r]/);
  });

  it('resumes with ?cursor= on a multi-topic stream, and sends blank-line heartbeats', async () => {
    await publish(url, 'nd.m.a', { data: 'a1' });
    await publish(url, 'nd.m.b', { data: 'b1' });
    const r1 = await fetch(`${url}/v1/stream?topics=nd.m.*&from=earliest&format=ndjson`);
    const evs1 = eventLines(await ndjsonLines(r1, (l) => eventLines(l).length >= 2));
    const cursor = String(evs1[1]!.cursor);
    expect(cursor).toContain('nd.m.a:');
    expect(cursor).toContain('nd.m.b:');
    await publish(url, 'nd.m.a', { data: 'a2' });
    const r2 = await fetch(
      `${url}/v1/stream?topics=nd.m.*&format=ndjson&cursor=${encodeURIComponent(cursor)}`,
    );
    const lines = await ndjsonLines(
      r2,
      (l) => eventLines(l).length >= 1 && l.some((x) => x === ''),
    );
    expect(eventLines(lines).map((e) => e.data)).toEqual(['a2']);
  });

  it('works through curl -N', async () => {
    await publish(url, 'nd.curl', [{ data: 1 }, { data: 2 }]);
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('curl', [
        '-sN',
        '-H',
        'accept: application/x-ndjson',
        `${url}/v1/topics/nd.curl/stream?from=earliest`,
      ]);
      let s = '';
      const timer = setTimeout(() => {
        p.kill();
        reject(new Error(`curl got: ${s}`));
      }, 10_000);
      p.stdout.on('data', (d: Buffer) => {
        s += d.toString();
        if (s.split('\n').filter((l) => l.startsWith('{')).length >= 2) {
          clearTimeout(timer);
          p.kill();
          resolve(s);
        }
      });
    });
    const evs = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { seq: number; data: number });
    expect(evs.map((e) => e.data)).toEqual([1, 2]);
  });
});

/**
 * Parses an HTTP/1.1 response with a chunked body strictly: every chunk size line must be hex,
 * every chunk must end with CRLF. Returns the status line, the decoded body so far and the bytes
 * after the last complete chunk.
 */
function parseChunked(raw: Buffer): { status: string; body: string; rest: number } {
  const headEnd = raw.indexOf('\r\n\r\n');
  if (headEnd === -1) return { status: '', body: '', rest: raw.length };
  const head = raw.subarray(0, headEnd).toString('latin1');
  expect(head).toMatch(/\r\ntransfer-encoding: chunked/i);
  let at = headEnd + 4;
  const parts: Buffer[] = [];
  for (;;) {
    const eol = raw.indexOf('\r\n', at);
    if (eol === -1) break;
    const sizeText = raw.subarray(at, eol).toString('latin1');
    expect(sizeText).toMatch(/^[0-9a-f]+$/);
    const size = parseInt(sizeText, 16);
    if (raw.length < eol + 2 + size + 2) break;
    parts.push(raw.subarray(eol + 2, eol + 2 + size));
    expect(raw.subarray(eol + 2 + size, eol + 4 + size).toString('latin1')).toBe('\r\n');
    at = eol + 4 + size;
  }
  return {
    status: head.slice(0, head.indexOf('\r\n')),
    body: Buffer.concat(parts).toString(),
    rest: raw.length - at,
  };
}

describe('chunked stream framing', () => {
  it('frames every write as a valid chunk, also for a stream pipelined behind another request', async () => {
    const topic = 'pipe.a';
    await publish(url, topic, [{ data: 'before' }]);
    const { port, hostname } = new URL(url);
    const sock = net.connect(Number(port), hostname);
    let raw = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => (raw = Buffer.concat([raw, d])));
    await new Promise<void>((resolve) => sock.once('connect', resolve));
    // Two requests in one write: the stream's response waits behind the health check's.
    sock.write(
      `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n` +
        `GET /v1/topics/${topic}/stream?from=earliest HTTP/1.1\r\nHost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`,
    );
    const second = (): ReturnType<typeof parseChunked> => {
      const i = raw.indexOf('HTTP/1.1 200', raw.indexOf('{"status":"ok"}'));
      return i === -1 ? { status: '', body: '', rest: 0 } : parseChunked(raw.subarray(i));
    };
    await waitFor(() => second().body.includes('"before"'));
    // Several events one by one and as a batch: single and coalesced writes.
    await publish(url, topic, [{ data: 'one' }]);
    await publish(url, topic, [{ data: 'two ü' }, { data: 'three' }]);
    await waitFor(() => second().body.includes('"three"'));
    sock.destroy();
    const { status, body, rest } = second();
    expect(status).toBe('HTTP/1.1 200 OK');
    expect(rest).toBe(0);
    const data = body
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map((l) => (JSON.parse(l.slice(6)) as { data: string }).data);
    expect(data).toEqual(['before', 'one', 'two ü', 'three']);
  });
});

describe('detached streams', () => {
  /** The hub's stream sinks of `topic` (white-box: whether each connection left node:http). */
  const sinksOf = (topic: string): HttpStreamSink[] =>
    [
      ...(server.hub as unknown as { subs: Set<{ sink: unknown; states: Map<string, unknown> }> })
        .subs,
    ]
      .filter((s) => s.states.has(topic))
      .map((s) => s.sink as HttpStreamSink);

  /** A raw connection holding one SSE stream of `topic`; resolves once its headers arrived. */
  async function rawStream(topic: string): Promise<{ sock: net.Socket; text: () => string }> {
    const { port, hostname } = new URL(url);
    const sock = net.connect(Number(port), hostname);
    let raw = '';
    sock.on('data', (d: Buffer) => (raw += d.toString()));
    sock.write(
      `GET /v1/topics/${topic}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`,
    );
    await waitFor(() => raw.includes('\r\n\r\n'));
    return { sock, text: () => raw };
  }

  it('leave node:http once open, keep streaming, and end when the client goes', async () => {
    const a = await rawStream('det.a');
    const b = await rawStream('det.a');
    await waitFor(() => sinksOf('det.a').length === 2);
    expect(sinksOf('det.a').map((k) => k.detached)).toEqual([true, true]);
    // Anything a client sends on a streaming connection is ignored; the stream goes on.
    a.sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await publish(url, 'det.a', [{ data: 'x1' }]);
    await waitFor(() => a.text().includes('"x1"') && b.text().includes('"x1"'));
    expect(a.text()).not.toContain('"status":"ok"');
    // A client that closes its side (FIN) and one that resets: both subscriptions go away.
    const aClosed = new Promise<void>((r) => a.sock.once('close', () => r()));
    a.sock.end();
    await aClosed;
    b.sock.destroy();
    await waitFor(() => sinksOf('det.a').length === 0);
  });

  it('end with the error frame and the last chunk, then close the connection', async () => {
    const { server: own, url: ownUrl, close: closeOwn } = await startServer({});
    const { port, hostname } = new URL(ownUrl);
    const sock = net.connect(Number(port), hostname);
    let raw = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => (raw = Buffer.concat([raw, d])));
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.write(
      'GET /v1/topics/det.b/stream HTTP/1.1\r\nHost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n',
    );
    await waitFor(() => own.hub.size === 1);
    await closeOwn();
    await closed;
    const { body, rest } = parseChunked(raw);
    expect(rest).toBe(0);
    expect(raw.subarray(raw.length - 5).toString('latin1')).toBe('0\r\n\r\n');
    expect(body).toContain('event: error');
    expect(body).toContain('"code":"shutting_down"');
  });
});

describe('long-poll', () => {
  it('answers at once when events exist after the cursor', async () => {
    await publish(url, 'lp.now', [{ data: 1 }, { data: 2 }]);
    const t0 = Date.now();
    const res = await fetch(`${url}/v1/topics/lp.now/events?after=1&wait=20`);
    const j = (await res.json()) as { events: Array<{ seq: number }> };
    expect(j.events.map((e) => e.seq)).toEqual([2]);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('waits up to `wait` seconds, and wakes within milliseconds of a publish', async () => {
    const t0 = Date.now();
    const empty = (await (await fetch(`${url}/v1/topics/lp.wait/events?wait=0.3`)).json()) as {
      events: unknown[];
    };
    expect(empty.events).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);

    // The same on a topic that exists, polled after its head.
    const first = await publish(url, 'lp.wait', { data: 'first' });
    expect(first.status).toBe(201);
    const t1 = Date.now();
    const atHead = (await (
      await fetch(`${url}/v1/topics/lp.wait/events?after=1&wait=0.3`)
    ).json()) as {
      events: unknown[];
      lastSeq: number;
    };
    expect(atHead).toMatchObject({ events: [], lastSeq: 1 });
    expect(Date.now() - t1).toBeGreaterThanOrEqual(290);

    const poll = fetch(`${url}/v1/topics/lp.wait/events?after=1&wait=20`).then(async (r) => ({
      at: Date.now(),
      body: (await r.json()) as { events: Array<{ data: string }> },
    }));
    const acked = await publish(url, 'lp.wait', { data: 'wake' });
    const ackAt = Date.now();
    expect(acked.status).toBe(201);
    const { at, body } = await poll;
    expect(body.events.map((e) => e.data)).toEqual(['wake']);
    expect(at - ackAt).toBeLessThan(200);
  });

  it('long-polls patterns with a cursor, picking up new topics', async () => {
    await publish(url, 'lpp.a', { data: 'a1' });
    const first = (await (
      await fetch(`${url}/v1/events?topics=lpp.*&from=earliest&wait=5`)
    ).json()) as { events: Array<{ data: string }>; cursor: string };
    expect(first.events.map((e) => e.data)).toEqual(['a1']);
    const next = fetch(
      `${url}/v1/events?topics=lpp.*&wait=20&cursor=${encodeURIComponent(first.cursor)}`,
    ).then(async (r) => (await r.json()) as { events: Array<{ data: string }>; cursor: string });
    await publish(url, 'lpp.b', { data: 'b1' });
    const second = await next;
    expect(second.events.map((e) => e.data)).toEqual(['b1']);
    const third = (await (
      await fetch(`${url}/v1/events?topics=lpp.*&cursor=${encodeURIComponent(second.cursor)}`)
    ).json()) as { events: unknown[] };
    expect(third.events).toEqual([]);
  });

  it('pages a backlog by limit without skipping', async () => {
    await publish(
      url,
      'lpl',
      Array.from({ length: 25 }, (_, i) => ({ data: i + 1 })),
    );
    const got: number[] = [];
    let cursor = '';
    for (let i = 0; i < 10 && got.length < 25; i++) {
      const q = cursor ? `cursor=${encodeURIComponent(cursor)}` : 'from=earliest';
      const j = (await (await fetch(`${url}/v1/events?topics=lpl&limit=10&${q}`)).json()) as {
        events: Array<{ data: number }>;
        cursor: string;
      };
      expect(j.events.length).toBeLessThanOrEqual(10);
      got.push(...j.events.map((e) => e.data));
      cursor = j.cursor;
    }
    expect(got).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
  });

  it('rejects a bad wait', async () => {
    const res = await fetch(`${url}/v1/topics/lp.now/events?wait=600`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
      'invalid_parameter',
    );
  });
});

describe('gzip', () => {
  it('compresses SSE for clients that accept it, flushed per write', async () => {
    // Raw bytes: each flush must be decodable on its own (sync flush), before the stream ends.
    const chunks: Buffer[] = [];
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http
        .get(`${url}/v1/topics/gz.a/stream`, { headers: { 'accept-encoding': 'gzip' } }, resolve)
        .on('error', reject);
    });
    expect(res.headers['content-encoding']).toBe('gzip');
    res.on('data', (c: Buffer) => chunks.push(c));
    const decoded = (): string => {
      try {
        return gunzipSync(Buffer.concat(chunks), { finishFlush: 2 /* Z_SYNC_FLUSH */ }).toString();
      } catch {
        return '';
      }
    };
    await publish(url, 'gz.a', { data: 'compressed' });
    const deadline = Date.now() + 10_000;
    while (!decoded().includes('"compressed"')) {
      if (Date.now() > deadline) throw new Error('no decodable event');
      await new Promise((r) => res.once('data', r));
    }
    // Heartbeats come through the compressor too.
    while (!decoded().includes(':\n\n')) {
      if (Date.now() > deadline) throw new Error('no heartbeat');
      await new Promise((r) => res.once('data', r));
    }
    res.destroy();
  });

  it('is not used when the client does not ask for it', async () => {
    const s = await openSse(`${url}/v1/topics/gz.b/stream`, { 'accept-encoding': 'identity' });
    expect(s.headers['content-encoding']).toBeUndefined();
    s.close();
  });

  it('decodes with curl --compressed', async () => {
    await publish(url, 'gz.curl', [{ data: 'x1' }, { data: 'x2' }]);
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('curl', [
        '-sN',
        '--compressed',
        '-H',
        'accept: application/x-ndjson',
        `${url}/v1/topics/gz.curl/stream?from=earliest`,
      ]);
      let s = '';
      const timer = setTimeout(() => {
        p.kill();
        reject(new Error(`curl got: ${s}`));
      }, 10_000);
      p.stdout.on('data', (d: Buffer) => {
        s += d.toString();
        if (s.includes('"x2"')) {
          clearTimeout(timer);
          p.kill();
          resolve(s);
        }
      });
    });
    expect(out).toContain('"x1"');
  });
});

describe('frame caches', () => {
  it('leave nothing on a stored event delivered over SSE, NDJSON, WebSocket and long-poll', async () => {
    const topic = 'fc.a';
    const streams = `${url}/v1/stream?topics=${topic},fc.b`;
    const one = `${url}/v1/topics/${topic}/stream`;
    // Single- and multi-topic streams (shared frames and per-subscriber cursors) of each
    // transport, live and, once the event is stored, replaying it from the log.
    const live = async (): Promise<{ done: () => Promise<unknown>; close: () => void }> => {
      const sse = [await openSse(one), await openSse(streams)];
      const nd = [await fetch(`${one}?format=ndjson`), await fetch(`${streams}&format=ndjson`)];
      const ws = await WsClient.open(wsUrl(url));
      await ws.request({ op: 'subscribe', topics: [topic] });
      await ws.request({ op: 'subscribe', topics: [topic, 'fc.b'] });
      return {
        done: () =>
          Promise.all([
            ...sse.map((s) => s.until(() => s.events().length >= 1)),
            ...nd.map((r) => ndjsonLines(r, (l) => eventLines(l).length >= 1)),
            ws.until((m) => m.filter((x) => x.op === 'event').length >= 2),
          ]),
        close: () => {
          for (const s of sse) s.close();
          ws.close();
        },
      };
    };
    const fromLive = await live();
    await publish(url, topic, [{ type: 'order.created', key: 'k1', data: { id: 7 } }]);
    await fromLive.done();

    const earliest = async (): Promise<void> => {
      const q = 'from=earliest';
      const sse = [await openSse(`${one}?${q}`), await openSse(`${streams}&${q}`)];
      await Promise.all(sse.map((s) => s.until(() => s.events().length >= 1)));
      for (const s of sse) s.close();
      for (const u of [`${one}?${q}&format=ndjson`, `${streams}&${q}&format=ndjson`]) {
        await ndjsonLines(await fetch(u), (l) => eventLines(l).length >= 1);
      }
      const ws = await WsClient.open(wsUrl(url));
      await ws.request({ op: 'subscribe', topics: [topic], from: 'earliest' });
      await ws.request({ op: 'subscribe', topics: [topic, 'fc.b'], from: 'earliest' });
      await ws.until((m) => m.filter((x) => x.op === 'event').length >= 2);
      ws.close();
      const page = (await (await fetch(`${url}/v1/events?topics=${topic}&${q}`)).json()) as {
        events: unknown[];
      };
      expect(page.events).toHaveLength(1);
    };
    await earliest();
    fromLive.close();

    // The memory engine hands out the very objects it stores.
    const [stored] = (await server.engine.read(topic, 0, 10)).events;
    expect(Object.keys(stored!).sort()).toEqual([
      'data',
      'epoch',
      'key',
      'seq',
      'time',
      'topic',
      'type',
    ]);
  });
});
