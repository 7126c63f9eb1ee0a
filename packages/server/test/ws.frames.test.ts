import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '@rill/testkit';
import { frame, rawWebSocket, WsClient, wsUrl } from '@rill/testkit/ws';

const MAX_PAYLOAD = 64 * 1024;

let url: string;
let close: () => Promise<void>;
let watcher: WsClient;

beforeAll(async () => {
  ({ url, close } = await startServer({ ws: { maxPayload: MAX_PAYLOAD } }));
  watcher = await WsClient.open(wsUrl(url));
  await watcher.request({ op: 'subscribe', topics: ['f.live'] });
});
afterAll(async () => {
  watcher.terminate();
  await close();
});

/** Another client keeps being served: it still receives a fresh event. */
async function othersUnaffected(): Promise<void> {
  const n = watcher.events().length;
  const c = await WsClient.open(wsUrl(url));
  expect(await c.request({ op: 'publish', topic: 'f.live', data: n })).toMatchObject({ op: 'ack' });
  await watcher.until((m) => m.filter((x) => x.op === 'event').length === n + 1);
  c.terminate();
}

/** Sends raw bytes after a handshake; resolves with the close code of the server's close frame. */
async function closeCodeFor(...chunks: Buffer[]): Promise<number> {
  const { socket, reader } = await rawWebSocket(url);
  for (const c of chunks) socket.write(c);
  const code = await reader.closeCode();
  socket.destroy();
  return code;
}

describe('WebSocket framing', () => {
  const text = JSON.stringify({ op: 'ping', id: 1 });

  it.each([
    ['an unmasked client frame', () => [frame(1, text, { mask: false })], 1002],
    ['RSV2 set', () => [frame(1, text, { rsv: 2 })], 1002],
    ['RSV3 set', () => [frame(1, text, { rsv: 1 })], 1002],
    ['RSV1 without permessage-deflate', () => [frame(1, text, { rsv: 4 })], 1002],
    ['an unknown opcode', () => [frame(3, text)], 1002],
    ['a continuation with nothing to continue', () => [frame(0, text)], 1002],
    ['a fragmented control frame', () => [frame(9, 'x', { fin: false })], 1002],
    ['a ping payload over 125 bytes', () => [frame(9, Buffer.alloc(126))], 1002],
    [
      'invalid UTF-8 in a text frame',
      () => [frame(1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))],
      1007,
    ],
    [
      'invalid UTF-8 split across fragments',
      () => [
        frame(1, Buffer.from([0x22, 0xe2]), { fin: false }),
        frame(0, Buffer.from([0x28, 0xa1])),
      ],
      1007,
    ],
    // The length field alone is enough: ws refuses before reading the payload.
    [
      'a message over maxPayload',
      () => [frame(1, Buffer.alloc(0), { length: MAX_PAYLOAD + 1 })],
      1009,
    ],
    [
      'fragments that add up to more than maxPayload',
      () => [
        frame(1, Buffer.alloc(40 * 1024, 0x20), { fin: false }),
        frame(0, Buffer.alloc(40 * 1024, 0x20)),
      ],
      1009,
    ],
    [
      'an endless run of empty fragments',
      () => [
        frame(1, '', { fin: false }),
        Buffer.concat(Array.from({ length: 1100 }, () => frame(0, '', { fin: false }))),
      ],
      1008,
    ],
  ] as Array<[string, () => Buffer[], number]>)(
    'closes on %s with %i',
    async (_what, build, code) => {
      expect(await closeCodeFor(...build())).toBe(code);
      await othersUnaffected();
    },
  );

  it('reassembles a fragmented message within the limits', async () => {
    const { socket, reader } = await rawWebSocket(url);
    const msg = Buffer.from(JSON.stringify({ op: 'ping', id: 'frag' }));
    const parts = [msg.subarray(0, 5), msg.subarray(5, 9), Buffer.alloc(0), msg.subarray(9)];
    socket.write(frame(1, parts[0]!, { fin: false }));
    socket.write(frame(0, parts[1]!, { fin: false }));
    // A control frame may come between fragments.
    socket.write(frame(9, 'hi'));
    socket.write(frame(0, parts[2]!, { fin: false }));
    socket.write(frame(0, parts[3]!));
    await reader.until((f) => f.some((x) => x.opcode === 1));
    expect(reader.frames.find((x) => x.opcode === 10)?.payload.toString()).toBe('hi');
    expect(reader.texts()).toEqual([{ op: 'pong', id: 'frag' }]);
    socket.destroy();
  });

  it('takes a message of exactly maxPayload', async () => {
    const c = await WsClient.open(wsUrl(url));
    const base = JSON.stringify({ op: 'ping', id: 'big' });
    c.send(base.slice(0, -1) + ' '.repeat(MAX_PAYLOAD - base.length) + '}');
    await c.until((m) => m.some((x) => x.op === 'pong'));
    c.send(base.slice(0, -1) + ' '.repeat(MAX_PAYLOAD - base.length + 1) + '}');
    expect((await c.closed).code).toBe(1009);
  });
});

describe('permessage-deflate', () => {
  it('is off by default', async () => {
    const c = await WsClient.open(wsUrl(url), { perMessageDeflate: true });
    expect(c.ws.extensions).toBe('');
    c.terminate();
  });

  it('is negotiated when enabled, and a decompression bomb closes with 1009', async () => {
    const s = await startServer({ ws: { perMessageDeflate: true, maxPayload: MAX_PAYLOAD } });
    try {
      const c = await WsClient.open(wsUrl(s.url), { perMessageDeflate: true });
      expect(c.ws.extensions).toContain('permessage-deflate');
      await c.request({ op: 'subscribe', topics: ['z'] });
      const data = 'compressible '.repeat(2000);
      expect((await c.request({ op: 'publish', topic: 'z', data })).op).toBe('ack');
      await c.until((m) => m.some((x) => x.op === 'event' && x.event!.data === data));

      // 16 MiB of one byte compresses to about 16 KiB: well under maxPayload on the wire.
      const bomb = await WsClient.open(wsUrl(s.url), { perMessageDeflate: true });
      const other = await WsClient.open(wsUrl(s.url), { perMessageDeflate: true });
      bomb.send('a'.repeat(16 * 1024 * 1024));
      expect((await bomb.closed).code).toBe(1009);
      expect((await other.request({ op: 'ping' })).op).toBe('pong');
      c.terminate();
      other.terminate();
    } finally {
      await s.close();
    }
  });
});
