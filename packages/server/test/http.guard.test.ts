import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { history, openSse, publish, startServer, waitFor } from '@rill/testkit';
import { rawRequest, WsClient, wsUrl } from '@rill/testkit/ws';

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Splits what a server sent into responses (each with a Content-Length or none and no body). */
function parseResponses(buf: Buffer): RawAnswer[] {
  const out: RawAnswer[] = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end === -1) return out;
    const [statusLine, ...lines] = buf.subarray(at, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 0);
    out.push({
      status: Number(statusLine!.split(' ')[1]),
      headers,
      body: buf.subarray(end + 4, end + 4 + len).toString('utf8'),
    });
    at = end + 4 + len;
  }
}

/**
 * Opens a raw connection, lets `drive` write to it, and resolves with everything the server sent
 * once it closed the connection (fails after `timeoutMs`) and how long that took.
 */
function exchange(
  url: string,
  drive: (socket: net.Socket) => void,
  timeoutMs = 10_000,
): Promise<{ answers: RawAnswer[]; ms: number; raw: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(
          `server did not close within ${timeoutMs} ms; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`,
        ),
      );
    }, timeoutMs);
    socket.on('close', () => {
      clearTimeout(timer);
      const buf = Buffer.concat(chunks);
      resolve({ answers: parseResponses(buf), ms: Date.now() - started, raw: buf.toString() });
    });
    socket.on('connect', () => drive(socket));
  });
}

const code = (a: RawAnswer | undefined): string =>
  (JSON.parse(a?.body ?? '{}') as { error?: { code: string } }).error?.code ?? '';

/** The status of `GET /healthz` sent with this `Host` header. */
function hostStatus(url: string, host: string): Promise<number> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    http
      .get({ host: u.hostname, port: u.port, path: '/healthz', headers: { host }, setHost: false })
      .on('response', (res) => {
        res.resume();
        resolve(res.statusCode!);
      })
      .on('error', reject);
  });
}

