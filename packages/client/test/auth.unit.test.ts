/**
 * Where each transport carries the token and what it does when the server refuses it, with a
 * scripted `fetch` and WebSocket and fake timers: `Authorization: Bearer` on SSE, long-poll,
 * publish and history (never in a URL); the `auth` op first on a WebSocket, subscribes only after
 * `authed`, a new `auth` on the same socket ahead of expiry and on `token_expiring`; after
 * `token_expired` a new token and a resume from the cursor; `unauthorized` and a fixed token's
 * expiry stop with the error.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  createClient,
  type RillEvent,
  type StateChange,
  type TransportName,
} from '../src/index.js';
import {
  errorAnswer,
  event,
  FakeWebSocket,
  fakeJwt,
  json,
  scriptedFetch,
  sseAnswer,
  sseEvent,
} from './fakes.js';

const URL_ = 'http://rill.test';

/** A token function handing out `tok-1`, `tok-2` … (or JWTs of `lifetime` ms). */
function tokens(lifetime?: number): { fn: () => Promise<string>; calls: () => number } {
  let n = 0;
  return {
    fn: async () => {
      n++;
      return lifetime === undefined
        ? `tok-${n}`
        : fakeJwt({ sub: 'alice', n, exp: (Date.now() + lifetime) / 1000 });
    },
    calls: () => n,
  };
}

const bearer = (h: Headers): string | null => h.get('authorization');

beforeEach(() => {
  vi.useFakeTimers();
  vi.spyOn(Math, 'random').mockReturnValue(0.5);
  FakeWebSocket.sockets = [];
});
afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

function subscribe(
  transport: TransportName,
  token: string | (() => Promise<string>),
  f = scriptedFetch(),
): {
  seqs: number[];
  states: StateChange[];
  sub: ReturnType<ReturnType<typeof createClient>['subscribe']>;
  f: ReturnType<typeof scriptedFetch>;
} {
  const client = createClient({
    url: URL_,
    transport,
    token,
    fetch: f.fetch,
    WebSocket: FakeWebSocket,
    backoff: { initialDelay: 100 },
  });
  const seqs: number[] = [];
  const states: StateChange[] = [];
  const sub = client.subscribe('t', {
    from: 'earliest',
    onEvent: (ev: RillEvent) => seqs.push(ev.seq),
    onState: (s) => states.push(s),
  });
  return { seqs, states, sub, f };
}

