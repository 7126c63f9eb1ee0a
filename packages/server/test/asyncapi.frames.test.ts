import { beforeAll, describe, expect, it } from 'vitest';
import { openSse, startServer, waitFor, type SseStream } from '@rill/testkit';
import { apiKey, authConfig, bearer, sign } from '@rill/testkit/auth';
import { WsClient, wsUrl, type WsMsg } from '@rill/testkit/ws';
import { AsyncApiMessages, type Direction, type Frame } from './asyncapi-doc.js';

/**
 * docs/asyncapi.yaml against what a real server sends. One server with authentication and
 * presence; a WebSocket session goes through every request (answered and refused), while SSE and
 * NDJSON streams, of one topic and of several, watch the same topics: stored and ephemeral events,
 * presence joins and leaves, reset notices after the topic is deleted, heartbeats, and the error
 * frame that ends them when the server shuts down. Every frame recorded must be exactly one
 * message of its channel in the document, every request the server accepted exactly one request
 * message (and every request it refused for its shape none), and every message the document lists
 * must have been seen.
 */

interface Recorded {
  channel: string;
  direction: Direction;
  frame: Frame;
  /**
   * For a request the server refused: `shape` when for its shape (`invalid_message`,
   * `unknown_op`), `content` when for a value a schema need not express (a bad topic, a limit).
   */
  refused?: 'shape' | 'content';
  /** What the frame was on the wire, for failure messages. */
  raw: string;
}

/** The SSE text as frames: each block's `data:` is the payload, its other fields the headers. */
function sseFrames(body: string): Frame[] {
  const blocks = body.split('\n\n');
  blocks.pop(); // after the last blank line: nothing, or an unfinished frame
  return blocks.map((block) => {
    const headers: Record<string, unknown> = {};
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) {
        headers.comment = line.slice(1).trimStart();
        continue;
      }
      const i = line.indexOf(':');
      const field = i === -1 ? line : line.slice(0, i);
      const value = i === -1 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else headers[field] = field === 'retry' ? Number(value) : value;
    }
    return data.length > 0 ? { headers, payload: JSON.parse(data.join('\n')) } : { headers };
  });
}

/** The NDJSON text as frames: each line's JSON, or `''` for the heartbeat's empty line. */
function ndjsonFrames(body: string): Frame[] {
  const lines = body.split('\n');
  lines.pop();
  return lines.map((line) => ({ payload: line === '' ? '' : JSON.parse(line) }));
}

const GRACE = 100;

let doc: AsyncApiMessages;
const recorded: Recorded[] = [];

/** Shape refusals: a request the document describes must never get these. */
const SHAPE_ERRORS = new Set(['invalid_message', 'unknown_op']);
/** Refusals of a value: the document may or may not describe the value as invalid. */
const CONTENT_ERRORS = new Set([
  'invalid_topic',
  'invalid_pattern',
  'invalid_cursor',
  'invalid_parameter',
  'invalid_event',
  'json_too_deep',
  'event_too_large',
  'too_many_topics',
]);

// Parsing lints the whole document: seconds, more on a loaded machine.
beforeAll(async () => {
  doc = await AsyncApiMessages.load();
}, 120_000);