describe('Host check (DNS rebinding)', () => {
  let url: string;
  let port: number;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ url, close } = await startServer());
    port = Number(new URL(url).port);
  });
  afterAll(() => close());

  const get = (path: string, headers: Record<string, string>): Promise<RawAnswer> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path, headers, setHost: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers as never, body }),
        );
      });
      req.on('error', reject);
    });

  it('refuses a name it does not answer for with 421 host_not_allowed, on every route', async () => {
    for (const path of ['/healthz', '/v1/topics', '/v1/topics/t/stream', '/v1/events?topics=t']) {
      const r = await get(path, { host: `rebind.example:${port}` });
      expect(r.status, path).toBe(421);
      expect(JSON.parse(r.body)).toEqual({
        error: {
          code: 'host_not_allowed',
          message: `Host rebind.example:${port} is not served here (see http.allowedHosts)`,
          retryable: false,
          closeCode: 4522,
        },
      });
    }
    // A publish stores nothing.
    const raw = await exchange(url, (s) =>
      s.write(
        `POST /v1/topics/rb/events HTTP/1.1\r\nHost: rebind.example:${port}\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{"data":1}`,
      ),
    );
    expect(raw.answers.map((a) => [a.status, code(a)])).toEqual([[421, 'host_not_allowed']]);
    expect(await history(url, 'rb')).toEqual([]);
  });

  it('serves localhost, any IP address and the bound host, on any port; HTTP/1.0 without Host', async () => {
    for (const host of [
      'localhost',
      `localhost:${port}`,
      'LOCALHOST.:1',
      `127.0.0.1:${port}`,
      '127.0.0.2',
      '[::1]',
      `[::1]:${port}`,
      '192.168.7.9:8080',
      '[fe80::1]:80',
    ]) {
      const r = await get('/healthz', { host });
      expect(r.status, host).toBe(200);
    }
    for (const host of [
      'localhost.evil.example',
      'evil.localhost',
      '127.0.0.1.nip.io',
      'a/b',
      '[::1',
    ]) {
      const r = await get('/healthz', { host });
      expect(r.status, host).toBe(421);
    }
    const old = await exchange(url, (s) => s.write('GET /healthz HTTP/1.0\r\n\r\n'));
    expect(old.answers.map((a) => a.status)).toEqual([200]);
    const noHost = await exchange(url, (s) =>
      s.write('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'),
    );
    expect(noHost.answers.map((a) => [a.status, code(a)])).toEqual([[400, 'bad_request']]);
  });

  it('refuses a WebSocket handshake for another name before its Origin is compared with Host', async () => {
    // The Origin equals the Host, as for a page on a rebound name.
    const r = await rawRequest(url, {
      headers: { Host: `rebind.example:${port}`, Origin: `http://rebind.example:${port}` },
    });
    expect(r.status).toBe(421);
    expect(JSON.parse(r.body).error.code).toBe('host_not_allowed');
    await r.ended;
    const ok = await rawRequest(url, {
      headers: { Host: `localhost:${port}`, Origin: `http://localhost:${port}` },
    });
    expect(ok.status).toBe(101);
    ok.socket.destroy();
  });

  it('http.allowedHosts adds names, domains (.example.com) or any (*)', async () => {
    const s = await startServer({
      http: { allowedHosts: ['rill.example.com', '.corp.example'], allowedOrigins: [] },
    });
    const status = (host: string): Promise<number> => hostStatus(s.url, host);
    try {
      expect(await status('rill.example.com:443')).toBe(200);
      expect(await status('RILL.example.com')).toBe(200);
      expect(await status('corp.example')).toBe(200);
      expect(await status('a.b.corp.example:1')).toBe(200);
      expect(await status('example.com')).toBe(421);
      expect(await status('xcorp.example')).toBe(421);
      // WebSocket handshakes: an allowed name, same-origin.
      const ws = await rawRequest(s.url, {
        headers: { Host: 'rill.example.com', Origin: 'http://rill.example.com' },
      });
      expect(ws.status).toBe(101);
      ws.socket.destroy();
    } finally {
      await s.close();
    }
    const any = await startServer({ http: { allowedHosts: ['*'] } });
    try {
      expect(await hostStatus(any.url, 'whatever.example')).toBe(200);
      const ws = await rawRequest(any.url, { headers: { Host: 'whatever.example' } });
      expect(ws.status).toBe(101);
      ws.socket.destroy();
    } finally {
      await any.close();
    }
  });

  it('a cross-site form post (text/plain) cannot publish: 415, nothing stored', async () => {
    const r = await fetch(`${url}/v1/topics/form/events`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', origin: 'https://evil.example' },
      body: '{"data":1}',
    });
    expect(r.status).toBe(415);
    expect(await history(url, 'form')).toEqual([]);
  });
});

