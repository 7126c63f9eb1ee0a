/**
 * TLS on Rill's own listener: HTTP/2 for clients that offer it (many streams on one connection,
 * which lifts the browsers' six-connections-per-origin limit on EventSource), HTTP/1.1 over TLS for
 * the rest (detached streams, WebSocket), over real sockets against in-process servers.
 */
import { spawn } from 'node:child_process';
import type { ClientHttp2Session, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import https from 'node:https';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RillServer } from '../src/server.js';
import { H2StreamSink } from '../src/net/h2-sink.js';
import { HttpStreamSink } from '../src/net/http-sink.js';
import { startServer, useCleanups, waitFor } from '@rill/testkit';
import {
  h2Connect,
  h2Request,
  openH2Sse,
  openHttpsSse,
  selfSignedCert,
  type CertFiles,
} from '@rill/testkit/tls';
import { WsClient, wsUrl } from '@rill/testkit/ws';

const { cleanups } = useCleanups();

let cert: CertFiles;
beforeAll(() => {
  cert = selfSignedCert();
});
afterAll(() => cert.remove());

async function tlsServer(
  extra: Parameters<typeof startServer>[0] = {},
): Promise<{ server: RillServer; url: string }> {
  const { server, url, close } = await startServer({
    tls: { cert: cert.cert, key: cert.key },
    // HTTP/2 sessions still finishing at shutdown get half of it.
    shutdownTimeout: 2000,
    ...extra,
  });
  cleanups.push(close);
  return { server, url };
}

async function session(url: string): Promise<ClientHttp2Session> {
  const s = await h2Connect(url);
  cleanups.push(() => void s.destroy());
  return s;
}

/** The hub's sinks of `topic` (white-box). */
function sinksOf(server: RillServer, topic: string): unknown[] {
  const subs = (
    server.hub as unknown as { subs: Set<{ sink: unknown; states: Map<string, unknown> }> }
  ).subs;
  return [...subs].filter((s) => s.states.has(topic)).map((s) => s.sink);
}

