import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { openSse, startServer, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';
import { WsClient, wsUrl } from '@rill/testkit/ws';

/**
 * Presence over HTTP and WebSocket on one server (the memory engine keeps it in the process):
 * who is listed and counted, the join and leave notices a stream asks for, the permission.
 */

const GRACE = 300;

describe('presence', () => {
  const { cleanups } = useCleanups();

  async function server() {
    const backend = apiKey('backend', { subscribe: ['>'], publish: ['>'] });
    const s = await startServer({
      auth: authConfig({ apiKeys: [backend.entry] }),
      presence: { grace: GRACE },
    });
    cleanups.push(s.close);
    const token = (sub: string, subscribe = ['room.>'], info?: Record<string, unknown>) =>
      sign({ sub, subscribe, ...(info ? { info } : {}) });
    return { ...s, token, backendKey: backend.key };
  }

  async function presence(url: string, topic: string, auth: string, query = '') {
    const res = await fetch(`${url}/v1/topics/${topic}/presence${query}`, {
      headers: bearer(auth),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it('lists subscribers with info and counts; anonymous ones (API keys) counted, not listed', async () => {
    const { url, token, backendKey } = await server();
    const alice = await token('alice', ['room.>'], { name: 'Alice' });
    const bob = await token('bob');
    const a1 = await openSse(`${url}/v1/topics/room.1/stream`, bearer(alice));
    const a2 = await openSse(`${url}/v1/stream?topics=room.1,room.2`, bearer(alice));
    const b = await openSse(`${url}/v1/topics/room.1/stream`, bearer(bob));
    const k = await openSse(`${url}/v1/topics/room.1/stream`, bearer(backendKey));
    // A pattern subscription is present on no topic.
    const p = await openSse(`${url}/v1/stream?topics=room.*`, bearer(await token('carol')));
    cleanups.push(() => [a1, a2, b, k, p].forEach((s) => s.close()));
    await waitFor(async () => (await presence(url, 'room.1', bob)).body.anonymous === 1);
    const page = await presence(url, 'room.1', bob);
    expect(page.status).toBe(200);
    expect(page.body).toMatchObject({
      topic: 'room.1',
      count: 2,
      anonymous: 1,
      next: null,
      members: [
        { sub: 'alice', info: { name: 'Alice' }, connections: 2 },
        { sub: 'bob', connections: 1 },
      ],
    });
    expect((page.body.members as { since: number }[])[0]!.since).toBeGreaterThan(0);
    expect((await presence(url, 'room.2', bob)).body).toMatchObject({
      count: 1,
      members: [{ sub: 'alice', connections: 1 }],
    });
    // Paging: one member per page, in sub order.
    const first = await presence(url, 'room.1', bob, '?limit=1');
    expect(first.body).toMatchObject({ members: [{ sub: 'alice' }], next: 'alice', count: 2 });
    const second = await presence(url, 'room.1', bob, '?limit=1&after=alice');
    expect(second.body).toMatchObject({ members: [{ sub: 'bob' }], next: null });
    const count = await presence(url, 'room.1', bob, '/count');
    expect(count.body).toEqual({ topic: 'room.1', count: 2, anonymous: 1 });
  });

  it('needs subscribe permission on the topic', async () => {
    const { url, token } = await server();
    const outsider = await token('eve', ['other.>']);
    const res = await presence(url, 'room.1', outsider);
    expect(res.status).toBe(403);
    expect(res.body).toMatchObject({ error: { code: 'forbidden' } });
    expect((await presence(url, 'room.1', outsider, '/count')).status).toBe(403);
    const anon = await fetch(`${url}/v1/topics/room.1/presence`);
    expect(anon.status).toBe(401);
  });

  it('SSE: join and leave (after the grace period) without an id line; other streams hear nothing', async () => {
    const { url, token } = await server();
    const bob = await token('bob');
    const watcher = await openSse(`${url}/v1/topics/room.1/stream?presence=true`, bearer(bob));
    const plain = await openSse(`${url}/v1/topics/room.1/stream`, bearer(bob));
    cleanups.push(() => [watcher, plain].forEach((s) => s.close()));
    const alice = await openSse(
      `${url}/v1/topics/room.1/stream`,
      bearer(await token('alice', ['room.>'], { name: 'Alice' })),
    );
    await watcher.until((f) => f.some((x) => x.event === 'join' && x.data?.includes('"alice"')));
    const join = watcher.frames.find((x) => x.event === 'join' && x.data?.includes('"alice"'))!;
    expect(join.id).toBeUndefined();
    expect(JSON.parse(join.data!)).toEqual({
      topic: 'room.1',
      sub: 'alice',
      info: { name: 'Alice' },
    });
    const closedAt = Date.now();
    alice.close();
    await watcher.until((f) => f.some((x) => x.event === 'leave'));
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(GRACE - 20);
    const leave = watcher.frames.find((x) => x.event === 'leave')!;
    expect(leave.id).toBeUndefined();
    expect(JSON.parse(leave.data!)).toMatchObject({ topic: 'room.1', sub: 'alice' });
    // An event after the notices still carries its id; the stream without presence=true got
    // that event and no notice.
    const pub = await fetch(`${url}/v1/topics/room.1/events`, {
      method: 'POST',
      headers: {
        ...bearer(await sign({ sub: 'p', publish: ['>'] })),
        'content-type': 'application/json',
      },
      body: JSON.stringify({ data: 1 }),
    });
    expect(pub.status).toBe(201);
    await plain.until((f) => f.some((x) => x.id !== undefined));
    await watcher.until((f) => f.some((x) => x.id !== undefined));
    expect(plain.frames.filter((x) => x.event === 'join' || x.event === 'leave')).toEqual([]);
  });

  it('NDJSON: join notices as lines without a cursor', async () => {
    const { url, token } = await server();
    const bob = await token('bob');
    const lines: string[] = [];
    const req = http.get(
      `${url}/v1/topics/room.1/stream?format=ndjson&presence=1`,
      { headers: bearer(bob) },
      (res) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => lines.push(...c.split('\n').filter((l) => l !== '')));
      },
    );
    cleanups.push(() => req.destroy());
    await waitFor(() => lines.some((l) => l.includes('"join"') && l.includes('"bob"')));
    expect(lines.map((l) => JSON.parse(l) as unknown)).toContainEqual({
      join: { topic: 'room.1', sub: 'bob' },
    });
  });

  it('WebSocket: presence on subscribe, the presence op (page and count)', async () => {
    const { url, token } = await server();
    const bob = await token('bob');
    const ws = await WsClient.open(wsUrl(url), { headers: bearer(bob) });
    cleanups.push(() => ws.close());
    const subscribed = await ws.request({ op: 'subscribe', topics: ['room.1'], presence: true });
    expect(subscribed.op).toBe('subscribed');
    await ws.until((m) =>
      m.some((x) => x.op === 'join' && (x.member as { sub: string }).sub === 'bob'),
    );
    const alice = await WsClient.open(wsUrl(url), {
      headers: bearer(await token('alice', ['room.>'], { name: 'Alice' })),
    });
    await alice.request({ op: 'subscribe', topics: ['room.1'] });
    await ws.until((m) =>
      m.some((x) => x.op === 'join' && (x.member as { sub: string }).sub === 'alice'),
    );
    expect(
      ws.messages.find(
        (x) =>
          x.op === 'join' && x.topic === 'room.1' && (x.member as { sub: string }).sub === 'alice',
      ),
    ).toEqual({
      op: 'join',
      sub: subscribed.sub,
      topic: 'room.1',
      member: { sub: 'alice', info: { name: 'Alice' } },
    });
    const page = await ws.request({ op: 'presence', topic: 'room.1', limit: 1 });
    expect(page).toMatchObject({
      op: 'presence',
      topic: 'room.1',
      count: 2,
      next: 'alice',
      members: [{ sub: 'alice', info: { name: 'Alice' }, connections: 1 }],
    });
    const count = await ws.request({ op: 'presence', topic: 'room.1', count: true });
    expect(count).toMatchObject({ op: 'presence', topic: 'room.1', count: 2, anonymous: 0 });
    const refused = await ws.request({ op: 'presence', topic: 'secret.1' });
    expect(refused).toMatchObject({ op: 'error', error: { code: 'forbidden' } });
    alice.close();
    await ws.until((m) =>
      m.some((x) => x.op === 'leave' && (x.member as { sub: string }).sub === 'alice'),
    );
    expect((await ws.request({ op: 'presence', topic: 'room.1', count: true })).count).toBe(1);
  });

  it('a long-poll is not present and refuses the presence parameter', async () => {
    const { url, token } = await server();
    const bob = await token('bob');
    const res = await fetch(`${url}/v1/events?topics=room.1&presence=true`, {
      headers: bearer(bob),
    });
    expect(res.status).toBe(400);
    const poll = await fetch(`${url}/v1/events?topics=room.1`, { headers: bearer(bob) });
    expect(poll.status).toBe(200);
    expect((await presence(url, 'room.1', bob, '/count')).body).toMatchObject({ count: 0 });
  });
});