describe('request timeouts', () => {
  let url: string;
  let close: () => Promise<void>;
  let server: Awaited<ReturnType<typeof startServer>>['server'];
  beforeAll(async () => {
    ({ url, close, server } = await startServer({
      http: { requestTimeout: 600, headersTimeout: 300, keepAliveTimeout: 300, compression: true },
    }));
  });
  afterAll(() => close());

  /** Writes `first`, then one byte of `rest` every 50 ms until the server closes. */
  const trickle = (first: string, rest: string) => (s: net.Socket) => {
    s.write(first);
    let i = 0;
    const t = setInterval(() => {
      if (s.destroyed || i >= rest.length) return clearInterval(t);
      s.write(rest[i++]!);
    }, 50);
    s.once('close', () => clearInterval(t));
  };

  it('answers a trickled body with 408 request_timeout after http.requestTimeout, storing nothing', async () => {
    const body = JSON.stringify({ data: 'x'.repeat(200) });
    const r = await exchange(
      url,
      trickle(
        `POST /v1/topics/slowbody/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
        body,
      ),
    );
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([[408, 'request_timeout']]);
    expect(r.ms).toBeGreaterThanOrEqual(550);
    expect(r.ms).toBeLessThan(3000);
    expect(await history(url, 'slowbody')).toEqual([]);
  });

  it('answers trickled headers with 408 after http.headersTimeout', async () => {
    const r = await exchange(
      url,
      trickle('GET /healthz HTTP/1.1\r\n', 'Host: 127.0.0.1\r\nX-Slow: ' + 'a'.repeat(200)),
    );
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([[408, 'request_timeout']]);
    expect(r.ms).toBeGreaterThanOrEqual(250);
    expect(r.ms).toBeLessThan(2000);
  });

  it('answers a connection that sends nothing with 408 after http.headersTimeout', async () => {
    const r = await exchange(url, () => undefined);
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([[408, 'request_timeout']]);
    expect(r.ms).toBeLessThan(2000);
  });

  it('closes an idle keep-alive connection after http.keepAliveTimeout', async () => {
    const r = await exchange(url, (s) =>
      s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'),
    );
    expect(r.answers.map((a) => a.status)).toEqual([200]);
    expect(r.ms).toBeGreaterThanOrEqual(250);
    expect(r.ms).toBeLessThan(3000);
  });

  it('does not cut streams, long-polls or WebSockets that outlive the request timeout', async () => {
    const topic = 'longlived';
    const sse = await openSse(`${url}/v1/topics/${topic}/stream`);
    // fetch asks for gzip: this stream stays with node:http (not detached).
    const nd = await fetch(`${url}/v1/topics/${topic}/stream?format=ndjson`);
    expect(nd.headers.get('content-encoding')).toBe('gzip');
    const ndReader = nd.body!.getReader();
    let ndText = '';
    void (async () => {
      for (;;) {
        const { value, done } = await ndReader.read();
        if (done) return;
        ndText += new TextDecoder().decode(value);
      }
    })().catch(() => undefined);
    const poll = fetch(`${url}/v1/events?topics=${topic}&wait=20`).then(
      async (r) => (await r.json()) as { events: { seq: number }[] },
    );
    const ws = await WsClient.open(wsUrl(url));
    await ws.request({ op: 'subscribe', topics: [topic] });
    await waitFor(() => server.hub.size === 4);
    // A connection opened after all of them is timed out: they are all older than the timeout.
    const timedOut = await exchange(
      url,
      trickle(
        'POST /v1/topics/x/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n',
        'x'.repeat(100),
      ),
    );
    expect(timedOut.answers.map((a) => a.status)).toEqual([408]);
    expect((await publish(url, topic, { data: 'late' })).status).toBe(201);
    await sse.until(() => sse.events().length === 1);
    await ws.until(() => ws.events().length === 1);
    await waitFor(() => ndText.includes('"late"'));
    expect((await poll).events.map((e) => e.seq)).toEqual([1]);
    sse.close();
    await ndReader.cancel();
    ws.close();
  });
});

describe('bad bytes after good requests on one connection', () => {
  let url: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ url, close } = await startServer());
  });
  afterAll(() => close());

  const post = (topic: string, body: string): string =>
    `POST /v1/topics/${topic}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

  it('answers a publish followed by garbage in the same packet: 201, then 400 bad_request', async () => {
    const r = await exchange(url, (s) => s.write(post('stray', '{"data":1}') + 'GARBAGE\r\n\r\n'));
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([
      [201, ''],
      [400, 'bad_request'],
    ]);
    expect(JSON.parse(r.answers[0]!.body)).toMatchObject({ events: [{ seq: 1 }] });
    expect(await history(url, 'stray')).toEqual([1]);
  });

  it('answers every pipelined request before the error, in order', async () => {
    const r = await exchange(url, (s) =>
      s.write(
        post('stray2', '{"data":1}') +
          'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' +
          post('stray2', '[{"data":2},{"data":3}]') +
          'NOT HTTP\r\n\r\nmore garbage',
      ),
    );
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([
      [201, ''],
      [200, ''],
      [201, ''],
      [400, 'bad_request'],
    ]);
    expect(await history(url, 'stray2')).toEqual([1, 2, 3]);
  });

  it('answers an oversized head with 431 and the catalogue body', async () => {
    const r = await exchange(url, (s) =>
      s.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
    );
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([[431, 'invalid_parameter']]);
  });
});

describe('upgrades other than WebSocket, and HEAD on streams', () => {
  let url: string;
  let close: () => Promise<void>;
  let server: Awaited<ReturnType<typeof startServer>>['server'];
  beforeAll(async () => {
    ({ url, close, server } = await startServer());
  });
  afterAll(() => close());

  const h2c =
    'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n';

  it('publishes with real curl --http2 (Upgrade: h2c on a POST)', async () => {
    const { stdout } = await promisify(execFile)('curl', [
      '--http2',
      '-sS',
      '-o',
      '-',
      '-w',
      '\n%{http_code} %{http_version}',
      '-H',
      'content-type: application/json',
      '--data',
      '{"data":{"via":"curl"}}',
      `${url}/v1/topics/curl/events`,
    ]);
    const [body, status] = stdout.split('\n');
    expect(status).toBe('201 1.1');
    expect(JSON.parse(body!)).toMatchObject({ topic: 'curl', events: [{ seq: 1 }] });
    expect(await history(url, 'curl')).toEqual([1]);
  });

  it('serves h2c requests with bodies, chunked or not, in order after earlier ones, and keeps the connection', async () => {
    const chunked = '{"data":2}';
    const r = await exchange(url, (s) =>
      s.write(
        `POST /v1/topics/h2c/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"data":0}` +
          `POST /v1/topics/h2c/events HTTP/1.1\r\nHost: 127.0.0.1\r\n${h2c}Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{"data":1}` +
          `POST /v1/topics/h2c/events HTTP/1.1\r\nHost: 127.0.0.1\r\n${h2c}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunked.length.toString(16)}\r\n${chunked}\r\n0\r\n\r\n` +
          `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n${h2c}Connection: close\r\n\r\n`,
      ),
    );
    expect(r.answers.map((a) => a.status)).toEqual([201, 201, 201, 200]);
    expect(r.answers.slice(0, 3).map((a) => JSON.parse(a.body).events[0].seq)).toEqual([1, 2, 3]);
    expect(await history(url, 'h2c')).toEqual([1, 2, 3]);
  });

  it('checks an h2c request like any other (Host, body limits, routes)', async () => {
    const r = await exchange(url, (s) =>
      s.write(
        `POST /v1/topics/h2c2/events HTTP/1.1\r\nHost: rebind.example\r\n${h2c}Content-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{"data":1}`,
      ),
    );
    expect(r.answers.map((a) => [a.status, code(a)])).toEqual([[421, 'host_not_allowed']]);
    const ws = await exchange(url, (s) =>
      s.write(`POST /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n${h2c}Connection: close\r\n\r\n`),
    );
    expect(ws.answers.map((a) => [a.status, code(a)])).toEqual([[404, 'not_found']]);
  });

  it('answers HEAD on stream routes with the headers at once, without subscribing', async () => {
    for (const path of [
      '/v1/topics/headt/stream',
      '/v1/stream?topics=headt,other.>',
      '/v1/topics/headt/stream?format=ndjson',
    ]) {
      const r = await exchange(url, (s) =>
        s.write(`HEAD ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`),
      );
      expect(
        r.answers.map((a) => a.status),
        path,
      ).toEqual([200]);
      expect(r.answers[0]!.headers['content-type']).toMatch(
        path.includes('ndjson') ? /^application\/x-ndjson/ : /^text\/event-stream/,
      );
      expect(r.raw.endsWith('\r\n\r\n')).toBe(true);
      expect(server.hub.size).toBe(0);
    }
    const bad = await fetch(`${url}/v1/stream?topics=a..b`, { method: 'HEAD' });
    expect(bad.status).toBe(400);
    expect(server.hub.size).toBe(0);
  });

  it('answers HEAD on long-poll routes at once, whatever wait asks', async () => {
    const pub = await fetch(`${url}/v1/topics/headp/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(pub.status).toBe(201);
    for (const path of [
      '/v1/events?topics=headp&wait=60&from=now',
      '/v1/topics/headp/events?wait=60&after=1',
    ]) {
      // A HEAD that waited for the next event would take the whole minute: the timeout fails it.
      const r = await fetch(`${url}${path}`, {
        method: 'HEAD',
        signal: AbortSignal.timeout(10_000),
      });
      expect(r.status, path).toBe(200);
    }
    const bad = await fetch(`${url}/v1/events?topics=headp&wait=600`, { method: 'HEAD' });
    expect(bad.status).toBe(400);
  });
});