beforeAll(async () => {
  const admin = apiKey('admin', { admin: true });
  const { url, close } = await startServer({
    auth: authConfig({ apiKeys: [admin.entry] }),
    presence: { grace: GRACE },
    sse: { heartbeat: 100 },
    ws: { maxSubscriptions: 3 },
  });
  const sockets: WsClient[] = [];
  const streams: Array<{ channel: string; stream: SseStream; ndjson: boolean }> = [];
  try {
    const aliceToken = await sign({
      sub: 'alice',
      subscribe: ['room.>', 'orders'],
      publish: ['room.>'],
      info: { name: 'Alice' },
    });
    const bobToken = await sign({ sub: 'bob', subscribe: ['room.>'] });

    // ---- the HTTP streams (bob), open before anything happens on their topics ----
    const open = async (channel: string, path: string, ndjson: boolean): Promise<SseStream> => {
      const stream = await openSse(
        `${url}${path}${ndjson ? '&format=ndjson' : ''}`,
        bearer(bobToken),
      );
      expect(stream.status, path).toBe(200);
      streams.push({ channel, stream, ndjson });
      return stream;
    };
    await open('sseTopicStream', '/v1/topics/room.1/stream?presence=true', false);
    await open('sseStream', '/v1/stream?topics=room.1,room.2&presence=true', false);
    await open('ndjsonTopicStream', '/v1/topics/room.1/stream?presence=true', true);
    await open('ndjsonStream', '/v1/stream?topics=room.1,room.2&presence=true', true);
    /** Waits until every stream's text holds `text` (SSE, NDJSON: `[sse, ndjson]`). */
    const allStreams = (text: string | [string, string], what: string): Promise<void> =>
      waitFor(
        () =>
          streams.every((s) =>
            s.stream.body().includes(typeof text === 'string' ? text : text[s.ndjson ? 1 : 0]),
          ),
        10_000,
      ).catch(() => {
        throw new Error(`not every stream got ${what}`);
      });
    // Set up once bob is present with all four.
    await waitFor(async () => {
      const res = await fetch(`${url}/v1/topics/room.1/presence`, { headers: bearer(bobToken) });
      const page = (await res.json()) as { members: Array<{ sub: string; connections: number }> };
      return page.members.some((m) => m.sub === 'bob' && m.connections === 4);
    });

    // ---- one WebSocket session through every request ----
    const ws = await WsClient.open(wsUrl(url));
    sockets.push(ws);
    let nextId = 1;
    /** Sends a request, records it, and resolves with its reply. */
    const request = async (msg: Record<string, unknown>, client = ws): Promise<WsMsg> => {
      const id = (msg.id as string | number | undefined) ?? nextId++;
      const full = { ...msg, id };
      const reply = await client.request(full);
      const code = reply.op === 'error' ? reply.error!.code : '';
      recorded.push({
        channel: 'ws',
        direction: 'receive',
        frame: { payload: full },
        ...(SHAPE_ERRORS.has(code) ? { refused: 'shape' as const } : {}),
        ...(CONTENT_ERRORS.has(code) ? { refused: 'content' as const } : {}),
        raw: JSON.stringify(full),
      });
      return reply;
    };
    const expectError = (reply: WsMsg, code: string): void => {
      expect(reply.op, JSON.stringify(reply)).toBe('error');
      expect(reply.error!.code).toBe(code);
    };

    expectError(await request({ op: 'ping' }), 'unauthorized'); // before the first auth
    expect(await request({ op: 'auth', token: aliceToken })).toMatchObject({
      op: 'authed',
      sub: 'alice',
    });
    expect((await request({ op: 'ping' })).op).toBe('pong');
    const s1 = await request({ op: 'subscribe', topics: ['room.1'], presence: true });
    expect(s1).toMatchObject({ op: 'subscribed', sub: 's1' });
    const s2 = await request({ op: 'subscribe', topics: ['room.*', 'orders'], from: 'earliest' });
    expect(s2).toMatchObject({ op: 'subscribed', sub: 's2' });
    await ws.until((m) => m.some((x) => x.op === 'join' && x.sub === 's1'), 10_000, 'own join');

    const ack = await request({
      op: 'publish',
      topic: 'room.1',
      type: 'chat.message',
      key: 'k1',
      data: { text: 'hi' },
    });
    expect(ack).toMatchObject({ op: 'ack', seq: 1, duplicate: false });
    const epoch = String(ack.eventId).split(':')[1]!;
    expect(
      await request({ op: 'publish', topic: 'room.1', key: 'k1', data: { text: 'hi' } }),
    ).toMatchObject({ op: 'ack', seq: 1, duplicate: true });
    expect(
      await request({
        op: 'publish',
        topic: 'room.1',
        type: 'typing',
        ephemeral: true,
        data: { user: 'alice' },
      }),
    ).toMatchObject({ op: 'ack', ephemeral: true });
    await ws.until(
      (m) => m.filter((x) => x.op === 'event').length >= 4,
      10_000,
      'the stored and the ephemeral event on s1 and s2',
    );
    await allStreams('"ephemeral":true', 'the ephemeral event');

    expect(await request({ op: 'presence', topic: 'room.1', limit: 10 })).toMatchObject({
      op: 'presence',
      count: 2,
    });
    expect(await request({ op: 'presence', topic: 'room.1', count: true })).toMatchObject({
      op: 'presence',
      count: 2,
      anonymous: 0,
    });

    // Resets on a subscription: a cursor past the head, and one into retention that is gone.
    const s3 = await request({ op: 'subscribe', topics: ['room.1'], cursor: `room.1:${epoch}:9` });
    expect(s3).toMatchObject({ op: 'subscribed', sub: 's3', exact: false });
    await ws.until((m) => m.some((x) => x.op === 'reset' && x.sub === 's3'), 10_000, 'reset');
    expectError(await request({ op: 'subscribe', topics: ['room.3'] }), 'too_many_subscriptions');
    expect(await request({ op: 'unsubscribe', sub: 's3' })).toMatchObject({ op: 'unsubscribed' });
    expectError(await request({ op: 'unsubscribe', sub: 's99' }), 'subscription_not_found');

    // Refused requests: shape (no document message may match them) and content.
    ws.send('not json');
    ws.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await ws.until(
      (m) =>
        m.filter((x) => x.op === 'error' && x.id === undefined && x.sub === undefined).length >= 2,
      10_000,
      'errors for the unreadable messages',
    );
    expectError(await request({ op: 'dance' }), 'unknown_op');
    expectError(await request({ op: 'ping', extra: 1 }), 'invalid_message');
    expectError(await request({ op: 'subscribe', topics: 'room.1' }), 'invalid_message');
    expectError(await request({ op: 'subscribe', topics: ['a b'] }), 'invalid_pattern');
    expectError(await request({ op: 'publish', topic: 'orders', data: 1 }), 'forbidden');
    expectError(await request({ op: 'presence', topic: 'room.1', limit: 0 }), 'invalid_parameter');

    // Someone else comes and goes: a join and, after the grace period, a leave everywhere.
    const carol = await WsClient.open(wsUrl(url), {
      headers: bearer(await sign({ sub: 'carol', subscribe: ['room.>'] })),
    });
    sockets.push(carol);
    await request({ op: 'subscribe', topics: ['room.1'] }, carol);
    await allStreams('"sub":"carol"', "carol's join");
    carol.close();
    await ws.until(
      (m) => m.some((x) => x.op === 'leave' && (x.member as { sub: string }).sub === 'carol'),
      10_000,
      "carol's leave",
    );
    await allStreams(
      [
        'event: leave\ndata: {"topic":"room.1","sub":"carol"',
        '{"leave":{"topic":"room.1","sub":"carol"',
      ],
      "carol's leave",
    );

    // The topic is deleted: a `deleted` reset at once; its next event starts a new epoch.
    const del = await fetch(`${url}/v1/topics/room.1`, {
      method: 'DELETE',
      headers: bearer(admin.key),
    });
    expect(del.status).toBe(204);
    await ws.until(
      (m) => m.some((x) => x.op === 'reset' && x.reason === 'deleted'),
      10_000,
      'the deleted reset',
    );
    await allStreams('"reason":"deleted"', 'the deleted reset');
    await request({ op: 'publish', topic: 'room.1', data: { text: 'again' } });
    await allStreams('"text":"again"', 'the event of the new epoch');

    // Credentials: a refresh with fewer grants ends the subscription they no longer allow; a
    // refresh for someone else is refused; a first auth refused closes its socket.
    const narrower = await sign({ sub: 'alice', subscribe: ['room.1'], publish: ['room.>'] });
    expect((await request({ op: 'auth', token: narrower })).op).toBe('authed');
    await ws.until(
      (m) => m.some((x) => x.op === 'error' && x.sub === 's2' && x.id === undefined),
      10_000,
      'the end of s2',
    );
    expectError(await request({ op: 'auth', token: bobToken }), 'unauthorized');

    const stranger = await WsClient.open(wsUrl(url));
    sockets.push(stranger);
    expectError(await request({ op: 'auth', token: 'not-a-token' }, stranger), 'unauthorized');
    expect((await stranger.closed).code).toBe(4524);

    // Credentials refused at the handshake: an error without id, then the close.
    const refused = await WsClient.open(`${wsUrl(url)}?access_token=rill_nope`);
    sockets.push(refused);
    expect((await refused.closed).code).toBe(4524);

    // A token about to expire is warned of.
    const brief = await WsClient.open(wsUrl(url), {
      headers: bearer(await sign({ sub: 'dave', subscribe: ['room.>'] }, 3_000)),
    });
    sockets.push(brief);
    await brief.until((m) => m.some((x) => x.op === 'token_expiring'), 10_000, 'token_expiring');

    // Idle streams get heartbeats.
    await waitFor(
      () =>
        streams.every(({ stream, ndjson }) =>
          ndjson ? stream.body().includes('\n\n') : stream.body().includes('\n:\n'),
        ),
      10_000,
    );
  } finally {
    // Shutting down ends every stream with an error frame.
    await close();
    await Promise.all(streams.map((s) => s.stream.ended));
    for (const s of sockets) s.terminate();
  }

  for (const { channel, stream, ndjson } of streams) {
    const body = stream.body();
    for (const frame of ndjson ? ndjsonFrames(body) : sseFrames(body)) {
      recorded.push({ channel, direction: 'send', frame, raw: JSON.stringify(frame) });
    }
  }
  for (const s of sockets) {
    for (const payload of s.messages) {
      recorded.push({
        channel: 'ws',
        direction: 'send',
        frame: { payload },
        raw: JSON.stringify(payload),
      });
    }
  }
}, 120_000);

