import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from '@rill/testkit';
import { frame, rawWebSocket, WsClient, wsUrl } from '@rill/testkit/ws';

const PING_INTERVAL = 200;
const PING_TIMEOUT = 300;
/** The sweep runs every min(interval, timeout) / 4; allow scheduling noise on a busy machine. */
const SLACK = 400;

let url: string;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ url, close } = await startServer({
    ws: { pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT },
  }));
});
afterAll(async () => close());

describe('WebSocket liveness', () => {
  it('terminates a peer that never answers pings within pingInterval + pingTimeout', async () => {
    const live = await WsClient.open(wsUrl(url));
    const t0 = Date.now();
    const { socket, reader } = await rawWebSocket(url);
    // The raw peer reads everything and answers nothing.
    const code = await reader.closeCode(5000);
    await new Promise<void>((resolve) => {
      if (socket.closed) resolve();
      else socket.once('close', () => resolve());
    });
    const elapsed = Date.now() - t0;
    expect(reader.frames.some((f) => f.opcode === 9)).toBe(true);
    expect(code).toBe(4003);
    expect(elapsed).toBeLessThanOrEqual(PING_INTERVAL + PING_TIMEOUT + SLACK);

    // A peer that answers (ws pongs automatically) stays through many rounds.
    await live.untilPings(6, 5000);
    expect(live.closeInfo).toBeNull();
    expect((await live.request({ op: 'ping' })).op).toBe('pong');
    live.terminate();
  });

  it('keeps a raw peer that answers pings, and drops it once it stops', async () => {
    const { socket, reader } = await rawWebSocket(url);
    let seen = 0;
    let answered = 0;
    const stopped = new Promise<number>((resolve) => {
      const check = (): void => {
        for (; seen < reader.frames.length && answered < 4; seen++) {
          const f = reader.frames[seen]!;
          if (f.opcode !== 9) continue;
          socket.write(frame(10, f.payload));
          if (++answered === 4) resolve(Date.now());
        }
      };
      // FrameReader parses on the same 'data' event; look once it has.
      socket.on('data', () => setImmediate(check));
    });
    const stoppedAt = await stopped;
    expect(socket.closed).toBe(false);
    const code = await reader.closeCode(5000);
    expect(code).toBe(4003);
    expect(Date.now() - stoppedAt).toBeLessThanOrEqual(PING_INTERVAL + PING_TIMEOUT + SLACK);
  });
});

describe('WebSocket ping flood', () => {
  it('drops a peer that pings without reading the pongs; others are still served', async () => {
    const { socket, reader } = await rawWebSocket(url);
    // 1M pings: far more than the kernel's socket buffers on both sides hold, so the server can
    // only keep up by buffering pongs itself, which it refuses to do past 60 owed pongs.
    const one = frame(9, Buffer.alloc(125, 0x61));
    socket.write(Buffer.alloc(one.length * 1_000_000, one), () => {});
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await closed;
    // Dropped, not closed politely: no close frame, and far fewer pongs than pings.
    expect(reader.frames.some((f) => f.opcode === 8)).toBe(false);
    expect(reader.frames.filter((f) => f.opcode === 10).length).toBeLessThan(1_000_000);
    const other = await WsClient.open(wsUrl(url));
    expect((await other.request({ op: 'ping' })).op).toBe('pong');
    other.terminate();
  });
});
