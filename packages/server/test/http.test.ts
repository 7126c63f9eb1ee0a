import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeCursor } from '../src/model/cursor.js';
import { openSse, publish, startServer, type SseStream } from '@rill/testkit';

let url: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ url, close } = await startServer({
    sse: { heartbeat: 200, retry: 1500 },
    retention: { maxEvents: 1000, rules: [{ pattern: 'short.>', maxEvents: 5 }] },
  }));
});
afterAll(async () => close());

const seqs = (s: SseStream, topic?: string): number[] =>
  s
    .events()
    .filter((e) => topic === undefined || e.topic === topic)
    .map((e) => e.seq);

describe('publish', () => {
  it('accepts one event, an array, and NDJSON, answering 201 with seq and id', async () => {
    const one = await publish(url, 'orders', { type: 'order.created', data: { n: 1 } });
    expect(one.status).toBe(201);
    const events = one.json.events as Array<{ seq: number; id: string; duplicate: boolean }>;
    expect(events).toHaveLength(1);
    expect(events[0]!.seq).toBe(1);
    expect(events[0]!.id).toBe(`orders:${String(one.json.epoch)}:1`);
    expect(events[0]!.duplicate).toBe(false);

    const many = await publish(url, 'orders', [{ data: 2 }, { data: 'three' }]);
    expect(many.status).toBe(201);
    expect((many.json.events as Array<{ seq: number }>).map((e) => e.seq)).toEqual([2, 3]);

    const res = await fetch(`${url}/v1/topics/orders/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: '{"data":4}\n\n{"data":{"five":5},"key":"k5"}\n',
    });
    expect(res.status).toBe(201);
    const j = (await res.json()) as { events: Array<{ seq: number }> };
    expect(j.events.map((e) => e.seq)).toEqual([4, 5]);
  });

  it('dedupes by key and by Idempotency-Key header', async () => {
    const a = await publish(url, 'idem', { key: 'abc', data: 1 });
    const b = await publish(url, 'idem', { key: 'abc', data: 1 });
    const ea = (a.json.events as Array<{ seq: number; duplicate: boolean }>)[0]!;
    const eb = (b.json.events as Array<{ seq: number; duplicate: boolean }>)[0]!;
    expect(eb.seq).toBe(ea.seq);
    expect(eb.duplicate).toBe(true);
    const c = await publish(url, 'idem', { data: 2 }, { 'idempotency-key': 'hdr-1' });
    const d = await publish(url, 'idem', { data: 2 }, { 'idempotency-key': 'hdr-1' });
    expect((d.json.events as Array<{ seq: number }>)[0]!.seq).toBe(
      (c.json.events as Array<{ seq: number }>)[0]!.seq,
    );
    const page = (await (await fetch(`${url}/v1/topics/idem/events`)).json()) as {
      events: unknown[];
    };
    expect(page.events).toHaveLength(2);
  });
});

describe('history and topics', () => {
  it('pages history in seq order', async () => {
    await publish(
      url,
      'hist',
      Array.from({ length: 25 }, (_, i) => ({ data: i + 1 })),
    );
    const p1 = (await (await fetch(`${url}/v1/topics/hist/events?limit=10`)).json()) as {
      events: Array<{ seq: number; data: number }>;
      next: number;
      more: boolean;
    };
    expect(p1.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(p1.events.map((e) => e.data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(p1.more).toBe(true);
    const p3 = (await (await fetch(`${url}/v1/topics/hist/events?after=20&limit=10`)).json()) as {
      events: Array<{ seq: number }>;
      more: boolean;
      next: number;
    };
    expect(p3.events.map((e) => e.seq)).toEqual([21, 22, 23, 24, 25]);
    expect(p3.more).toBe(false);
    expect(p3.next).toBe(25);
  });

  it('lists topics with head, count, epoch and rate', async () => {
    await publish(url, 'listed.a', [{ data: 1 }, { data: 2 }, { data: 3 }]);
    const one = (await (await fetch(`${url}/v1/topics/listed.a`)).json()) as Record<
      string,
      unknown
    >;
    expect(one).toMatchObject({ topic: 'listed.a', firstSeq: 1, lastSeq: 3, count: 3 });
    expect(one.epoch).toMatch(/^[A-Za-z0-9]+$/);
    expect(one.rate).toBe(0.05);
    const all = (await (await fetch(`${url}/v1/topics?prefix=listed.`)).json()) as {
      topics: Array<{ topic: string }>;
    };
    expect(all.topics.map((t) => t.topic)).toEqual(['listed.a']);
    expect((await fetch(`${url}/v1/topics/never.published`)).status).toBe(404);
  });
});

describe('SSE', () => {
  it('frames events with id, event and data, with the right headers', async () => {
    const s = await openSse(`${url}/v1/topics/sse.basic/stream`);
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(s.headers['cache-control']).toBe('no-cache');
    expect(s.headers['x-accel-buffering']).toBe('no');
    await s.until(() => s.body().includes('retry: 1500'));
    await publish(url, 'sse.basic', { type: 'greeting', data: { text: 'line1\nline2' } });
    await publish(url, 'sse.basic', { data: 42 });
    const frames = await s.until((f) => f.length >= 2);
    expect(frames[0]!.event).toBe('greeting');
    expect(frames[1]!.event).toBeUndefined();
    const ev = JSON.parse(frames[0]!.data!) as { data: { text: string }; seq: number; id: string };
    expect(ev.data.text).toBe('line1\nline2');
    expect(frames[0]!.id).toBe(ev.id);
    expect(JSON.parse(frames[1]!.data!).data).toBe(42);
    // Heartbeats are comments on an idle stream.
    await s.until(() => s.parser.comments > 0);
    s.close();
  });

  it('resumes after Last-Event-ID exactly, from the header or the query', async () => {
    await publish(
      url,
      'resume',
      Array.from({ length: 10 }, (_, i) => ({ data: i })),
    );
    const a = await openSse(`${url}/v1/topics/resume/stream?from=earliest`);
    await a.until(() => a.events().length === 10);
    const fourth = a.frames[3]!.id!;
    a.close();
    const b = await openSse(`${url}/v1/topics/resume/stream`, { 'last-event-id': fourth });
    await b.until(() => b.events().length === 6);
    expect(seqs(b)).toEqual([5, 6, 7, 8, 9, 10]);
    b.close();
    const c = await openSse(
      `${url}/v1/topics/resume/stream?lastEventId=${encodeURIComponent(fourth)}`,
    );
    await c.until(() => c.events().length === 6);
    expect(seqs(c)).toEqual([5, 6, 7, 8, 9, 10]);
    c.close();
    const d = await openSse(`${url}/v1/topics/resume/stream?since=8`);
    await d.until(() => d.events().length === 2);
    expect(seqs(d)).toEqual([9, 10]);
    d.close();
    const e = await openSse(`${url}/v1/topics/resume/stream?from=3`);
    await e.until(() => e.events().length === 8);
    expect(seqs(e)[0]).toBe(3);
    e.close();
  });

  it('resumes by time with since=<ISO time>', async () => {
    await publish(url, 'bytime', { data: 'old' });
    const cut = Date.now() + 5;
    await new Promise((r) => setTimeout(r, 20)); // the clock must move past `cut`
    await publish(url, 'bytime', { data: 'new' });
    const s = await openSse(
      `${url}/v1/topics/bytime/stream?since=${encodeURIComponent(new Date(cut).toISOString())}`,
    );
    await s.until(() => s.events().length === 1);
    expect(s.events()[0]!.data).toBe('new');
    s.close();
  });

  it('streams several topics and patterns, resuming every topic from one id', async () => {
    const s = await openSse(`${url}/v1/stream?topics=multi.a,multi.p.*&from=earliest`);
    await s.until(() => s.body().includes('retry:'));
    await publish(url, 'multi.a', { data: 'a1' });
    await publish(url, 'multi.p.x', { data: 'x1' });
    await publish(url, 'multi.p.y', { data: 'y1' });
    await publish(url, 'multi.a', { data: 'a2' });
    await publish(url, 'multi.q', { data: 'not matched' });
    await s.until(() => s.events().length === 4);
    const lastId = s.frames[s.frames.length - 1]!.id!;
    const cur = decodeCursor(lastId);
    expect(cur.positions.get('multi.a')?.seq).toBe(2);
    expect(cur.positions.get('multi.p.x')?.seq).toBe(1);
    expect(cur.positions.get('multi.p.y')?.seq).toBe(1);
    s.close();
    await publish(url, 'multi.p.x', { data: 'x2' });
    await publish(url, 'multi.a', { data: 'a3' });
    await publish(url, 'multi.p.z', { data: 'z1' }); // a topic born while disconnected
    const r = await openSse(`${url}/v1/stream?topics=multi.a,multi.p.*`, {
      'last-event-id': lastId,
    });
    await r.until(() => r.events().length === 3);
    expect(
      r
        .events()
        .map((e) => e.data)
        .sort(),
    ).toEqual(['a3', 'x2', 'z1']);
    r.close();
  });

  it('tells a subscriber precisely what retention dropped, then continues', async () => {
    await publish(
      url,
      'short.lived',
      Array.from({ length: 12 }, (_, i) => ({ data: i + 1 })),
    );
    const s = await openSse(`${url}/v1/topics/short.lived/stream?from=1`);
    await s.until(() => s.events().length === 5);
    const reset = s.frames.find((f) => f.event === 'reset')!;
    expect(JSON.parse(reset.data!)).toMatchObject({
      topic: 'short.lived',
      reason: 'retention',
      missing: { from: 1, to: 7 },
      seq: 7,
    });
    expect(seqs(s)).toEqual([8, 9, 10, 11, 12]);
    s.close();
  });

  it('flags an epoch change and a cursor ahead of the head instead of resetting silently', async () => {
    const p = await publish(url, 'epochs', [{ data: 1 }, { data: 2 }]);
    const epoch = String(p.json.epoch);
    const old = await openSse(`${url}/v1/topics/epochs/stream`, {
      'last-event-id': 'epochs:Zz0ldEpoch:1',
    });
    await old.until(() => old.events().length === 2);
    const r1 = JSON.parse(old.frames.find((f) => f.event === 'reset')!.data!);
    expect(r1).toMatchObject({ reason: 'epoch', epoch, cursorEpoch: 'Zz0ldEpoch', seq: 0 });
    expect(seqs(old)).toEqual([1, 2]);
    old.close();

    const ahead = await openSse(`${url}/v1/topics/epochs/stream`, {
      'last-event-id': `epochs:${epoch}:99`,
    });
    await ahead.until((f) => f.some((x) => x.event === 'reset'));
    const r2 = JSON.parse(ahead.frames.find((f) => f.event === 'reset')!.data!);
    expect(r2).toMatchObject({ reason: 'ahead', cursorSeq: 99, seq: 2 });
    await publish(url, 'epochs', { data: 3 });
    await ahead.until(() => ahead.events().length === 1);
    expect(seqs(ahead)).toEqual([3]);
    ahead.close();
  });

  it('keeps delivering in order while publishes race the replay-to-live switch', async () => {
    const N = 3000;
    const pub = (async () => {
      for (let i = 0; i < N; i += 50) {
        await publish(
          url,
          'race',
          Array.from({ length: 50 }, (_, j) => ({ data: i + j })),
        );
      }
    })();
    // Subscribers join at different moments, each from the start: replay, then live.
    const subs: SseStream[] = [];
    for (let k = 0; k < 5; k++) {
      subs.push(await openSse(`${url}/v1/topics/race/stream?from=earliest`));
      await new Promise((r) => setImmediate(r));
    }
    await pub;
    for (const s of subs) {
      await s.until(() => s.events().length >= N);
      expect(seqs(s)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
      s.close();
    }
  });
});
