import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSse, startServer, type SseFrame } from '@rill/testkit';

/**
 * Ephemeral events and topic administration over HTTP, end to end: what a live SSE subscriber
 * sees, what history and a resume see. The engines' side is in the conformance suite.
 */
describe('ephemeral events and topic administration (HTTP)', () => {
  let url = '';
  let close: () => Promise<void> = async () => {};

  beforeAll(async () => {
    ({ url, close } = await startServer());
  });
  afterAll(() => close());

  async function post(path: string, body: unknown, method = 'POST'): Promise<Response> {
    return fetch(`${url}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  const resets = (frames: SseFrame[]) =>
    frames.filter((f) => f.event === 'reset').map((f) => JSON.parse(f.data!) as { reason: string });

  it('delivers ephemeral events live only: no id, never in history or a resume', async () => {
    const t = 'adm.eph';
    expect((await post(`/v1/topics/${t}/events`, { data: 1 })).status).toBe(201);
    const sse = await openSse(`${url}/v1/topics/${t}/stream?from=earliest`);
    await sse.until((f) => f.length >= 1);
    const eph = await post(`/v1/topics/${t}/events`, {
      type: 'typing',
      data: { user: 'ann' },
      ephemeral: true,
    });
    expect(eph.status).toBe(202);
    expect(await eph.json()).toMatchObject({ topic: t, ephemeral: true, count: 1 });
    expect((await post(`/v1/topics/${t}/events`, { data: 2 })).status).toBe(201);
    await sse.until((f) => f.length >= 3);
    const [first, typing, second] = sse.frames;
    expect(typing!.id).toBeUndefined();
    expect(typing!.event).toBe('typing');
    expect(JSON.parse(typing!.data!)).toMatchObject({
      topic: t,
      ephemeral: true,
      type: 'typing',
      data: { user: 'ann' },
    });
    expect(JSON.parse(typing!.data!)).not.toHaveProperty('seq');
    expect(JSON.parse(second!.data!)).toMatchObject({ seq: 2, data: 2 });
    sse.close();

    const history = (await (await fetch(`${url}/v1/topics/${t}/events`)).json()) as {
      events: { seq: number }[];
    };
    expect(history.events.map((e) => e.seq)).toEqual([1, 2]);
    const resumed = await openSse(`${url}/v1/topics/${t}/stream`, { 'last-event-id': first!.id! });
    expect((await post(`/v1/topics/${t}/events`, { data: 3 })).status).toBe(201);
    await resumed.until((f) => f.length >= 2);
    expect(resumed.events().map((e) => e.seq)).toEqual([2, 3]);
    resumed.close();
  });

  it('refuses a batch mixing ephemeral and stored events, and a key on an ephemeral one', async () => {
    const mixed = await post('/v1/topics/adm.mix/events', [
      { data: 1 },
      { data: 2, ephemeral: true },
    ]);
    expect(mixed.status).toBe(400);
    const keyed = await post('/v1/topics/adm.mix/events', { data: 1, key: 'k', ephemeral: true });
    expect(keyed.status).toBe(400);
    expect(((await keyed.json()) as { error: { code: string } }).error.code).toBe('invalid_event');
    expect((await fetch(`${url}/v1/topics/adm.mix`)).status).toBe(404);
  });

  it('a deleted topic: live subscribers get a deleted notice, resuming ones an epoch reset', async () => {
    const t = 'adm.del';
    for (let i = 1; i <= 3; i++) await post(`/v1/topics/${t}/events`, { data: i });
    const live = await openSse(`${url}/v1/topics/${t}/stream?from=earliest`);
    await live.until((f) => f.length >= 3);
    const cursor = live.frames[2]!.id!;
    const del = await fetch(`${url}/v1/topics/${t}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    await live.until((f) => resets(f).length >= 1);
    expect(resets(live.frames)[0]).toMatchObject({ topic: t, reason: 'deleted', seq: 3 });
    expect((await fetch(`${url}/v1/topics/${t}`)).status).toBe(404);
    expect((await fetch(`${url}/v1/topics/${t}`, { method: 'DELETE' })).status).toBe(404);

    expect((await post(`/v1/topics/${t}/events`, { data: 'new' })).status).toBe(201);
    // The live stream goes on into the new log.
    await live.until((f) => f.some((x) => x.data?.includes('"new"')));
    expect(live.events().at(-1)).toMatchObject({ seq: 1, data: 'new' });
    live.close();

    const resumed = await openSse(`${url}/v1/topics/${t}/stream`, { 'last-event-id': cursor });
    await resumed.until((f) => f.some((x) => x.data?.includes('"new"')));
    expect(resets(resumed.frames)).toEqual([
      expect.objectContaining({ reason: 'epoch', topic: t }),
    ]);
    expect(resumed.events().map((e) => e.seq)).toEqual([1]);
    resumed.close();
  });

  it('purge: a cursor from before it gets a retention reset naming what is gone', async () => {
    const t = 'adm.purge';
    let firstId = '';
    for (let i = 1; i <= 5; i++) {
      const r = (await (await post(`/v1/topics/${t}/events`, { data: i })).json()) as {
        events: { id: string }[];
      };
      if (i === 1) firstId = r.events[0]!.id;
    }
    const p = await post(`/v1/topics/${t}/purge`, { before: 4 });
    expect(p.status).toBe(200);
    expect(await p.json()).toMatchObject({ topic: t, firstSeq: 4, lastSeq: 5 });
    const resumed = await openSse(`${url}/v1/topics/${t}/stream`, { 'last-event-id': firstId });
    await resumed.until((f) => f.length >= 3);
    expect(resets(resumed.frames)[0]).toMatchObject({
      reason: 'retention',
      missing: { from: 2, to: 3 },
    });
    expect(resumed.events().map((e) => e.seq)).toEqual([4, 5]);
    resumed.close();

    const byTime = await post(`/v1/topics/${t}/purge`, {
      beforeTime: new Date(Date.now() + 60_000).toISOString(),
    });
    expect(await byTime.json()).toMatchObject({ firstSeq: 6, lastSeq: 5 });
    expect((await post(`/v1/topics/${t}/purge`, { before: -1 })).status).toBe(400);
    expect((await post('/v1/topics/adm.none/purge', { before: 2 })).status).toBe(404);
  });

  it('sets, reads and clears a topic retention override', async () => {
    const t = 'adm.ret';
    for (let i = 1; i <= 6; i++) await post(`/v1/topics/${t}/events`, { data: i });
    const put = await post(`/v1/topics/${t}/retention`, { maxEvents: 2, maxAge: '1h' }, 'PUT');
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({
      maxEvents: 2,
      maxAgeMs: 3_600_000,
      override: { maxEvents: 2, maxAgeMs: 3_600_000 },
    });
    const history = (await (await fetch(`${url}/v1/topics/${t}/events`)).json()) as {
      events: { seq: number }[];
    };
    expect(history.events.map((e) => e.seq)).toEqual([5, 6]);
    const got = await (await fetch(`${url}/v1/topics/${t}/retention`)).json();
    expect(got).toMatchObject({ override: { maxEvents: 2 } });
    const cleared = await fetch(`${url}/v1/topics/${t}/retention`, { method: 'DELETE' });
    expect(await cleared.json()).toMatchObject({ override: null });
    expect((await post(`/v1/topics/${t}/retention`, { maxEvents: 'x' }, 'PUT')).status).toBe(400);
    expect((await post(`/v1/topics/${t}/retention`, { nope: 1 }, 'PUT')).status).toBe(400);
  });
});
