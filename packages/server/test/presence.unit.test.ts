import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  LocalPresenceStore,
  MAX_INFO_BYTES,
  PresenceService,
  merge,
  type PresenceChange,
} from '../src/presence/index.js';
import { ndjsonPresenceLine, ssePresenceFrame, wsPresenceFrame } from '../src/wire/presence.js';
import { parseWsRequest } from '../src/wire/ws-request.js';

/**
 * Presence on one process (the store of the memory and lmdb engines): members, counts, pages, and
 * the grace period that keeps a reconnect from being a leave and a join. Timers are faked, so the
 * grace period is crossed exactly rather than waited for.
 */

const GRACE = 5_000;

function service(): { p: PresenceService; changes: PresenceChange[] } {
  const p = new PresenceService(new LocalPresenceStore(), { graceMs: GRACE, rereadMs: 0 });
  const changes: PresenceChange[] = [];
  p.watch('room', (c) => changes.push(c));
  return { p, changes };
}

/** Lets the store's writes and the reads they trigger settle (promises only, no time passes). */
const settle = () => vi.advanceTimersByTimeAsync(0);

describe('presence on one process', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lists members with info, connection counts and since; counts anonymous ones', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { p } = service();
    p.enter('room', 'bob', { name: 'Bob' });
    p.enter('room', 'alice', { name: 'Alice' });
    p.enter('room', 'alice', { name: 'Alice' });
    p.enter('room', null);
    p.enter('room', null);
    p.enter('other', 'carol');
    await settle();
    const page = await p.page('room', { limit: 10 });
    expect(page).toEqual({
      topic: 'room',
      members: [
        { sub: 'alice', info: { name: 'Alice' }, connections: 2, since: 1_000_000 },
        { sub: 'bob', info: { name: 'Bob' }, connections: 1, since: 1_000_000 },
      ],
      count: 2,
      anonymous: 2,
      next: null,
    });
    expect(await p.count('room')).toEqual({ topic: 'room', count: 2, anonymous: 2 });
    await p.close();
  });

  it('pages in sub order with after and next', async () => {
    vi.useFakeTimers();
    const { p } = service();
    for (let i = 0; i < 25; i++) p.enter('room', `u${String(i).padStart(2, '0')}`);
    await settle();
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await p.page('room', { limit: 10, ...(after ? { after } : {}) });
      seen.push(...page.members.map((m) => m.sub));
      expect(page.count).toBe(25);
      if (page.next === null) break;
      after = page.next;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `u${String(i).padStart(2, '0')}`));
    await p.close();
  });

  it('announces a join at once and a leave only once the grace period ran out', async () => {
    vi.useFakeTimers();
    const { p, changes } = service();
    await settle();
    const leave = p.enter('room', 'alice', { name: 'Alice' });
    await settle();
    expect(changes).toEqual([
      { kind: 'join', topic: 'room', sub: 'alice', info: { name: 'Alice' } },
    ]);
    leave();
    await settle();
    // Still present during the grace period, with no connection.
    expect((await p.page('room', { limit: 10 })).members).toEqual([
      expect.objectContaining({ sub: 'alice', connections: 0 }),
    ]);
    await vi.advanceTimersByTimeAsync(GRACE - 1);
    expect(changes).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(changes[1]).toEqual({
      kind: 'leave',
      topic: 'room',
      sub: 'alice',
      info: { name: 'Alice' },
    });
    expect((await p.page('room', { limit: 10 })).members).toEqual([]);
    await p.close();
  });

  it('announces a join that comes while the first read of the topic is in flight', async () => {
    vi.useFakeTimers();
    const { p, changes } = service();
    p.enter('room', 'alice');
    await settle();
    expect(changes.map((c) => `${c.kind}:${c.sub}`)).toEqual(['join:alice']);
    await p.close();
  });

  it('a reconnect within the grace period is neither a leave nor a join', async () => {
    vi.useFakeTimers();
    const { p, changes } = service();
    await settle();
    const first = p.enter('room', 'alice');
    await settle();
    first();
    await vi.advanceTimersByTimeAsync(GRACE - 100);
    const second = p.enter('room', 'alice');
    await vi.advanceTimersByTimeAsync(GRACE * 3);
    expect(changes.map((c) => c.kind)).toEqual(['join']);
    second();
    await vi.advanceTimersByTimeAsync(GRACE);
    expect(changes.map((c) => c.kind)).toEqual(['join', 'leave']);
    await p.close();
  });

  it('anonymous subscribers are never announced; a second connection is no join', async () => {
    vi.useFakeTimers();
    const { p, changes } = service();
    await settle();
    const a = p.enter('room', null);
    p.enter('room', 'bob');
    const b2 = p.enter('room', 'bob');
    await settle();
    a();
    b2();
    await vi.advanceTimersByTimeAsync(GRACE * 2);
    expect(changes.map((c) => `${c.kind}:${c.sub}`)).toEqual(['join:bob']);
    expect(await p.count('room')).toEqual({ topic: 'room', count: 1, anonymous: 0 });
    await p.close();
  });

  it('leaves out an info too big to carry', async () => {
    vi.useFakeTimers();
    const { p } = service();
    p.enter('room', 'big', { blob: 'x'.repeat(MAX_INFO_BYTES) });
    await settle();
    expect((await p.page('room', { limit: 1 })).members[0]).not.toHaveProperty('info');
    await p.close();
  });
});