describe('TLS listener', () => {
  it('logs and returns an https:// URL', async () => {
    const { url } = await tlsServer();
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('serves SSE over HTTP/2 to curl --http2', async () => {
    const { server, url } = await tlsServer();
    const curl = spawn(
      'curl',
      [
        '--http2',
        '-k',
        '-sN',
        '-w',
        '\nhttp_version=%{http_version}\n',
        `${url}/v1/topics/c2/stream`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    cleanups.push(() => void curl.kill('SIGKILL'));
    let out = '';
    curl.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => curl.once('exit', (code) => r(code)));
    await waitFor(() => sinksOf(server, 'c2').length === 1);
    expect(sinksOf(server, 'c2')[0]).toBeInstanceOf(H2StreamSink);
    const s = await session(url);
    expect((await h2Request(s, 'POST', '/v1/topics/c2/events', { data: 'over h2' })).status).toBe(
      201,
    );
    await waitFor(() => out.includes('"data":"over h2"'));
    // The stream ends (shutdown): curl prints the protocol it used.
    await server.close();
    expect(await exited).toBe(0);
    expect(out).toContain('event: error');
    expect(out).toContain('http_version=2\n');
  });

  it('carries 20 SSE streams and a publish on one HTTP/2 session', async () => {
    const { server, url } = await tlsServer();
    const s = await session(url);
    const streams = await Promise.all(
      Array.from({ length: 20 }, (_, i) => openH2Sse(s, `/v1/stream?topics=many.${i % 4},many.x`)),
    );
    expect(streams.map((st) => st.status())).toEqual(Array(20).fill(200));
    expect(streams[0]!.headers()['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(streams[0]!.headers().connection).toBeUndefined();
    await waitFor(() => server.hub.size === 20);
    // One TCP connection for all of them.
    const conns = await new Promise<number>((r, j) =>
      server.app.server.getConnections((e, n) => (e ? j(e) : r(n))),
    );
    expect(conns).toBe(1);
    const pub = await h2Request(s, 'POST', '/v1/topics/many.x/events', [{ data: 1 }, { data: 2 }]);
    expect(pub.status).toBe(201);
    expect(JSON.parse(pub.body)).toMatchObject({
      topic: 'many.x',
      events: [{ seq: 1 }, { seq: 2 }],
    });
    await Promise.all(streams.map((st) => st.until(() => st.events().length === 2)));
    for (const st of streams) expect(st.events().map((e) => e.data)).toEqual([1, 2]);
  });

  it('serves history, topics, long-poll and NDJSON over HTTP/2', async () => {
    const { url } = await tlsServer();
    const s = await session(url);
    const poll = h2Request(s, 'GET', '/v1/events?topics=lp.a&from=earliest&wait=10');
    const nd = await new Promise<{ body: () => string; status: number }>((resolve) => {
      const req = s.request({ ':path': '/v1/topics/lp.a/stream', accept: 'application/x-ndjson' });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.once('response', (h) => resolve({ status: Number(h[':status']), body: () => body }));
    });
    expect(nd.status).toBe(200);
    expect((await h2Request(s, 'POST', '/v1/topics/lp.a/events', { data: 'p' })).status).toBe(201);
    const polled = await poll;
    expect(polled.status).toBe(200);
    expect(JSON.parse(polled.body)).toMatchObject({ events: [{ topic: 'lp.a', data: 'p' }] });
    await waitFor(() => nd.body().includes('"data":"p"'));
    const hist = await h2Request(s, 'GET', '/v1/topics/lp.a/events');
    expect(JSON.parse(hist.body)).toMatchObject({ events: [{ seq: 1, data: 'p' }] });
    const topic = await h2Request(s, 'GET', '/v1/topics/lp.a');
    expect(topic.status).toBe(200);
    const health = await h2Request(s, 'GET', '/healthz');
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
  });

  it('checks the host named in :authority', async () => {
    const { url } = await tlsServer();
    const s = await session(url);
    const bad = await h2Request(s, 'GET', '/healthz', undefined, { ':authority': 'evil.example' });
    expect(bad.status).toBe(421);
    expect(JSON.parse(bad.body)).toMatchObject({ error: { code: 'host_not_allowed' } });
    const good = await h2Request(s, 'GET', '/healthz', undefined, {
      ':authority': `localhost:${new URL(url).port}`,
    });
    expect(good.status).toBe(200);
  });

  it('answers a WebSocket GET over HTTP/2 with 426, without HTTP/1.1-only headers', async () => {
    const { url } = await tlsServer();
    const s = await session(url);
    const r = await h2Request(s, 'GET', '/v1/ws');
    expect(r.status).toBe(426);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'upgrade_required' } });
    expect(r.headers.upgrade).toBeUndefined();
    expect(r.headers['sec-websocket-version']).toBe('13');
  });

  it('does not count HTTP/2 pseudo-headers against http.maxHeadersCount', async () => {
    const { url } = await tlsServer({ http: { maxHeadersCount: 8 } });
    const s = await session(url);
    const headers = (n: number): Record<string, string> =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h${i}`, 'v']));
    // 8 headers of the client's own plus :method, :path, :scheme, :authority.
    expect((await h2Request(s, 'GET', '/healthz', undefined, headers(8))).status).toBe(200);
    expect((await h2Request(s, 'GET', '/healthz', undefined, headers(9))).status).toBe(431);
  });

  it('streams to HTTP/1.1 clients over TLS on detached connections', async () => {
    const { server, url } = await tlsServer();
    const st = await openHttpsSse(`${url}/v1/topics/h1/stream`);
    cleanups.push(st.close);
    expect(st.status()).toBe(200);
    await waitFor(() => sinksOf(server, 'h1').length === 1);
    const sink = sinksOf(server, 'h1')[0] as HttpStreamSink;
    expect(sink).toBeInstanceOf(HttpStreamSink);
    expect(sink.detached).toBe(true);
    const s = await session(url);
    await h2Request(s, 'POST', '/v1/topics/h1/events', { data: 'h1 over tls' });
    await st.until(() => st.events().length === 1);
    expect(st.events()[0]!.data).toBe('h1 over tls');
  });

  it('keeps the HTTP/1.1 bounds and answers over TLS', async () => {
    const { url } = await tlsServer({ http: { maxHeaderSize: 4096 } });
    const u = new URL(url);
    /** Sends `head` on a fresh HTTP/1.1 TLS connection; resolves with all it got until closed. */
    const exchange = (head: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const sock = tls.connect(
          { host: u.hostname, port: Number(u.port), rejectUnauthorized: false },
          () => sock.write(head),
        );
        let got = '';
        sock.setEncoding('utf8');
        sock.on('data', (d: string) => (got += d));
        sock.once('close', () => resolve(got));
        sock.once('error', reject);
      });
    const big = await exchange(
      `GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(8000)}\r\n\r\n`,
    );
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    expect(big).toContain('"code":"invalid_parameter"');
    const noHost = await exchange('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n');
    expect(noHost).toMatch(/^HTTP\/1\.1 400 /);
    expect(noHost).toContain('"code":"bad_request"');
  });

  it('serves a request offering another upgrade (h2c) over TLS as plain HTTP/1.1', async () => {
    const { url } = await tlsServer();
    const u = new URL(url);
    const answer = await new Promise<string>((resolve, reject) => {
      const sock = tls.connect(
        {
          host: u.hostname,
          port: Number(u.port),
          rejectUnauthorized: false,
          ALPNProtocols: ['http/1.1'],
        },
        () =>
          sock.write(
            'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
              'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n',
          ),
      );
      let got = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        got += d;
        if (got.includes('{"status":"ok"}')) {
          sock.destroy();
          resolve(got);
        }
      });
      sock.once('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('accepts WebSockets over wss', async () => {
    const { url } = await tlsServer();
    const client = await WsClient.open(wsUrl(url), { rejectUnauthorized: false });
    cleanups.push(() => client.terminate());
    expect(wsUrl(url)).toMatch(/^wss:/);
    await client.request({ op: 'subscribe', topics: ['wss.a'] });
    const s = await session(url);
    await h2Request(s, 'POST', '/v1/topics/wss.a/events', { data: 'secure' });
    await client.until(() => client.events().length === 1);
    expect(client.events()[0]!.data).toBe('secure');
  });

  it('answers an HTTP/2 stream that cannot start with the error as JSON and its status', async () => {
    const { url } = await tlsServer({ limits: { maxTopicsPerSubscription: 1 } });
    const s = await session(url);
    const r = await h2Request(s, 'GET', '/v1/stream?topics=two.a,two.b');
    expect(r.status).toBe(400);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'too_many_topics' } });
  });

  it('sends heartbeats on idle HTTP/2 streams, SSE and NDJSON', async () => {
    const { url } = await tlsServer({ sse: { heartbeat: 100 } });
    const s = await session(url);
    const sse = await openH2Sse(s, '/v1/topics/hb.h2/stream');
    const nd = await openH2Sse(s, '/v1/topics/hb.h2/stream?format=ndjson');
    await waitFor(() => sse.body().split(':\n\n').length > 3);
    await waitFor(() => nd.body().split('\n').length > 3);
    expect(nd.body().trim()).toBe('');
  });

  it('gzips HTTP/2 streams for clients that accept it', async () => {
    const { url } = await tlsServer({ http: { compression: true } });
    const s = await session(url);
    const req = s.request({
      ':path': '/v1/topics/gz.h2/stream',
      accept: 'text/event-stream',
      'accept-encoding': 'gzip',
    });
    const { createGunzip } = await import('node:zlib');
    const gunzip = createGunzip();
    let text = '';
    gunzip.setEncoding('utf8');
    // The session is destroyed mid-stream at the end of the test.
    gunzip.on('error', () => undefined);
    gunzip.on('data', (d: string) => (text += d));
    const headers = await new Promise<IncomingHttpHeaders>((r) => req.once('response', r));
    req.pipe(gunzip);
    expect(headers['content-encoding']).toBe('gzip');
    await waitFor(() => text.includes('retry:'));
    await h2Request(s, 'POST', '/v1/topics/gz.h2/events', { data: 'zipped' });
    await waitFor(() => text.includes('"data":"zipped"'));
  });

  it('answers an HTTP/2 publish whose body trickles past http.requestTimeout with 408, storing nothing, and keeps the session', async () => {
    const { url } = await tlsServer({
      http: { requestTimeout: 600, headersTimeout: 300, keepAliveTimeout: 5000 },
    });
    const s = await session(url);
    const body = JSON.stringify({ data: 'x'.repeat(200) });
    const req = s.request({
      ':method': 'POST',
      ':path': '/v1/topics/h2slow/events',
      'content-type': 'application/json',
      'content-length': String(body.length),
    });
    const started = Date.now();
    let sent = 0;
    // One byte every 50 ms: the whole body would take 10 s.
    const drip = setInterval(() => {
      if (sent < body.length && !req.closed) req.write(body[sent++]!);
    }, 50);
    cleanups.push(() => clearInterval(drip));
    let status = 0;
    let text = '';
    req.on('response', (h) => (status = Number(h[':status'])));
    req.setEncoding('utf8');
    req.on('data', (d: string) => (text += d));
    await new Promise<void>((r) => req.once('close', () => r()));
    const ms = Date.now() - started;
    expect(status).toBe(408);
    expect((JSON.parse(text) as { error: { code: string } }).error.code).toBe('request_timeout');
    expect(req.rstCode).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(550);
    expect(ms).toBeLessThan(3000);
    expect(sent).toBeLessThan(body.length);
    // The session stays for other requests; nothing of the trickled publish was stored.
    const hist = await h2Request(s, 'GET', '/v1/topics/h2slow/events');
    expect(hist.status).toBe(404);
    expect((await h2Request(s, 'POST', '/v1/topics/h2slow/events', { data: 1 })).status).toBe(201);
  });

  it('closes a connection whose TLS handshake does not end within http.headersTimeout', async () => {
    const { url } = await tlsServer({ http: { headersTimeout: 300 } });
    const u = new URL(url);
    const { connect } = await import('node:net');
    const raw = connect(Number(u.port), u.hostname);
    raw.on('error', () => undefined);
    cleanups.push(() => void raw.destroy());
    let got = 0;
    raw.on('data', (d: Buffer) => (got += d.length));
    // A handshake begun and never finished: the ClientHello's first bytes only.
    raw.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xf0, 0x01]));
    await new Promise<void>((r) => raw.once('close', () => r()));
    expect(got).toBe(0);
  });

  it('refuses a TLS client that does not trust the certificate, and plain HTTP', async () => {
    const { url } = await tlsServer();
    await expect(
      new Promise((resolve, reject) => https.get(url + '/healthz', resolve).on('error', reject)),
    ).rejects.toThrow(/self[- ]signed/);
    const plain = await fetch(url.replace('https:', 'http:') + '/healthz').catch((e: Error) => e);
    expect(plain).toBeInstanceOf(Error);
  });
});

describe('a slow HTTP/2 consumer', () => {
  const LIMIT = 64 * 1024;
  const PAD = 'x'.repeat(1024);

  it('stays bounded while it does not read, and gets everything from the log once it does', async () => {
    const { server, url } = await tlsServer({
      limits: { maxSubscriberBufferBytes: LIMIT },
      // The stalled stream's events come back from the log: keep them all.
      retention: { maxEvents: 100_000 },
    });
    const slowSession = await session(url);
    const slow = await openH2Sse(slowSession, '/v1/topics/slow.h2/stream?from=earliest');
    // The client stops reading: its flow-control window fills and the server's stream backs up.
    slow.req.pause();
    // A reader on the same connection: HTTP/2 flow control is per stream.
    const fast = await openH2Sse(slowSession, '/v1/topics/slow.h2/stream');
    await waitFor(() => sinksOf(server, 'slow.h2').length === 2);
    const sinks = sinksOf(server, 'slow.h2') as H2StreamSink[];
    expect(sinks.every((k) => k instanceof H2StreamSink)).toBe(true);
    /** The most bytes waiting in any subscriber's HTTP/2 stream (its writable buffer). */
    let peak = 0;
    const sample = (): void => {
      for (const k of sinks) {
        const st = (k as unknown as { stream: ServerHttp2Stream }).stream;
        peak = Math.max(peak, st.writableLength);
      }
    };
    const sampler = setInterval(sample, 5);
    cleanups.push(() => clearInterval(sampler));
    const pub = await session(url);
    const TOTAL = 4000;
    for (let n = 0; n < TOTAL; n += 100) {
      const batch = Array.from({ length: 100 }, (_, i) => ({ data: { n: n + i, pad: PAD } }));
      expect((await h2Request(pub, 'POST', '/v1/topics/slow.h2/events', batch)).status).toBe(201);
      sample();
    }
    // The reader keeps up meanwhile: the stalled stream holds up nothing, its connection included.
    await fast.until(() => fast.events().length === TOTAL, 30_000);
    sample();
    // About 4 MiB were published; the stalled stream holds at most its limit plus one write.
    expect(peak).toBeLessThan(LIMIT * 2 + 64 * 1024);
    expect(slow.events().length).toBeLessThan(TOTAL / 10);
    slow.req.resume();
    await slow.until(() => slow.events().length === TOTAL, 30_000);
    expect(slow.events().map((e) => (e.data as { n: number }).n)).toEqual(
      Array.from({ length: TOTAL }, (_, i) => i),
    );
  });
});

describe('graceful shutdown over TLS', () => {
  it('ends HTTP/2 streams with an error frame and sessions with GOAWAY, then closes', async () => {
    const { server, url } = await tlsServer();
    const s = await session(url);
    const idle = await session(url);
    let goaway = 0;
    let idleGoaway = 0;
    s.on('goaway', () => goaway++);
    idle.on('goaway', () => idleGoaway++);
    const st = await openH2Sse(s, '/v1/topics/bye/stream');
    await waitFor(() => server.hub.size === 1);
    // A connection that never completes its TLS handshake, and an idle HTTP/1.1 one over TLS.
    const u = new URL(url);
    const { connect } = await import('node:net');
    const raw = connect(Number(u.port), u.hostname);
    raw.on('error', () => undefined);
    const rawClosed = new Promise<void>((r) => raw.once('close', () => r()));
    await new Promise<void>((r) => raw.once('connect', () => r()));
    const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
    cleanups.push(() => agent.destroy());
    await new Promise<void>((resolve, reject) =>
      https
        .get(`${url}/healthz`, { agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
        .on('error', reject),
    );
    const sessionsClosed = Promise.all([
      new Promise<void>((r) => s.once('close', () => r())),
      new Promise<void>((r) => idle.once('close', () => r())),
    ]);
    await server.close();
    await sessionsClosed;
    await rawClosed;
    await st.ended;
    expect(goaway).toBe(1);
    expect(idleGoaway).toBe(1);
    const err = st.frames.find((f) => f.event === 'error');
    expect(JSON.parse(err!.data!)).toMatchObject({ code: 'shutting_down' });
  });

  it('is not held up by a client that vanishes as it begins', async () => {
    const { server, url } = await tlsServer({ sse: { heartbeat: 100 } });
    const s = await h2Connect(url);
    const a = await openH2Sse(s, '/v1/topics/gone/stream');
    const b = await openH2Sse(s, '/v1/topics/gone/stream?format=ndjson');
    // Streams that have been writing for a while (heartbeats).
    await waitFor(() => a.body().split(':\n\n').length > 3 && b.body().split('\n').length > 3);
    // Gone while the server ends its streams: what the server still has to send never leaves.
    s.destroy();
    let closed = false;
    await Promise.race([
      server.close().then(() => (closed = true)),
      new Promise((r) => setTimeout(r, 10_000)),
    ]);
    expect(closed).toBe(true);
  });
});
