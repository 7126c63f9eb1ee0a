import { Socket } from 'node:net';
import * as wsModule from 'ws';
import { WebSocket, WebSocketServer } from 'ws';

/**
 * Every use of `ws` beyond its typed public API, in one place. The raw-frame fast path writes
 * complete frames to a WebSocket's socket itself, which is only sound while ws's own sender is
 * idle; seeing that takes ws's private fields. {@link probeWs} checks them once at start-up on a
 * WebSocket over an unconnected socket; when it fails, every message goes through `ws.send`.
 * The `ws` dependency is pinned to the minor version this was checked against.
 */

/** The parts of ws's sender the raw fast path must see idle. */
interface SenderState {
  _state?: unknown;
  _queue?: unknown;
}

/** The private fields of a ws WebSocket read here. */
interface WebSocketState {
  _socket?: unknown;
  _sender?: SenderState | null;
}

/** ws's state of a sender with nothing under way (`DEFAULT` in lib/sender.js). */
const SENDER_IDLE = 0;

/** Frame options of `Sender.frame`, as documented in ws's lib/sender.js. */
interface FrameOptions {
  fin: boolean;
  opcode: number;
  mask: boolean;
  readOnly: boolean;
  rsv1: boolean;
}

/** ws's `Sender`, exported by the package but absent from its type definitions. */
const Sender = (
  wsModule as unknown as {
    Sender?: { frame?(data: Buffer, options: FrameOptions): Buffer[] };
  }
).Sender;

const TEXT_FRAME: FrameOptions = {
  fin: true,
  opcode: 0x1,
  mask: false,
  readOnly: false,
  rsv1: false,
};

/**
 * The header of an unmasked, final text frame carrying `payload`, built by ws's public
 * `Sender.frame` (which, unmasked, returns the header and the payload as it was given).
 */
export function textFrameHeader(payload: Buffer): Buffer {
  return Sender!.frame!(payload, TEXT_FRAME)[0]!;
}

export interface ProbeResult {
  ok: boolean;
  /** Why not, when not. */
  reason?: string;
}

let probed: ProbeResult | null = null;

/**
 * Checks, once per process, that `ws` has what {@link idleRawSocket} and {@link textFrameHeader}
 * rely on: `Sender.frame` building the expected header, and on a server-side WebSocket set up
 * over an unconnected socket, the socket and an idle sender with an empty queue where they are
 * read.
 */
export function probeWs(): ProbeResult {
  probed ??= runProbe();
  return probed;
}

function runProbe(): ProbeResult {
  if (typeof Sender?.frame !== 'function') return { ok: false, reason: 'Sender.frame' };
  const socket = new Socket();
  try {
    const header = textFrameHeader(Buffer.alloc(200));
    if (!header.equals(Buffer.from([0x81, 126, 0, 200]))) {
      return { ok: false, reason: 'Sender.frame header' };
    }
    // The server side of a connection, made as WebSocketServer makes it after a handshake, with
    // the options it fills in.
    const { options } = new WebSocketServer({ noServer: true }) as unknown as {
      options: Record<string, unknown>;
    };
    const ws = new (
      WebSocket as unknown as new (
        address: null,
        protocols: undefined,
        options: Record<string, unknown>,
      ) => WebSocket
    )(null, undefined, options);
    (ws as unknown as { setSocket(s: Socket, head: Buffer, o: object): void }).setSocket(
      socket,
      Buffer.alloc(0),
      options,
    );
    const inner = ws as unknown as WebSocketState;
    if (inner._socket !== socket) return { ok: false, reason: 'WebSocket._socket' };
    if (inner._sender?._state !== SENDER_IDLE) return { ok: false, reason: 'Sender._state' };
    const queue = inner._sender._queue;
    if (!Array.isArray(queue) || queue.length !== 0) {
      return { ok: false, reason: 'Sender._queue' };
    }
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: String(err) };
  } finally {
    socket.destroy();
  }
}

/**
 * The socket of `ws` when frames written to it directly cannot interleave with ws's own: the
 * start-up probe passed, no extension (permessage-deflate) is in use, and ws's sender is idle
 * (nothing being compressed or read from a Blob, nothing queued), the state from which ws itself
 * writes synchronously. Null otherwise.
 */
export function idleRawSocket(ws: WebSocket): Socket | null {
  if (!probeWs().ok || ws.extensions !== '') return null;
  const inner = ws as unknown as WebSocketState;
  const sender = inner._sender;
  if (
    !(inner._socket instanceof Socket) ||
    sender?._state !== SENDER_IDLE ||
    !Array.isArray(sender._queue) ||
    sender._queue.length !== 0
  ) {
    return null;
  }
  return inner._socket;
}

/** The socket under `ws`, when it is one (to cork a batch of ws's own writes). */
export function socketOf(ws: WebSocket): Socket | null {
  const socket = (ws as unknown as WebSocketState)._socket;
  return socket instanceof Socket ? socket : null;
}
