/**
 * Backend hooks (hooks/, docs/protocol.md § Backend hooks) against a real HTTP backend on
 * loopback: what each transport asks (connect, subscribe, publish), what a refusal looks like on
 * each (an HTTP status and code before a stream opens, a WebSocket close or op error), the failure
 * policy when the backend hangs or is down, the signature on every call, the connect hook's `info`
 * in presence and its narrowed grants, the per-connection cache, and the metrics.
 */
import { describe, expect, it } from 'vitest';
import { openSse, startServer, useCleanups, waitFor } from '@rill/testkit';
import { authConfig, bearer, sign } from '@rill/testkit/auth';
import { HookBackend, type HookAnswer, type HookCall } from '@rill/testkit/hook-backend';
import { metric, scrape } from '@rill/testkit/metrics';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import type { RillConfigInput } from '../src/config.js';

const SECRET = 'hook-test-secret-0123456789-abcdefghijkl';

describe('backend hooks', () => {
  const { cleanups } = useCleanups();

  async function backend(decide?: (call: HookCall) => HookAnswer): Promise<HookBackend> {
    const b = await HookBackend.start(SECRET, decide);
    cleanups.push(() => b.close());
    return b;
  }

  /** A server with JWT auth whose three hooks point at `base`. */
  async function server(
    base: string,
    hooks: Record<string, unknown> = {},
    extra: RillConfigInput = {},
  ) {
    const s = await startServer({
      auth: authConfig(),
      hooks: {
        connect: { url: `${base}/connect` },
        subscribe: { url: `${base}/subscribe` },
        publish: { url: `${base}/publish` },
        secret: SECRET,
        timeout: 2_000,
        ...hooks,
      } as RillConfigInput['hooks'],
      ...extra,
    });
    cleanups.push(s.close);
    return s;
  }

  const token = (sub: string, extra: { info?: Record<string, unknown>; admin?: boolean } = {}) =>
    sign({ sub, subscribe: ['>'], publish: ['>'], ...extra });

  async function errorOf(res: Response): Promise<Record<string, unknown>> {
    return ((await res.json()) as { error: Record<string, unknown> }).error;
  }

  it('asks each hook on every transport, signed, with who and from where but never the token', async () => {
    const b = await backend();
    const s = await server(b.url);
    const alice = await token('alice', { info: { name: 'Alice' } });

    const sse = await openSse(`${s.url}/v1/topics/chat.a/stream`, bearer(alice));
    cleanups.push(() => sse.close());
    expect(sse.status).toBe(200);
    const nd = await fetch(`${s.url}/v1/stream?topics=chat.b&format=ndjson`, {
      headers: bearer(alice),
    });
    cleanups.push(() => nd.body?.cancel());
    expect(nd.status).toBe(200);
    const poll = await fetch(`${s.url}/v1/events?topics=chat.c&wait=0`, { headers: bearer(alice) });
    expect(poll.status).toBe(200);
    const pub = await fetch(`${s.url}/v1/topics/chat.a/events`, {
      method: 'POST',
      headers: { ...bearer(alice), 'content-type': 'application/json' },
      body: JSON.stringify([
        { type: 'msg', data: 'hi' },
        { type: 'msg', data: 'there' },
      ]),
    });
    expect(pub.status).toBe(201);
    const ws = await WsClient.open(wsUrl(s.url), { headers: bearer(alice) });
    cleanups.push(() => ws.terminate());
    expect((await ws.request({ op: 'subscribe', topics: ['chat.d'] })).op).toBe('subscribed');
    const ack = await ws.request({ op: 'publish', topic: 'chat.d', data: 1 });
    expect(ack.op).toBe('ack');

    // Every call signed, none carrying the token.
    expect(b.calls.length).toBeGreaterThanOrEqual(10);
    for (const c of b.calls) {
      expect(c.signed).toBe(true);
      expect(c.raw).not.toContain(alice);
      expect(c.path).toBe(`/${c.hook}`);
      expect(c.body).toMatchObject({
        hook: c.hook,
        identity: { kind: 'jwt', sub: 'alice', key: null, info: { name: 'Alice' } },
        client: { address: '127.0.0.1' },
      });
    }
    const transports = (hook: string) =>
      b.of(hook).map((c) => (c.body.client as { transport: string }).transport);
    expect(transports('connect')).toEqual(['sse', 'ndjson', 'poll', 'ws']);
    expect(transports('subscribe')).toEqual(['sse', 'ndjson', 'poll', 'ws']);
    expect(transports('publish')).toEqual(['http', 'ws']);
    expect(b.of('connect')[0]!.body.topics).toEqual(['chat.a']);
    expect(b.of('connect')[3]!.body.topics).toEqual([]);
    expect(b.of('subscribe').map((c) => c.body.topic)).toEqual([
      'chat.a',
      'chat.b',
      'chat.c',
      'chat.d',
    ]);
    expect(b.of('publish')[0]!.body).toMatchObject({
      topic: 'chat.a',
      publish: { events: 2, types: ['msg'], ephemeral: false },
    });
    expect((b.of('publish')[0]!.body.publish as { bytes: number }).bytes).toBeGreaterThan(0);
    expect(b.of('publish')[1]!.body).toMatchObject({
      topic: 'chat.d',
      publish: { events: 1, types: [], ephemeral: false },
    });
  });

  it('a refusal is hook_denied with the reason: an HTTP 403 before a stream opens, a WebSocket close or op error', async () => {
    const deny = (reason: string): HookAnswer => ({ allow: false, reason });
    const b = await backend((c) =>
      c.hook === 'connect' &&
      c.body.topics !== undefined &&
      (c.body.topics as string[]).includes('no.connect')
        ? deny('no connect here')
        : c.hook === 'subscribe' && c.body.topic === 'no.sub'
          ? deny('not your room')
          : c.hook === 'publish' && c.body.topic === 'no.pub'
            ? deny('read only')
            : { allow: true },
    );
    const s = await server(b.url);
    const bob = await token('bob');

    for (const url of [
      `${s.url}/v1/topics/no.connect/stream`,
      `${s.url}/v1/topics/no.connect/stream?format=ndjson`,
      `${s.url}/v1/events?topics=no.connect`,
    ]) {
      const res = await fetch(url, { headers: bearer(bob) });
      expect(res.status, url).toBe(403);
      expect(await errorOf(res)).toMatchObject({
        code: 'hook_denied',
        hook: 'connect',
        reason: 'no connect here',
        retryable: false,
        closeCode: 4526,
      });
    }
    for (const url of [
      `${s.url}/v1/topics/no.sub/stream`,
      `${s.url}/v1/stream?topics=ok.1,no.sub&format=ndjson`,
      `${s.url}/v1/events?topics=no.sub`,
    ]) {
      const res = await fetch(url, { headers: bearer(bob) });
      expect(res.status, url).toBe(403);
      const e = await errorOf(res);
      expect(e).toMatchObject({ code: 'hook_denied', hook: 'subscribe', topic: 'no.sub' });
      expect(e.message).toContain('not your room');
    }
    const pub = await fetch(`${s.url}/v1/topics/no.pub/events`, {
      method: 'POST',
      headers: { ...bearer(bob), 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(pub.status).toBe(403);
    expect(await errorOf(pub)).toMatchObject({
      code: 'hook_denied',
      hook: 'publish',
      reason: 'read only',
    });
    // Nothing was stored.
    const read = await fetch(`${s.url}/v1/topics/no.pub/events`, {
      headers: bearer(await token('x')),
    });
    expect(read.status).toBe(404);
    expect((await errorOf(read)).code).toBe('topic_not_found');

    // WebSocket: subscribe and publish refusals answer that op; the socket goes on.
    const ws = await WsClient.open(wsUrl(s.url), { headers: bearer(bob) });
    cleanups.push(() => ws.terminate());
    const sub = await ws.request({ op: 'subscribe', topics: ['no.sub'] });
    expect(sub).toMatchObject({ op: 'error', error: { code: 'hook_denied', closeCode: 4526 } });
    const p = await ws.request({ op: 'publish', topic: 'no.pub', data: 1 });
    expect(p).toMatchObject({ op: 'error', error: { code: 'hook_denied' } });
    expect((await ws.request({ op: 'subscribe', topics: ['ok.2'] })).op).toBe('subscribed');
    expect(ws.closeInfo).toBeNull();

    // A refused connect closes the WebSocket with 4526 after an error message, whether the
    // credentials came with the upgrade or in the first auth message.
    b.decide = (c) => (c.hook === 'connect' ? deny('banned') : { allow: true });
    const refused = await WsClient.open(wsUrl(s.url), { headers: bearer(bob) });
    expect((await refused.closed).code).toBe(4526);
    expect(refused.messages[0]).toMatchObject({
      op: 'error',
      error: { code: 'hook_denied', reason: 'banned' },
    });
    const late = await WsClient.open(wsUrl(s.url));
    late.send({ op: 'auth', id: 1, token: bob });
    expect((await late.closed).code).toBe(4526);
    expect(late.messages.find((m) => m.id === 1)).toMatchObject({
      op: 'error',
      error: { code: 'hook_denied' },
    });
  });

  it('a backend that hangs: failurePolicy deny answers 503 hook_unavailable, allow lets it through', async () => {
    const b = await backend(() => 'hang');
    const deny = await server(b.url, { timeout: 200, failurePolicy: 'deny' });
    const carol = await token('carol');
    const t0 = Date.now();
    const res = await fetch(`${deny.url}/v1/topics/t.1/stream`, { headers: bearer(carol) });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await errorOf(res)).toMatchObject({
      code: 'hook_unavailable',
      hook: 'connect',
      retryable: true,
      closeCode: 4011,
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    const pub = await fetch(`${deny.url}/v1/topics/t.1/events`, {
      method: 'POST',
      headers: { ...bearer(carol), 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(pub.status).toBe(503);
    expect((await errorOf(pub)).code).toBe('hook_unavailable');
    const ws = await WsClient.open(wsUrl(deny.url), { headers: bearer(carol) });
    expect((await ws.closed).code).toBe(4011);

    const allow = await server(b.url, { timeout: 200, failurePolicy: 'allow' });
    const sse = await openSse(`${allow.url}/v1/topics/t.1/stream`, bearer(carol));
    cleanups.push(() => sse.close());
    expect(sse.status).toBe(200);
    const ok = await fetch(`${allow.url}/v1/topics/t.1/events`, {
      method: 'POST',
      headers: { ...bearer(carol), 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(ok.status).toBe(201);
    await sse.until(() => sse.events().length === 1);
    const samples = await scrape(allow.url, bearer(await token('admin', { admin: true })));
    expect(metric(samples, 'rill_hook_calls_total', { hook: 'connect', outcome: 'timeout' })).toBe(
      1,
    );
    expect(metric(samples, 'rill_hook_calls_total', { hook: 'publish', outcome: 'timeout' })).toBe(
      1,
    );
    expect(metric(samples, 'rill_hook_duration_seconds_count', { hook: 'connect' })).toBe(1);
  });

  it('a backend that is down or answers nonsense: the failure policy decides', async () => {
    // Port 1: nothing listens there, so connecting is refused.
    const down = 'http://127.0.0.1:1';
    const deny = await server(down, { failurePolicy: 'deny' });
    const dave = await token('dave');
    const res = await fetch(`${deny.url}/v1/events?topics=x&wait=0`, { headers: bearer(dave) });
    expect(res.status).toBe(503);
    const e = await errorOf(res);
    expect(e.code).toBe('hook_unavailable');
    expect(e.message).toContain('could not be reached');

    const allow = await server(down, { failurePolicy: 'allow' });
    const ok = await fetch(`${allow.url}/v1/events?topics=x&wait=0`, { headers: bearer(dave) });
    expect(ok.status).toBe(200);

    // A 500, a body that is not a decision, and an answer past the size bound are failures too.
    const b = await backend(() => ({ status: 500 }));
    const s = await server(b.url, { failurePolicy: 'deny' });
    const q = () => fetch(`${s.url}/v1/events?topics=x&wait=0`, { headers: bearer(dave) });
    expect((await errorOf(await q())).message).toContain('answered 500');
    b.decide = () => ({ status: 200, body: '{"allowed":true}' });
    expect((await errorOf(await q())).message).toContain('not a decision');
    b.decide = () => ({ status: 200, body: `{"allow":true,"pad":"${'x'.repeat(20_000)}"}` });
    expect((await errorOf(await q())).message).toContain('larger than');
    // A 403 from the backend is a refusal, not a failure.
    b.decide = () => ({ status: 403, body: '{"reason":"go away"}' });
    const r = await q();
    expect(r.status).toBe(403);
    expect(await errorOf(r)).toMatchObject({ code: 'hook_denied', reason: 'go away' });
  });

  it("the connect hook's info is the member's info in presence, and its patterns narrow the grants", async () => {
    const b = await backend((c) =>
      c.hook === 'connect'
        ? {
            allow: true,
            info: { name: 'Erin (from the backend)', role: 'mod' },
            subscribe: ['room.*'],
          }
        : { allow: true },
    );
    const s = await server(b.url, {}, { presence: { grace: 0 } });
    const erin = await token('erin', { info: { name: 'from the token' } });
    const sse = await openSse(`${s.url}/v1/topics/room.1/stream`, bearer(erin));
    cleanups.push(() => sse.close());
    const ws = await WsClient.open(wsUrl(s.url), { headers: bearer(erin) });
    cleanups.push(() => ws.terminate());
    expect((await ws.request({ op: 'subscribe', topics: ['room.2'] })).op).toBe('subscribed');
    const presence = async (topic: string) => {
      const res = await fetch(`${s.url}/v1/topics/${topic}/presence`, { headers: bearer(erin) });
      return (await res.json()) as { members: { sub: string; info?: unknown }[] };
    };
    await waitFor(async () => (await presence('room.1')).members.length === 1);
    await waitFor(async () => (await presence('room.2')).members.length === 1);
    for (const t of ['room.1', 'room.2']) {
      expect((await presence(t)).members).toEqual([
        expect.objectContaining({
          sub: 'erin',
          info: { name: 'Erin (from the backend)', role: 'mod' },
        }),
      ]);
    }
    // The token allows everything; the backend narrowed this connection to room.*.
    const other = await ws.request({ op: 'subscribe', topics: ['news.1'] });
    expect(other).toMatchObject({ op: 'error', error: { code: 'forbidden' } });
    const narrowed = await fetch(`${s.url}/v1/topics/news.1/stream`, { headers: bearer(erin) });
    expect(narrowed.status).toBe(403);
    expect((await errorOf(narrowed)).code).toBe('forbidden');
  });

  it('the subscribe hook is asked once per topic per connection; publishes are kept for cacheTtl', async () => {
    const b = await backend();
    const s = await server(b.url);
    const frank = await token('frank');
    const ws = await WsClient.open(wsUrl(s.url), { headers: bearer(frank) });
    cleanups.push(() => ws.terminate());
    for (const topics of [['a.1'], ['a.1', 'a.2'], ['a.1'], ['a.2', 'a.*']]) {
      expect((await ws.request({ op: 'subscribe', topics })).op).toBe('subscribed');
    }
    expect(
      b
        .of('subscribe')
        .map((c) => c.body.topic)
        .sort(),
    ).toEqual(['a.*', 'a.1', 'a.2']);
    expect(b.of('subscribe').find((c) => c.body.topic === 'a.*')!.body.pattern).toBe(true);
    expect(b.of('connect')).toHaveLength(1);
    // A second connection asks again.
    const ws2 = await WsClient.open(wsUrl(s.url), { headers: bearer(frank) });
    cleanups.push(() => ws2.terminate());
    expect((await ws2.request({ op: 'subscribe', topics: ['a.1'] })).op).toBe('subscribed');
    expect(b.of('subscribe').filter((c) => c.body.topic === 'a.1')).toHaveLength(2);
    expect(b.of('connect')).toHaveLength(2);
    // Without cacheTtl every publish is asked.
    for (let i = 0; i < 3; i++) {
      expect((await ws.request({ op: 'publish', topic: 'a.1', data: i })).op).toBe('ack');
    }
    expect(b.of('publish')).toHaveLength(3);

    const cached = await server(b.url, { cacheTtl: 60_000 });
    const before = b.of('publish').length;
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${cached.url}/v1/topics/c.1/events`, {
        method: 'POST',
        headers: { ...bearer(frank), 'content-type': 'application/json' },
        body: JSON.stringify({ data: i }),
      });
      expect(res.status).toBe(201);
    }
    expect(b.of('publish').length - before).toBe(1);
    const samples = await scrape(cached.url, bearer(await token('admin', { admin: true })));
    expect(metric(samples, 'rill_hook_cached_total', { hook: 'publish' })).toBe(2);
    expect(metric(samples, 'rill_hook_calls_total', { hook: 'publish', outcome: 'allow' })).toBe(1);
  });

  it('during a secret rotation each request carries a signature the backend can check with either', async () => {
    const b = await HookBackend.start('the-old-secret-0123456789-abcdefghijklmnop');
    cleanups.push(() => b.close());
    const s = await server(b.url, {
      secret: undefined,
      secrets: [
        'the-new-secret-0123456789-abcdefghijklmnop',
        'the-old-secret-0123456789-abcdefghijklmnop',
      ],
    });
    const res = await fetch(`${s.url}/v1/events?topics=x&wait=0`, {
      headers: bearer(await token('g')),
    });
    expect(res.status).toBe(200);
    expect(b.calls.length).toBe(2);
    expect(b.calls.every((c) => c.signed)).toBe(true);
    // A backend holding neither secret would refuse them.
    const wrong = await HookBackend.start('another-secret-0123456789-abcdefghijklmnop');
    cleanups.push(() => wrong.close());
    const s2 = await server(wrong.url);
    await fetch(`${s2.url}/v1/events?topics=x&wait=0`, { headers: bearer(await token('g')) });
    expect(wrong.calls.length).toBe(2);
    expect(wrong.calls.some((c) => c.signed)).toBe(false);
  });
});