describe('SSE', () => {
  it('sends the token as Authorization: Bearer; after token_expired, a new one from the cursor', async () => {
    const { fn, calls } = tokens();
    const f = scriptedFetch();
    const first = sseAnswer();
    f.answer(() => first.response);
    const { seqs, states } = subscribe('sse', fn, f);
    await vi.advanceTimersByTimeAsync(0);
    expect(f.calls).toHaveLength(1);
    expect(bearer(f.calls[0]!.headers)).toBe('Bearer tok-1');
    first.write(sseEvent(event('t', 1)) + sseEvent(event('t', 2)));
    await vi.advanceTimersByTimeAsync(0);
    expect(seqs).toEqual([1, 2]);

    const second = sseAnswer();
    f.answer(() => second.response);
    first.write(
      'event: error\ndata: {"code":"token_expired","message":"expired","retryable":true,"closeCode":4006}\n\n',
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(states.at(-1)).toMatchObject({
      state: 'reconnecting',
      error: { code: 'token_expired' },
    });
    await vi.advanceTimersByTimeAsync(50);
    expect(f.calls).toHaveLength(2);
    expect(calls()).toBe(2);
    expect(bearer(f.calls[1]!.headers)).toBe('Bearer tok-2');
    expect(f.calls[1]!.url.searchParams.get('lastEventId')).toBe('t:e1:2');
    second.write(sseEvent(event('t', 2)) + sseEvent(event('t', 3)));
    await vi.advanceTimersByTimeAsync(0);
    expect(seqs).toEqual([1, 2, 3]);
    for (const c of f.calls) expect(c.url.search).not.toContain('tok-');
  });

  it('a 401 token_expired at connect gets a new token; a 401 unauthorized stops', async () => {
    const { fn } = tokens();
    const f = scriptedFetch();
    f.answer(() => errorAnswer(401, 'token_expired', true));
    f.answer(() => errorAnswer(401, 'unauthorized'));
    const { states, sub } = subscribe('sse', fn, f);
    await vi.advanceTimersByTimeAsync(0);
    expect(states.at(-1)).toMatchObject({ state: 'connecting', error: { code: 'token_expired' } });
    await vi.advanceTimersByTimeAsync(50);
    expect(f.calls.map((c) => bearer(c.headers))).toEqual(['Bearer tok-1', 'Bearer tok-2']);
    expect(sub.state).toBe('closed');
    expect(sub.error).toMatchObject({
      name: 'ForbiddenError',
      code: 'unauthorized',
      status: 401,
      retryable: false,
    });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(f.calls).toHaveLength(2);
  });

  it('with a fixed token, token_expired closes the subscription with that error', async () => {
    const f = scriptedFetch();
    const s = sseAnswer();
    f.answer(() => s.response);
    const { sub } = subscribe('sse', 'fixed-token' as never, f);
    await vi.advanceTimersByTimeAsync(0);
    expect(bearer(f.calls[0]!.headers)).toBe('Bearer fixed-token');
    s.write(
      'event: error\ndata: {"code":"token_expired","message":"expired","retryable":true}\n\n',
    );
    await vi.advanceTimersByTimeAsync(60_000);
    expect(f.calls).toHaveLength(1);
    expect(sub.state).toBe('closed');
    expect(sub.error).toMatchObject({ code: 'token_expired', retryable: false });
    await expect(sub[Symbol.asyncIterator]().next()).rejects.toMatchObject({
      code: 'token_expired',
    });
  });
});

describe('long-poll', () => {
  it('every poll carries the current token; a 401 token_expired continues with a new one from the cursor', async () => {
    const { fn } = tokens();
    const f = scriptedFetch();
    f.answer(() => json(200, { events: [event('t', 1)], cursor: 't:e1:1' }));
    f.answer(() => json(200, { events: [event('t', 2)], cursor: 't:e1:2' }));
    f.answer(() => errorAnswer(401, 'token_expired', true));
    f.answer(() => json(200, { events: [event('t', 3)], cursor: 't:e1:3' }));
    const { seqs } = subscribe('poll', fn, f);
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(seqs).toEqual([1, 2, 3]);
    expect(f.calls.slice(0, 4).map((c) => bearer(c.headers))).toEqual([
      'Bearer tok-1',
      'Bearer tok-1',
      'Bearer tok-1',
      'Bearer tok-2',
    ]);
    expect(f.calls[3]!.url.searchParams.get('cursor')).toBe('t:e1:2');
    for (const c of f.calls) expect(c.url.search).not.toContain('tok-');
  });
});

describe('publish and history', () => {
  const stored = (call: { body: string | undefined }): Response => {
    const evs = JSON.parse(call.body!) as Array<{ key: string }>;
    return json(201, {
      topic: 't',
      epoch: 'e1',
      events: evs.map((_e, i) => ({ seq: i + 1, id: `t:e1:${i + 1}`, time: 1, duplicate: false })),
    });
  };

  it('carry the token; a publish refused as token_expired is sent once more with a new one', async () => {
    const { fn } = tokens();
    const f = scriptedFetch();
    const client = createClient({
      url: URL_,
      token: fn,
      fetch: f.fetch,
      headers: { Authorization: 'x' },
    });
    f.answer(stored);
    f.answer(() => errorAnswer(401, 'token_expired', true));
    f.answer(stored);
    f.answer(() =>
      json(200, {
        topic: 't',
        epoch: 'e1',
        firstSeq: 1,
        lastSeq: 1,
        events: [],
        next: '',
        more: false,
      }),
    );
    await client.publish('t', 1);
    const r = await client.publish('t', 2);
    expect(r.seq).toBe(1);
    await client.history('t');
    expect(f.calls.map((c) => [c.method, bearer(c.headers)])).toEqual([
      ['POST', 'Bearer tok-1'],
      ['POST', 'Bearer tok-1'],
      ['POST', 'Bearer tok-2'],
      ['GET', 'Bearer tok-2'],
    ]);
    // The same idempotency key on the second attempt.
    expect(f.calls[2]!.body).toBe(f.calls[1]!.body);
  });

  it('with a fixed token, a token_expired publish fails at once, not retried', async () => {
    const f = scriptedFetch();
    const client = createClient({ url: URL_, token: 'fixed', fetch: f.fetch });
    f.answer(() => errorAnswer(401, 'token_expired', true));
    await expect(client.publish('t', 1)).rejects.toMatchObject({
      code: 'token_expired',
      retryable: false,
      status: 401,
    });
    expect(f.calls).toHaveLength(1);
  });
});

describe('WebSocket', () => {
  const authed = (ws: FakeWebSocket, i: number, exp: number | null = null): void => {
    const m = ws.sent[i]!;
    expect(m.op).toBe('auth');
    ws.reply({ op: 'authed', id: m.id, sub: 'alice', expiresAt: exp });
  };
  const subscribed = (ws: FakeWebSocket, cursor = 't:e1:0'): void => {
    const m = ws.sent.find((x) => x.op === 'subscribe')!;
    ws.reply({ op: 'subscribed', id: m.id, sub: 's1', cursor, exact: true, heads: {} });
  };
  const send = (ws: FakeWebSocket, seq: number): void =>
    ws.reply({ op: 'event', sub: 's1', event: event('t', seq) });

  it('authenticates first, subscribes after authed; token_expiring sends a new auth on the same socket', async () => {
    const { fn, calls } = tokens();
    const { seqs } = subscribe('ws', fn);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[0]!;
    expect(ws.url).toBe('ws://rill.test/v1/ws');
    ws.accept();
    await vi.advanceTimersByTimeAsync(0);
    expect(ws.sent).toEqual([{ op: 'auth', id: expect.any(Number), token: 'tok-1' }]);
    authed(ws, 0);
    expect(ws.ops()).toEqual(['auth', 'subscribe']);
    subscribed(ws);
    send(ws, 1);

    ws.reply({ op: 'token_expiring', expiresAt: Date.now() + 30_000 });
    await vi.advanceTimersByTimeAsync(0);
    expect(calls()).toBe(2);
    expect(ws.ops()).toEqual(['auth', 'subscribe', 'auth']);
    expect(ws.sent[2]).toMatchObject({ token: 'tok-2' });
    authed(ws, 2);
    send(ws, 2);
    expect(seqs).toEqual([1, 2]);
    expect(FakeWebSocket.sockets).toHaveLength(1);
  });

  it('subscriptions opened while authenticating wait for authed', async () => {
    const { fn } = tokens();
    const client = createClient({
      url: URL_,
      transport: 'ws',
      token: fn,
      WebSocket: FakeWebSocket,
    });
    client.subscribe('a');
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[0]!;
    ws.accept();
    client.subscribe('b');
    await vi.advanceTimersByTimeAsync(0);
    expect(ws.ops()).toEqual(['auth']);
    authed(ws, 0);
    expect(ws.sent.slice(1).map((m) => [m.op, m.topics])).toEqual([
      ['subscribe', ['a']],
      ['subscribe', ['b']],
    ]);
    client.close();
  });

  it('refreshes a JWT at 80 % of its lifetime with another auth on the open socket', async () => {
    const { fn, calls } = tokens(100_000);
    subscribe('ws', fn);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[0]!;
    ws.accept();
    await vi.advanceTimersByTimeAsync(0);
    authed(ws, 0);
    subscribed(ws);
    // The socket stays up meanwhile (it answers pings); no auth before 80 s.
    await vi.advanceTimersByTimeAsync(79_999);
    expect(ws.ops()).toEqual(['auth', 'subscribe']);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls()).toBe(2);
    const again = ws.sent.filter((m) => m.op === 'auth');
    expect(again).toHaveLength(2);
    expect(again[1]!.token).not.toBe(again[0]!.token);
    expect(FakeWebSocket.sockets).toHaveLength(1);
  });

  it('close 4006: a new socket, a new token, a subscribe from the cursor', async () => {
    const { fn } = tokens();
    const { seqs, states } = subscribe('ws', fn);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[0]!;
    ws.accept();
    await vi.advanceTimersByTimeAsync(0);
    authed(ws, 0);
    subscribed(ws);
    send(ws, 1);
    send(ws, 2);
    ws.serverClose(4006, 'token expired');
    expect(states.at(-1)).toMatchObject({
      state: 'reconnecting',
      error: { code: 'token_expired', closeCode: 4006 },
    });
    await vi.advanceTimersByTimeAsync(50);
    const ws2 = FakeWebSocket.sockets[1]!;
    ws2.accept();
    await vi.advanceTimersByTimeAsync(0);
    expect(ws2.sent).toEqual([{ op: 'auth', id: expect.any(Number), token: 'tok-2' }]);
    authed(ws2, 0);
    expect(ws2.sent[1]).toMatchObject({ op: 'subscribe', cursor: 't:e1:2' });
    subscribed(ws2, 't:e1:2');
    send(ws2, 3);
    expect(seqs).toEqual([1, 2, 3]);
  });

  it('an unauthorized answer to auth stops the subscription with that error, subscribing nothing', async () => {
    const { fn } = tokens();
    const { sub } = subscribe('ws', fn);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[0]!;
    ws.accept();
    await vi.advanceTimersByTimeAsync(0);
    ws.reply({
      op: 'error',
      id: ws.sent[0]!.id,
      error: { code: 'unauthorized', message: 'bad signature', retryable: false, closeCode: 4524 },
    });
    expect(sub.state).toBe('closed');
    expect(sub.error).toMatchObject({ name: 'ForbiddenError', code: 'unauthorized' });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ws.ops()).toEqual(['auth']);
    expect(FakeWebSocket.sockets).toHaveLength(1);
  });

  it('with a fixed token, close 4006 closes the subscription with token_expired', async () => {
    const { sub } = subscribe('ws', 'fixed' as never);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[0]!;
    ws.accept();
    await vi.advanceTimersByTimeAsync(0);
    expect(ws.sent[0]).toMatchObject({ op: 'auth', token: 'fixed' });
    authed(ws, 0);
    subscribed(ws);
    ws.reply({ op: 'token_expiring', expiresAt: Date.now() + 30_000 });
    await vi.advanceTimersByTimeAsync(0);
    expect(ws.ops()).toEqual(['auth', 'subscribe']);
    ws.serverClose(4006);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sub.error).toMatchObject({ code: 'token_expired', closeCode: 4006, retryable: false });
    expect(FakeWebSocket.sockets).toHaveLength(1);
  });

  it('without a token nothing changes: no auth op; a server without auth (unknown_op) is used as is', async () => {
    const plain = createClient({ url: URL_, transport: 'ws', WebSocket: FakeWebSocket });
    plain.subscribe('t');
    await vi.advanceTimersByTimeAsync(0);
    FakeWebSocket.sockets[0]!.accept();
    await vi.advanceTimersByTimeAsync(0);
    expect(FakeWebSocket.sockets[0]!.ops()).toEqual(['subscribe']);
    plain.close();

    subscribe('ws', tokens().fn);
    await vi.advanceTimersByTimeAsync(0);
    const ws = FakeWebSocket.sockets[1]!;
    ws.accept();
    await vi.advanceTimersByTimeAsync(0);
    ws.reply({
      op: 'error',
      id: ws.sent[0]!.id,
      error: {
        code: 'unknown_op',
        message: 'Unknown op "auth"',
        retryable: false,
        closeCode: 4516,
      },
    });
    expect(ws.ops()).toEqual(['auth', 'subscribe']);
  });
});
