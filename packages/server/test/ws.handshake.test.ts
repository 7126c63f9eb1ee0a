import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '@rill/testkit';
import { FrameReader, frame, rawRequest, WsClient, wsUrl } from '@rill/testkit/ws';
import { ERRORS } from '../src/model/errors.js';

let url: string;
let close: () => Promise<void>;
let watcher: WsClient;

beforeAll(async () => {
  ({ url, close } = await startServer({
    http: { allowedOrigins: ['https://app.example.com'], maxHeadersCount: 40 },
  }));
  watcher = await WsClient.open(wsUrl(url));
});
afterAll(async () => {
  watcher.terminate();
  await close();
});

/** The server keeps serving: a connected client still gets answers. */
async function stillServing(): Promise<void> {
  expect((await watcher.request({ op: 'ping' })).op).toBe('pong');
}

/** A 101 over a raw socket, then an application ping answered on it. */
async function expectUsable(r: Awaited<ReturnType<typeof rawRequest>>): Promise<void> {
  expect(r.status).toBe(101);
  const reader = new FrameReader(r.socket, r.rest);
  r.socket.write(frame(1, JSON.stringify({ op: 'ping', id: 1 })));
  await reader.until((f) => f.some((x) => x.opcode === 1));
  expect(reader.texts()).toEqual([{ op: 'pong', id: 1 }]);
  r.socket.destroy();
}

describe('WebSocket handshake', () => {
  it('selects rill.v1 when offered, accepts no subprotocol, refuses only foreign ones', async () => {
    const offered = await rawRequest(url, {
      headers: { 'Sec-WebSocket-Protocol': 'rill.auth.xyz, rill.v1' },
    });
    expect(offered.headers['sec-websocket-protocol']).toBe('rill.v1');
    await expectUsable(offered);

    const none = await rawRequest(url, { headers: { 'Sec-WebSocket-Protocol': null } });
    expect(none.headers['sec-websocket-protocol']).toBeUndefined();
    await expectUsable(none);

    const foreign = await rawRequest(url, { headers: { 'Sec-WebSocket-Protocol': 'mqtt' } });
    expect(foreign.status).toBe(400);
    expect(JSON.parse(foreign.body)).toMatchObject({ error: { code: 'invalid_parameter' } });
    await foreign.ended;

    const malformed = await rawRequest(url, { headers: { 'Sec-WebSocket-Protocol': 'rill.v1,,' } });
    expect(malformed.status).toBe(400);
    expect(JSON.parse(malformed.body).error.code).toBe('invalid_parameter');
    await stillServing();
  });

  it('allows no Origin, the same origin and listed origins; refuses others with 403', async () => {
    const host = new URL(url).host;
    await expectUsable(await rawRequest(url, { headers: { Origin: null } }));
    await expectUsable(await rawRequest(url, { headers: { Origin: `http://${host}` } }));
    await expectUsable(await rawRequest(url, { headers: { Origin: 'https://app.example.com' } }));
    for (const origin of ['https://evil.example', 'null', `http://${host}.evil.example`]) {
      const r = await rawRequest(url, { headers: { Origin: origin } });
      expect(r.status, origin).toBe(403);
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(r.body), origin).toEqual({
        error: {
          code: 'forbidden_origin',
          message: `Origin ${origin} not allowed`,
          retryable: false,
          closeCode: ERRORS.forbidden_origin.close,
        },
      });
      await r.ended;
    }
    await stillServing();

    const open = await startServer({ http: { allowedOrigins: ['*'] } });
    try {
      await expectUsable(
        await rawRequest(open.url, { headers: { Origin: 'https://evil.example' } }),
      );
    } finally {
      await open.close();
    }
  });

  it('answers a bad Sec-WebSocket-Version with 426 and the version it speaks', async () => {
    for (const v of ['8', '14', null]) {
      const r = await rawRequest(url, { headers: { 'Sec-WebSocket-Version': v } });
      expect(r.status, String(v)).toBe(426);
      expect(r.headers['sec-websocket-version']).toBe('13');
      expect(JSON.parse(r.body).error.code).toBe('upgrade_required');
      await r.ended;
    }
    // A plain GET of the endpoint is told to upgrade.
    const res = await fetch(`${url}/v1/ws`);
    expect(res.status).toBe(426);
    expect(res.headers.get('upgrade')).toBe('websocket');
    expect(res.headers.get('sec-websocket-version')).toBe('13');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upgrade_required');
    await stillServing();
  });

  it('refuses upgrades elsewhere (404), by other methods, and malformed ones, closing the socket', async () => {
    for (const path of ['/v1/stream?topics=a', '/', '/v1/wsx', '/healthz']) {
      const r = await rawRequest(url, { path });
      expect(r.status, path).toBe(404);
      expect(JSON.parse(r.body).error.code).toBe('not_found');
      await r.ended;
    }
    const post = await rawRequest(url, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(JSON.parse(post.body).error.code).toBe('method_not_allowed');
    const key = await rawRequest(url, { headers: { 'Sec-WebSocket-Key': 'short' } });
    expect(key.status).toBe(400);
    expect(JSON.parse(key.body).error.code).toBe('invalid_parameter');
    await Promise.all([post.ended, key.ended]);
    await stillServing();
  });

  it('serves requests offering another upgrade (curl --http2: h2c) as plain HTTP', async () => {
    const h2c = {
      Upgrade: 'h2c',
      Connection: 'Upgrade, HTTP2-Settings',
      'HTTP2-Settings': 'AAMAAABkAARAAAAAAAIAAAAA',
    };
    const health = await rawRequest(url, { path: '/healthz', headers: h2c });
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
    health.socket.destroy();
    const ws = await rawRequest(url, { headers: h2c });
    expect(ws.status).toBe(426);
    expect(JSON.parse(ws.body).error.code).toBe('upgrade_required');
    ws.socket.destroy();
    // A POST too (with its body: http.guard.test.ts), even to the WebSocket path: plain HTTP.
    const post = await rawRequest(url, { method: 'POST', headers: h2c });
    expect(post.status).toBe(404);
    expect(JSON.parse(post.body).error.code).toBe('not_found');
    post.socket.destroy();
    await stillServing();
  });

  it('bounds request headers: count and size answer 431', async () => {
    // 6 handshake headers + 34 = the limit of 40: fine.
    const fill = (n: number): string[] => Array.from({ length: n }, (_, i) => `X-Fill-${i}: ${i}`);
    await expectUsable(await rawRequest(url, { extraLines: fill(34) }));
    const many = await rawRequest(url, { extraLines: fill(35) });
    expect(many.status).toBe(431);
    expect(JSON.parse(many.body)).toEqual({
      error: {
        code: 'invalid_parameter',
        message: 'More than 40 request headers',
        limit: 40,
        retryable: false,
        closeCode: ERRORS.invalid_parameter.close,
      },
    });
    await many.ended;
    // Plain HTTP routes get the same answer.
    const plain = await rawRequest(url, {
      path: '/healthz',
      headers: { Upgrade: null, Connection: 'close' },
      extraLines: fill(40),
    });
    expect(plain.status).toBe(431);
    expect(JSON.parse(plain.body).error.limit).toBe(40);

    // Larger than http.maxHeaderSize (16 KiB): Node refuses with 431.
    const big = await rawRequest(url, { extraLines: [`X-Big: ${'a'.repeat(20 * 1024)}`] });
    expect(big.status).toBe(431);
    await big.ended;
    await stillServing();
  });
});
