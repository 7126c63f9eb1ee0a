import { Writable } from 'node:stream';
import { bearer, sign, SECRET } from '@rill/testkit/auth';
import { openSse, spawnServer, useCleanups } from '@rill/testkit';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createServer } from '../src/server.js';
import type { RillConfigInput } from '../src/config.js';

type Line = Record<string, unknown> & { msg?: string; reqId?: string };

/** An in-process server whose log lines (JSON) are collected in `lines`. */
async function loggedServer(
  config: RillConfigInput,
  level = 'info',
): Promise<{ url: string; lines: Line[]; close: () => Promise<void> }> {
  const lines: Line[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Line);
      done();
    },
  });
  const server = await createServer(
    { engine: 'memory', port: 0, ...config },
    { logger: pino({ level }, sink) },
  );
  const url = await server.listen();
  return { url, lines, close: () => server.close() };
}

const ended = (lines: Line[], transport: string): Line[] =>
  lines.filter((l) => l.msg === 'stream ended' && l.transport === transport);

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('stream log lines', () => {
  const { cleanups } = useCleanups();

  it('one line per stream end: id, transport, topics, duration, events, bytes and reason', async () => {
    const srv = await loggedServer({});
    let closed = false;
    cleanups.push(() => (closed ? undefined : srv.close()));
    const sse = await openSse(`${srv.url}/v1/topics/a/stream`);
    const ws = await WsClient.open(wsUrl(srv.url));
    cleanups.push(() => ws.ws.terminate());
    const sub = await ws.request({ op: 'subscribe', topics: ['a', 'b.*'] });
    const payloads = ['"x"', '{"n":"é"}', '[1,2,3]'];
    for (const data of payloads) {
      await fetch(`${srv.url}/v1/topics/a/events`, {
        method: 'POST',
        body: `{"data":${data}}`,
        headers: { 'content-type': 'application/json' },
      });
    }
    await sse.until((f) => f.length >= 3);
    await ws.until(() => ws.events(sub.sub).length >= 3);
    // The client goes away: client_closed, with what it was sent.
    sse.close();
    await until(() => ended(srv.lines, 'sse').length === 1, 'the SSE end line');
    const [sseEnd] = ended(srv.lines, 'sse');
    expect(sseEnd).toMatchObject({
      level: 30,
      component: 'http',
      topics: ['a'],
      events: 3,
      reason: 'client_closed',
    });
    expect(sseEnd!.reqId).toMatch(/^req-[0-9a-z]+$/);
    expect(sseEnd!.durationMs).toBeGreaterThanOrEqual(0);
    // Bytes: everything the client received but the stream's preamble (`retry: …`).
    const body = Buffer.byteLength(sse.body().replace(/^retry: \d+\n\n/, ''));
    expect(sseEnd!.bytes).toBe(body);
    // Shutdown ends the WebSocket: its line says so, with its totals and close code.
    await srv.close();
    closed = true;
    await until(() => ended(srv.lines, 'ws').length === 1, 'the WebSocket end line');
    const [wsEnd] = ended(srv.lines, 'ws');
    expect(wsEnd).toMatchObject({
      component: 'ws',
      topics: ['a', 'b.*'],
      events: 3,
      reason: 'shutting_down',
      closeCode: 4001,
    });
    expect(wsEnd!.reqId).toMatch(/^req-/);
    expect(wsEnd!.reqId).not.toBe(sseEnd!.reqId);
    expect(wsEnd!.bytes).toBeGreaterThan(sseEnd!.bytes as number);
  });

  it('a long-poll writes its end line at debug level', async () => {
    const srv = await loggedServer({}, 'debug');
    cleanups.push(() => srv.close());
    await fetch(`${srv.url}/v1/topics/p/events`, {
      method: 'POST',
      body: '{"data":1}',
      headers: { 'content-type': 'application/json' },
    });
    const r = await fetch(`${srv.url}/v1/events?topics=p&from=earliest&wait=0`);
    const text = await r.text();
    const line = ended(srv.lines, 'poll')[0];
    expect(line).toMatchObject({ level: 20, events: 1, reason: 'page', topics: ['p'] });
    expect(line!.bytes).toBe(
      Buffer.byteLength(JSON.parse(text).events.map(JSON.stringify).join(',')),
    );
  });

  it('log.levels sets each component its own level', async () => {
    // WebSocket lines at debug, HTTP ones only from warn: the SSE end line is not written.
    const srv = await loggedServer({ log: { levels: { ws: 'debug', http: 'warn' } } });
    cleanups.push(() => srv.close());
    const sse = await openSse(`${srv.url}/v1/topics/a/stream`);
    const ws = await WsClient.open(wsUrl(srv.url));
    await ws.request({ op: 'subscribe', topics: ['a'] });
    sse.close();
    ws.ws.close();
    await until(() => ended(srv.lines, 'ws').length === 1, 'the WebSocket end line');
    // The WebSocket's debug line came, with the connection's id.
    const wsId = ended(srv.lines, 'ws')[0]!.reqId;
    expect(srv.lines).toContainEqual(
      expect.objectContaining({ msg: 'stream opened', transport: 'ws', reqId: wsId }),
    );
    // The SSE stream ended before the WebSocket closed, yet has no line.
    await sse.ended;
    expect(ended(srv.lines, 'sse')).toEqual([]);
    expect(ended(srv.lines, 'ws')[0]).toMatchObject({ reason: 'client_closed', closeCode: 1005 });
  });
});