describe('docs/asyncapi.yaml against the frames a real server sends', () => {
  it('finds each frame the server sent to be exactly one message of its channel', () => {
    const sent = recorded.filter((r) => r.direction === 'send');
    expect(sent.length).toBeGreaterThan(60);
    const bad: string[] = [];
    for (const r of sent) {
      const { ids, why } = doc.match(r.channel, 'send', r.frame);
      if (ids.length !== 1) {
        bad.push(
          `${r.channel} ${r.raw}\n matches ${ids.length ? ids.join(', ') : 'nothing'}\n${why}`,
        );
      }
    }
    expect(bad, bad.join('\n\n')).toEqual([]);
  });

  it('finds each request the server took to be exactly one request message, and those it refused for their shape none', () => {
    const requests = recorded.filter((r) => r.direction === 'receive');
    expect(requests.filter((r) => r.refused === 'shape')).toHaveLength(3);
    const bad: string[] = [];
    for (const r of requests) {
      const { ids, why } = doc.match(r.channel, 'receive', r.frame);
      const expected = r.refused === 'shape' ? [0] : r.refused === 'content' ? [0, 1] : [1];
      if (!expected.includes(ids.length)) {
        bad.push(
          `${r.refused ?? 'taken'}: ${r.raw}\n matches ${ids.join(', ') || 'nothing'}\n${why}`,
        );
      }
    }
    expect(bad, bad.join('\n\n')).toEqual([]);
  });

  it('has seen every message the document lists, on every channel', () => {
    const seen = new Set<string>();
    for (const r of recorded) {
      if (r.refused !== undefined) continue;
      for (const id of doc.match(r.channel, r.direction, r.frame).ids)
        seen.add(`${r.channel}/${id}`);
    }
    const listed = doc.messages.map((m) => `${m.channel}/${m.id}`);
    expect(listed.length).toBeGreaterThan(40);
    expect(listed.filter((m) => !seen.has(m))).toEqual([]);
  });
});