describe('merging the nodes of a topic', () => {
  it('sums connections, keeps the earliest since and counts anonymous connections', () => {
    expect(
      merge([
        { node: 'a', sub: 'x', conns: 1, since: 20, info: { n: 1 } },
        { node: 'b', sub: 'x', conns: 2, since: 10 },
        { node: 'a', sub: '', conns: 3, since: 5 },
        { node: 'b', sub: '', conns: 1, since: 5 },
      ]),
    ).toEqual({ members: [{ sub: 'x', info: { n: 1 }, connections: 3, since: 10 }], anonymous: 4 });
  });
});

describe('presence on the wire', () => {
  const join = { kind: 'join' as const, topic: 'room', sub: 'alice', info: { name: 'A' } };

  it('SSE carries join and leave without an id line', () => {
    expect(ssePresenceFrame(join)).toBe(
      'event: join\ndata: {"topic":"room","sub":"alice","info":{"name":"A"}}\n\n',
    );
    expect(ssePresenceFrame({ kind: 'leave', topic: 'room', sub: 'bob' })).toBe(
      'event: leave\ndata: {"topic":"room","sub":"bob"}\n\n',
    );
  });

  it('NDJSON and WebSocket carry them as notices', () => {
    expect(ndjsonPresenceLine(join)).toBe(
      '{"join":{"topic":"room","sub":"alice","info":{"name":"A"}}}\n',
    );
    expect(JSON.parse(wsPresenceFrame('s1', join).slice(0, -1))).toEqual({
      op: 'join',
      sub: 's1',
      topic: 'room',
      member: { sub: 'alice', info: { name: 'A' } },
    });
  });

  it('WebSocket requests: presence on subscribe, the presence op', () => {
    const limits = {
      maxEventBytes: 1024,
      maxJsonDepth: 10,
      maxPatternsPerSubscription: 10,
      maxCursorLength: 1024,
    };
    expect(
      parseWsRequest('{"op":"subscribe","id":1,"topics":["room"],"presence":true}', limits),
    ).toMatchObject({ op: 'subscribe', presence: true });
    expect(
      parseWsRequest('{"op":"presence","id":2,"topic":"room","after":"a","limit":5}', limits),
    ).toEqual({ op: 'presence', id: 2, topic: 'room', after: 'a', limit: 5, count: false });
    expect(parseWsRequest('{"op":"presence","id":3,"topic":"a.*"}', limits)).toMatchObject({
      error: { code: 'invalid_topic' },
    });
    expect(
      parseWsRequest('{"op":"presence","id":4,"topic":"room","limit":0}', limits),
    ).toMatchObject({ error: { code: 'invalid_parameter' } });
    expect(
      parseWsRequest('{"op":"subscribe","id":5,"topics":["room"],"presence":"yes"}', limits),
    ).toMatchObject({ error: { code: 'invalid_message' } });
  });
});