describe('secrets in the log', () => {
  const { track } = useCleanups();

  it('no token appears in the log at trace level: header, query, cookie, WebSocket upgrade and auth message', async () => {
    const srv = track(
      await spawnServer(['--engine', 'memory', '--port', '0', '--log-level', 'trace'], {
        RILL_AUTH__JWT__SECRET: SECRET,
        RILL_AUTH__COOKIE: 'rill_token',
      }),
    );
    const claims = { sub: 'alice', subscribe: ['>'], publish: ['>'] };
    const tokens = {
      header: await sign(claims),
      query: await sign({ ...claims, sub: 'query' }),
      cookie: await sign({ ...claims, sub: 'cookie' }),
      upgrade: await sign({ ...claims, sub: 'upgrade' }),
      message: await sign({ ...claims, sub: 'message' }),
      bad: await sign(claims, 60_000, { secret: 'another-secret-0123456789-abcdefghijklmnop' }),
      expired: await sign(claims, -5000),
    };
    const json = { 'content-type': 'application/json' };
    // Publishes and reads, good and refused.
    for (const t of [tokens.header, tokens.bad, tokens.expired]) {
      await (
        await fetch(`${srv.url}/v1/topics/s/events`, {
          method: 'POST',
          body: '{"data":1}',
          headers: { ...json, ...bearer(t) },
        })
      ).arrayBuffer();
      await (
        await fetch(`${srv.url}/v1/events?topics=s&from=earliest&wait=0`, { headers: bearer(t) })
      ).arrayBuffer();
      await (
        await fetch(`${srv.url}/v1/events?topics=s&wait=0`, {
          headers: { cookie: `rill_token=${t}` },
        })
      ).arrayBuffer();
      await (await fetch(`${srv.url}/v1/nowhere?access_token=${t}`)).arrayBuffer();
    }
    // Streams by query and cookie, ended by the client.
    for (const [path, headers] of [
      [`/v1/topics/s/stream?from=earliest&access_token=${tokens.query}`, {}],
      ['/v1/topics/s/stream?from=earliest', { cookie: `rill_token=${tokens.cookie}` }],
      [`/v1/topics/s/stream?access_token=${tokens.bad}`, {}],
    ] as const) {
      const s = await openSse(`${srv.url}${path}`, headers);
      if (s.status === 200) await s.until((f) => f.length >= 1);
      s.close();
    }
    // WebSockets: credentials at the upgrade, then in an auth message (good and bad).
    const up = await WsClient.open(`${wsUrl(srv.url)}?access_token=${tokens.upgrade}`);
    await up.request({ op: 'subscribe', topics: ['s'], from: 'earliest' });
    await up.request({ op: 'publish', topic: 's', data: 2 });
    up.ws.close();
    await up.closed;
    const later = await WsClient.open(wsUrl(srv.url));
    expect((await later.request({ op: 'auth', token: tokens.message })).op).toBe('authed');
    expect((await later.request({ op: 'auth', token: tokens.bad })).op).toBe('error');
    later.ws.close();
    await later.closed;
    const badUpgrade = await WsClient.open(`${wsUrl(srv.url)}?access_token=${tokens.bad}`);
    await badUpgrade.closed;
    const refused = await WsClient.open(wsUrl(srv.url));
    await refused.request({ op: 'auth', token: tokens.expired });
    await refused.closed;

    srv.proc.kill('SIGTERM');
    await srv.exited;
    const log = srv.stdout() + srv.stderr();
    // The run did log what it did, at debug and trace.
    expect(log).toContain('"stream ended"');
    expect(log).toContain('"level":20');
    for (const [what, token] of Object.entries(tokens)) {
      const [, payload, signature] = token.split('.');
      expect(log, what).not.toContain(token);
      expect(log, what).not.toContain(signature);
      expect(log, what).not.toContain(payload);
    }
  });
});
