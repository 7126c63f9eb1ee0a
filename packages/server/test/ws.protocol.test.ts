import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { MemoryEngine } from '../src/engine/memory.js';
import { createServer } from '../src/server.js';
import { publish, startServer, waitFor } from '@rill/testkit';
import { WsClient, wsUrl, type WsMsg } from '@rill/testkit/ws';

let url: string;
let close: () => Promise<void>;
const clients: WsClient[] = [];

async function client(u = url): Promise<WsClient> {
  const c = await WsClient.open(wsUrl(u));
  clients.push(c);
  return c;
}

beforeAll(async () => {
  ({ url, close } = await startServer({ ws: { maxSubscriptions: 3 } }));
});
afterEach(() => {
  for (const c of clients.splice(0)) c.terminate();
});
afterAll(async () => close());

/** Events per topic must be contiguous seqs in order. */
function assertOrdered(events: Array<{ topic: string; seq: number }>): void {
  const last = new Map<string, number>();
  for (const e of events) {
    const prev = last.get(e.topic) ?? e.seq - 1;
    expect(e.seq, `${e.topic} after ${prev}`).toBe(prev + 1);
    last.set(e.topic, e.seq);
  }
}

describe('WebSocket protocol', () => {
  it('subscribes to plain and pattern topics, publishes with acks, delivers in order', async () => {
    const sub = await client();
    const pub = await client();
    expect(sub.ws.protocol).toBe('rill.v1');
    const ok = await sub.request({ op: 'subscribe', topics: ['p1.orders', 'p1.prices.*'] });
    expect(ok).toMatchObject({ op: 'subscribed', sub: 's1', exact: true });
    expect(typeof ok.cursor).toBe('string');
    const single = await sub.request({ op: 'subscribe', topics: ['p1.orders'] });
    expect(single.sub).toBe('s2');

    const topics = ['p1.orders', 'p1.prices.BTC', 'p1.prices.ETH', 'p1.other', 'p1.prices.a.b'];
    const acks: WsMsg[] = [];
    for (let i = 0; i < 40; i++) {
      const topic = topics[i % topics.length]!;
      pub.send({ op: 'publish', id: i, topic, type: 'tick', data: { i, topic } });
    }
    await pub.until((m) => m.filter((x) => x.op === 'ack').length === 40, 10_000, '40 acks');
    acks.push(...pub.messages.filter((x) => x.op === 'ack'));
    for (const a of acks) {
      const i = a.id as number;
      expect(a.topic).toBe(topics[i % topics.length]);
      expect(a.seq).toBe(Math.floor(i / topics.length) + 1);
      expect(a.duplicate).toBe(false);
      expect(a.eventId).toMatch(
        new RegExp(`^${String(a.topic).replace(/\./g, '\\.')}:[A-Za-z0-9]+:${a.seq}$`),
      );
    }

    // 3 matching topics × 8 events on s1, 8 on s2.
    await sub.until((m) => m.filter((x) => x.op === 'event').length === 32, 10_000, '32 events');
    const multi = sub.events('s1');
    expect(multi).toHaveLength(24);
    expect(new Set(multi.map((e) => e.topic))).toEqual(
      new Set(['p1.orders', 'p1.prices.BTC', 'p1.prices.ETH']),
    );
    assertOrdered(multi);
    for (const e of multi) {
      expect(e.type).toBe('tick');
      expect((e.data as { topic: string }).topic).toBe(e.topic);
      // A multi-topic subscription's events carry the composite cursor.
      expect(e.cursor).toContain(`${e.topic}:`);
    }
    const one = sub.events('s2');
    expect(one.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(one.every((e) => e.cursor === undefined)).toBe(true);

    // Idempotent publish: the same key returns the original seq.
    const first = await pub.request({ op: 'publish', topic: 'p1.keys', key: 'k1', data: 1 });
    const again = await pub.request({ op: 'publish', topic: 'p1.keys', key: 'k1', data: 2 });
    expect(first).toMatchObject({ op: 'ack', seq: 1, duplicate: false });
    expect(again).toMatchObject({ op: 'ack', seq: 1, duplicate: true, eventId: first.eventId });
  });

  it('reports heads and exactness, resumes from a cursor, resets on a foreign epoch', async () => {
    await publish(url, 'p2.r', [{ data: 1 }, { data: 2 }, { data: 3 }, { data: 4 }, { data: 5 }]);
    const c = await client();
    const s = await c.request({ op: 'subscribe', topics: ['p2.r', 'p2.none'], from: 'earliest' });
    const heads = s.heads as Record<string, { epoch: string; firstSeq: number; lastSeq: number }>;
    expect(Object.keys(heads)).toEqual(['p2.r']);
    expect(heads['p2.r']).toMatchObject({ firstSeq: 1, lastSeq: 5 });
    const epoch = heads['p2.r']!.epoch;
    expect(s.exact).toBe(true);
    // From the start: the start cursor points before seq 1; the absent topic rides a watermark.
    expect(s.cursor).toMatch(new RegExp(`^p2\\.r:${epoch}:0,@0$`));
    await c.until((m) => m.filter((x) => x.op === 'event').length === 5);
    const cursor = c.resumeCursor(s.sub!)!;
    expect(cursor.startsWith(`p2.r:${epoch}:5`)).toBe(true);

    const un = await c.request({ op: 'unsubscribe', sub: s.sub });
    expect(un).toMatchObject({ op: 'unsubscribed', sub: s.sub });
    await publish(url, 'p2.r', [{ data: 6 }, { data: 7 }, { data: 8 }]);
    await publish(url, 'p2.none', [{ data: 'n1' }]);

    const c2 = await client();
    const r = await c2.request({ op: 'subscribe', topics: ['p2.r', 'p2.none'], cursor });
    expect(r.exact).toBe(true);
    await c2.until((m) => m.filter((x) => x.op === 'event').length === 4);
    expect(
      c2
        .events()
        .map((e) => `${e.topic}/${e.seq}`)
        .sort(),
    ).toEqual(['p2.none/1', 'p2.r/6', 'p2.r/7', 'p2.r/8']);

    // A cursor from another epoch is not trusted: exact is false and a reset notice says why.
    const c3 = await client();
    const bad = await c3.request({
      op: 'subscribe',
      topics: ['p2.r'],
      cursor: 'p2.r:OtherEpoch1:3',
    });
    expect(bad.exact).toBe(false);
    const msgs = await c3.until((m) => m.filter((x) => x.op === 'event').length === 8);
    const reset = msgs.find((x) => x.op === 'reset')!;
    expect(reset).toMatchObject({
      sub: bad.sub,
      topic: 'p2.r',
      reason: 'epoch',
      epoch,
      cursorEpoch: 'OtherEpoch1',
      cursor: `p2.r:${epoch}:0`,
    });
    // The notice precedes the replay of the new epoch from its start.
    expect(msgs.indexOf(reset)).toBeLessThan(msgs.findIndex((x) => x.op === 'event'));

    // A cursor past the head is not exact either.
    const c4 = await client();
    const ahead = await c4.request({
      op: 'subscribe',
      topics: ['p2.r'],
      cursor: `p2.r:${epoch}:99`,
    });
    expect(ahead.exact).toBe(false);
    await c4.until((m) => m.some((x) => x.op === 'reset' && x.reason === 'ahead'));
  });

  it('unsubscribe stops delivery; unknown subs and a pending one are answered', async () => {
    const c = await client();
    const s = await c.request({ op: 'subscribe', topics: ['p3.t'] });
    await publish(url, 'p3.t', { data: 1 });
    await c.until((m) => m.some((x) => x.op === 'event'));
    expect(await c.request({ op: 'unsubscribe', sub: s.sub })).toMatchObject({
      op: 'unsubscribed',
    });
    const missing = await c.request({ op: 'unsubscribe', sub: s.sub });
    expect(missing).toMatchObject({
      op: 'error',
      error: { code: 'subscription_not_found', retryable: false, closeCode: 4517 },
    });
    // Subscribe and unsubscribe back to back (the server names subs s1, s2, …): answered in order.
    c.send({ op: 'subscribe', id: 'a', topics: ['p3.t'] });
    c.send({ op: 'unsubscribe', id: 'b', sub: 's2' });
    const msgs = await c.until((m) => m.some((x) => x.id === 'b'));
    const ia = msgs.findIndex((x) => x.id === 'a');
    const ib = msgs.findIndex((x) => x.id === 'b');
    expect(msgs[ia]).toMatchObject({ op: 'subscribed', sub: 's2' });
    expect(msgs[ib]).toMatchObject({ op: 'unsubscribed', sub: 's2' });
    expect(ia).toBeLessThan(ib);
    const before = c.messages.length;
    await publish(url, 'p3.t', { data: 2 });
    // Proof of no delivery: a later reply on the same socket arrives with nothing before it.
    await c.request({ op: 'ping' });
    expect(c.messages.slice(before).map((m) => m.op)).toEqual(['pong']);
  });

  it('answers pings and caps subscriptions per socket without closing it', async () => {
    const c = await client();
    expect(await c.request({ op: 'ping', id: 'x' })).toEqual({ op: 'pong', id: 'x' });
    for (let i = 0; i < 3; i++) {
      expect((await c.request({ op: 'subscribe', topics: [`p4.t${i}`] })).op).toBe('subscribed');
    }
    const over = await c.request({ op: 'subscribe', topics: ['p4.t9'] });
    expect(over).toMatchObject({
      op: 'error',
      error: { code: 'too_many_subscriptions', limit: 3, closeCode: 4518, retryable: false },
    });
    await publish(url, 'p4.t2', { data: 'still here' });
    await c.until((m) => m.some((x) => x.op === 'event' && x.event!.topic === 'p4.t2'));
    // Unsubscribing frees a slot.
    await c.request({ op: 'unsubscribe', sub: 's1' });
    expect((await c.request({ op: 'subscribe', topics: ['p4.t9'] })).op).toBe('subscribed');
  });

  it('answers every bad message with an error and keeps the socket and its subscriptions', async () => {
    const watcher = await client();
    await watcher.request({ op: 'subscribe', topics: ['p5.live'] });
    const c = await client();
    const own = await c.request({ op: 'subscribe', topics: ['p5.live'] });

    const bigData = 'x'.repeat(70 * 1024);
    const cases: Array<[string, unknown, string, (string | number)?]> = [
      ['not JSON', '{"op":', 'invalid_message'],
      ['an array', '[1,2]', 'invalid_message'],
      ['a string', '"ping"', 'invalid_message'],
      ['null', 'null', 'invalid_message'],
      ['no op', { id: 'e1' }, 'invalid_message', 'e1'],
      ['op not a string', { op: 5, id: 'e2' }, 'invalid_message', 'e2'],
      ['unknown op', { op: 'dance', id: 'e3' }, 'unknown_op', 'e3'],
      ['no id', { op: 'ping' }, 'invalid_message'],
      ['object id', { op: 'ping', id: { a: 1 } }, 'invalid_message'],
      ['unknown field', { op: 'ping', id: 'e4', extra: 1 }, 'invalid_message', 'e4'],
      ['subscribe without topics', { op: 'subscribe', id: 'e5' }, 'invalid_message', 'e5'],
      ['topics not an array', { op: 'subscribe', id: 'e6', topics: 'a' }, 'invalid_message', 'e6'],
      ['empty topics', { op: 'subscribe', id: 'e7', topics: [] }, 'invalid_parameter', 'e7'],
      ['bad topic', { op: 'subscribe', id: 'e8', topics: ['a..b'] }, 'invalid_pattern', 'e8'],
      ['bad pattern', { op: 'subscribe', id: 'e9', topics: ['a.>.b'] }, 'invalid_pattern', 'e9'],
      [
        'too many patterns',
        { op: 'subscribe', id: 'e10', topics: Array.from({ length: 101 }, (_, i) => `t${i}`) },
        'too_many_topics',
        'e10',
      ],
      [
        'bad from',
        { op: 'subscribe', id: 'e11', topics: ['a'], from: 'later' },
        'invalid_parameter',
        'e11',
      ],
      [
        'bad since',
        { op: 'subscribe', id: 'e12', topics: ['a'], since: 'x' },
        'invalid_parameter',
        'e12',
      ],
      [
        'bad cursor',
        { op: 'subscribe', id: 'e13', topics: ['a'], cursor: 'nope' },
        'invalid_cursor',
        'e13',
      ],
      [
        'cursor not a string',
        { op: 'subscribe', id: 'e14', topics: ['a'], cursor: 1 },
        'invalid_message',
        'e14',
      ],
      ['unsubscribe without sub', { op: 'unsubscribe', id: 'e15' }, 'invalid_message', 'e15'],
      ['publish without topic', { op: 'publish', id: 'e16', data: 1 }, 'invalid_message', 'e16'],
      [
        'publish bad topic',
        { op: 'publish', id: 'e17', topic: 'a b', data: 1 },
        'invalid_topic',
        'e17',
      ],
      [
        'publish a pattern',
        { op: 'publish', id: 'e18', topic: 'a.*', data: 1 },
        'invalid_topic',
        'e18',
      ],
      ['publish without data', { op: 'publish', id: 'e19', topic: 'p5.x' }, 'invalid_event', 'e19'],
      [
        'reserved type',
        { op: 'publish', id: 'e20', topic: 'p5.x', type: 'reset', data: 1 },
        'invalid_event',
        'e20',
      ],
      [
        'bad key',
        { op: 'publish', id: 'e21', topic: 'p5.x', key: '', data: 1 },
        'invalid_event',
        'e21',
      ],
      [
        'event too large',
        { op: 'publish', id: 'e22', topic: 'p5.x', data: bigData },
        'event_too_large',
        'e22',
      ],
      [
        'data nested too deeply',
        `{"op":"publish","id":"e23","topic":"p5.x","data":${'['.repeat(200_000)}${']'.repeat(200_000)}}`,
        'json_too_deep',
        'e23',
      ],
    ];
    for (const [what, payload, code, id] of cases) {
      const before = c.messages.length;
      c.send(payload);
      // Every bad message gets exactly one reply; a ping after it proves the order and the socket.
      const pong = await c.request({ op: 'ping' });
      const replies = c.messages.slice(before).filter((m) => m !== pong);
      expect(replies, what).toHaveLength(1);
      const r = replies[0]!;
      expect(r.op, what).toBe('error');
      expect(r.error!.code, what).toBe(code);
      expect(typeof r.error!.message, what).toBe('string');
      expect(r.error!.closeCode, what).toBeGreaterThanOrEqual(4500);
      if (id === undefined) expect(r.id, what).toBeUndefined();
      else expect(r.id, what).toBe(id);
    }
    // A binary frame is refused the same way.
    c.ws.send(Buffer.from([1, 2, 3]));
    await c.until((m) => m.some((x) => x.op === 'error' && /Binary/.test(x.error!.message)));
    expect(c.closeInfo).toBeNull();
    expect(c.messages.filter((m) => m.op === 'ack')).toHaveLength(0);

    // Both the misbehaving client's subscription and another client still receive.
    await publish(url, 'p5.live', { data: 'after' });
    await c.until((m) => m.some((x) => x.op === 'event' && x.sub === own.sub));
    await watcher.until((m) => m.some((x) => x.op === 'event'));
  });

  it('ends a failing subscription alone: the socket and its other subscriptions stay', async () => {
    const s = await startServer({ limits: { maxTopicsPerSubscription: 2 } });
    try {
      const c = await WsClient.open(wsUrl(s.url));
      clients.push(c);
      const wide = await c.request({ op: 'subscribe', topics: ['p6.g.*'] });
      const narrow = await c.request({ op: 'subscribe', topics: ['p6.h'] });
      for (const t of ['p6.g.a', 'p6.g.b', 'p6.g.c']) await publish(s.url, t, { data: t });
      const msgs = await c.until((m) => m.some((x) => x.op === 'error'));
      const err = msgs.find((x) => x.op === 'error')!;
      expect(err).toMatchObject({ sub: wide.sub, error: { code: 'too_many_topics' } });
      expect(err.id).toBeUndefined();
      await publish(s.url, 'p6.h', { data: 'h' });
      await c.until((m) => m.some((x) => x.op === 'event' && x.sub === narrow.sub));
      expect(c.closeInfo).toBeNull();
      // The failed subscription is gone: unsubscribing it is an error.
      const gone = await c.request({ op: 'unsubscribe', sub: wide.sub });
      expect(gone.error?.code).toBe('subscription_not_found');
    } finally {
      await s.close();
    }
  });

  it('answers a publish the engine cannot store with engine_unavailable, never an ack', async () => {
    const engine = new MemoryEngine();
    let failing = false;
    const append = engine.append.bind(engine);
    engine.append = (topic, events) =>
      failing ? Promise.reject(new Error('disk on fire')) : append(topic, events);
    const server = await createServer(
      { engine: 'memory', port: 0, logLevel: 'silent' },
      { engine, logger: pino({ level: 'silent' }) },
    );
    const u = await server.listen();
    try {
      const c = await WsClient.open(wsUrl(u));
      clients.push(c);
      expect((await c.request({ op: 'publish', topic: 'p7', data: 1 })).op).toBe('ack');
      failing = true;
      const r = await c.request({ op: 'publish', topic: 'p7', data: 2 });
      expect(r).toMatchObject({
        op: 'error',
        error: { code: 'engine_unavailable', retryable: true, closeCode: 4000 },
      });
      failing = false;
      expect(await c.request({ op: 'publish', topic: 'p7', data: 3 })).toMatchObject({
        op: 'ack',
        seq: 2,
      });
    } finally {
      await server.close();
    }
  });

  it('sends subscribed before any event of the subscription, even with a slow engine', async () => {
    // The hub's own head read of a topic is fast; any later one (the subscribe reply's) is slow,
    // so the replay of the log is ready to go out long before the reply is.
    const engine = new MemoryEngine();
    const head = engine.head.bind(engine);
    const reads = new Map<string, number>();
    engine.head = async (topic) => {
      const n = (reads.get(topic) ?? 0) + 1;
      reads.set(topic, n);
      if (n > 1) await new Promise((resolve) => setTimeout(resolve, 200));
      return head(topic);
    };
    const server = await createServer(
      { engine: 'memory', port: 0, logLevel: 'silent' },
      { engine, logger: pino({ level: 'silent' }) },
    );
    const u = await server.listen();
    try {
      await engine.append('p9.a', [{ data: '1' }, { data: '2' }, { data: '3' }]);
      reads.clear();
      const c = await WsClient.open(wsUrl(u));
      clients.push(c);
      // since=0 replays without another head read of its own.
      const s = await c.request({ op: 'subscribe', topics: ['p9.*'], since: 0 });
      const msgs = await c.until((m) => m.filter((x) => x.op === 'event').length === 3);
      expect(msgs[0]).toBe(s);
      expect(msgs.slice(1).map((m) => m.event!.seq)).toEqual([1, 2, 3]);
      expect(reads.get('p9.a')).toBe(2);
    } finally {
      await server.close();
    }
  });

  it('ends the subscriptions of a socket that goes away', async () => {
    const s = await startServer();
    try {
      const c = await WsClient.open(wsUrl(s.url));
      await c.request({ op: 'subscribe', topics: ['p10.a'] });
      await c.request({ op: 'subscribe', topics: ['p10.*', 'p10.b'] });
      expect(s.server.hub.size).toBe(2);
      c.terminate();
      await waitFor(() => s.server.hub.size === 0 && s.server.hub.channelCount === 0, 5000);
    } finally {
      await s.close();
    }
  });

  it('closes every socket with 4001 on shutdown', async () => {
    const s = await startServer();
    const c = await WsClient.open(wsUrl(s.url));
    clients.push(c);
    const sub = await c.request({ op: 'subscribe', topics: ['p8'] });
    expect(sub.op).toBe('subscribed');
    await s.close();
    const closed = await c.closed;
    expect(closed).toEqual({ code: 4001, reason: 'shutting_down' });
  });
});
