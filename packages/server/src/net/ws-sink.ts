import { WebSocket } from 'ws';
import type { ResetNotice, Sink } from '../fanout/sink.js';
import type { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import {
  FRAME_END,
  wsEphemeralFrame,
  wsErrorFrame,
  wsEventFrame,
  wsEventPrefix,
  wsResetFrame,
} from '../wire/ws.js';
import type { TransportMeter } from '../model/meters.js';
import { idleRawSocket, socketOf, textFrameHeader } from './ws-internals.js';

/**
 * The socket side of WebSocket subscriptions: the writer every subscription of a connection
 * shares, and one hub sink per subscription. What goes in the messages is wire/ws.ts.
 */

/** Buffers go out as text messages (they hold UTF-8 JSON). */
const TEXT = { binary: false } as const;

let lastChunk: string | null = null;
let lastFrames: Buffer[] = [];

/**
 * A coalesced chunk as one UTF-8 Buffer per message. Frame once: the hub flushes every socket of a
 * topic one after another with the same chunk (the same shared event frames), so a one-entry cache
 * turns N encodings into one, and `ws` sends an unmasked Buffer without copying it: each socket
 * gets only its own 2–10 byte header.
 */
function framesOf(chunk: string): Buffer[] {
  if (chunk === lastChunk) return lastFrames;
  const frames: Buffer[] = [];
  let start = 0;
  while (start < chunk.length) {
    let end = chunk.indexOf(FRAME_END, start);
    if (end === -1) end = chunk.length;
    if (end > start) frames.push(Buffer.from(chunk.slice(start, end)));
    start = end + 1;
  }
  lastChunk = chunk;
  lastFrames = frames;
  return frames;
}

let lastWireChunk: string | null = null;
let lastWire: Buffer = Buffer.alloc(0);
/** The messages' own bytes in `lastWire` (without their headers). */
let lastWirePayload = 0;

/**
 * A coalesced chunk as the bytes of its complete WebSocket text frames, headers included: a
 * server's frames are unmasked, so without permessage-deflate they are the same bytes on every
 * socket. Built once per chunk (one-entry cache, as above) and written to each socket as is.
 * Headers come from ws's `Sender.frame`: about 50 ns more per frame than writing them by hand,
 * paid once per chunk for all the sockets of a topic.
 */
function wireOf(chunk: string): Buffer {
  if (chunk === lastWireChunk) return lastWire;
  const parts: Buffer[] = [];
  let payload = 0;
  for (const f of framesOf(chunk)) {
    parts.push(textFrameHeader(f), f);
    payload += f.length;
  }
  lastWirePayload = payload;
  lastWireChunk = chunk;
  lastWire = Buffer.concat(parts);
  return lastWire;
}

/**
 * The outbound side of one WebSocket, shared by the connection's replies and all its
 * subscriptions: one message per frame, one socket write per batch, and a drain signal.
 *
 * `ws` has no `'drain'` event. Instead every batch ends with a send whose completion callback
 * (the socket's write callback: the bytes reached the kernel) is numbered; `waitFlushed()` waits
 * for the send that was last when it was called. Callbacks complete in order, so that means
 * everything buffered at the call has gone out. This guarantees progress where "wait until the
 * buffer is empty" would not: another subscription writing every tick can keep the socket from
 * ever being empty, but cannot stop older bytes from leaving. Pending waiters are bounded by the
 * connection's subscriptions (each awaits at most one) and are released when the socket closes.
 */
export class WsWriter {
  private issued = 0;
  private completed = 0;
  private waiters: Array<{ seq: number; resolve: () => void }> = [];
  private closed = false;
  /** Batches written to the socket directly, as prebuilt frames (for tests and metrics). */
  rawWrites = 0;

  /** `meter` counts the bytes of the events and replies sent (and, through subscriptions, events). */
  constructor(
    readonly ws: WebSocket,
    readonly meter: TransportMeter | null = null,
  ) {
    ws.once('close', () => {
      this.closed = true;
      this.release(Number.POSITIVE_INFINITY);
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  /** Bytes sent but not yet taken by the kernel: the socket's buffer plus ws's deflate queue. */
  bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  /** Sends one message. */
  send(text: string): void {
    if (!this.isOpen) return;
    this.sendTracked(text);
  }

  /**
   * Sends each FRAME_END-terminated frame of `chunk` as its own message, in one socket write.
   * Returns the messages' own bytes; the meter counts them with their headers (before any
   * permessage-deflate).
   */
  sendFrames(chunk: string): number {
    if (!this.isOpen) return 0;
    // Fast path, hand-written because it is the fan-out hot path: the shared frame bytes go to
    // the socket in one write, with no per-message header or callback. Only while ws's own frames
    // cannot interleave with these (see idleRawSocket).
    const raw = idleRawSocket(this.ws);
    if (raw !== null) {
      this.rawWrites++;
      const seq = ++this.issued;
      const wire = wireOf(chunk);
      if (this.meter) this.meter.bytes += wire.length;
      raw.write(wire, () => this.complete(seq));
      return lastWirePayload;
    }
    const frames = framesOf(chunk);
    // Payloads, and for the meter a header of 2 to 10 bytes each.
    let payload = 0;
    let n = 0;
    for (const f of frames) {
      payload += f.length;
      n += f.length + (f.length < 126 ? 2 : f.length < 65536 ? 4 : 10);
    }
    if (this.meter) this.meter.bytes += n;
    // ws corks per frame; an outer cork turns the whole batch into a single writev.
    const socket = socketOf(this.ws);
    socket?.cork();
    try {
      const last = frames.length - 1;
      for (let i = 0; i < last; i++) this.ws.send(frames[i]!, TEXT);
      if (last >= 0) this.sendTracked(frames[last]!);
    } finally {
      socket?.uncork();
    }
    return payload;
  }

  /** Resolves once everything sent before the call has reached the kernel, or the socket closed. */
  waitFlushed(): Promise<void> {
    const seq = this.issued;
    if (this.closed || seq <= this.completed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  private sendTracked(data: string | Buffer): void {
    const seq = ++this.issued;
    if (this.meter && typeof data === 'string') {
      const n = Buffer.byteLength(data);
      this.meter.bytes += n + (n < 126 ? 2 : n < 65536 ? 4 : 10);
    }
    // Called with an error too when the socket is gone; either way the bytes are no longer ours.
    this.ws.send(data, TEXT, () => this.complete(seq));
  }

  private complete(seq: number): void {
    if (seq > this.completed) this.completed = seq;
    this.release(this.completed);
  }

  private release(upTo: number): void {
    let n = 0;
    while (n < this.waiters.length && this.waiters[n]!.seq <= upTo) n++;
    if (n === 0) return;
    const done = this.waiters.splice(0, n);
    for (const w of done) w.resolve();
  }
}

/**
 * One subscription's view of a shared WebSocket (a hub sink). Until `open()` it holds what the hub
 * writes, so the `subscribed` reply always precedes the subscription's first event; what it holds
 * counts as buffered, so the hub's slow-consumer bound applies from the first byte.
 *
 * `end(error)` sends an `error` frame for this subscription only and tells the connection, which
 * forgets it: a failing subscription never closes the socket.
 */
export class WsSink implements Sink {
  private held: string[] | null = [];
  private heldBytes = 0;
  private openWaiters: Array<() => void> = [];
  private ended = false;
  /** The error the subscription ended with, if it ended before `open()`. */
  failure: RillError | undefined;
  private readonly eventPrefix: string;
  /** The connection's meter: the subscription counts its events there. */
  readonly meter: TransportMeter | null;

  constructor(
    private readonly writer: WsWriter,
    readonly sub: string,
    private readonly onEnd: (sink: WsSink, error?: RillError) => void,
  ) {
    this.eventPrefix = wsEventPrefix(sub);
    this.meter = writer.meter;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Starts sending: held frames first. */
  open(): void {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    this.heldBytes = 0;
    if (!this.ended && held.length > 0) this.bytesWritten += this.writer.sendFrames(held.join(''));
    this.releaseOpenWaiters();
  }

  frameEvent(ev: RillEvent, id: string | null): string {
    return wsEventFrame(this.eventPrefix, ev, id);
  }

  frameReset(notice: ResetNotice, id: string): string {
    return wsResetFrame(this.sub, notice, id) + FRAME_END;
  }

  frameEphemeral(ev: EphemeralEvent): string {
    return wsEphemeralFrame(this.eventPrefix, ev);
  }

  write(chunk: string): void {
    if (this.ended) return;
    if (this.held !== null) {
      this.held.push(chunk);
      this.heldBytes += chunk.length;
      return;
    }
    this.bytesWritten += this.writer.sendFrames(chunk);
  }

  /** See `Sink.bytesWritten`. */
  bytesWritten = 0;

  bufferedBytes(): number {
    return this.heldBytes + this.writer.bufferedBytes();
  }

  waitDrain(): Promise<void> {
    if (this.ended || !this.writer.isOpen) return Promise.resolve();
    if (this.held !== null) return new Promise((resolve) => this.openWaiters.push(resolve));
    return this.writer.waitFlushed();
  }

  /** Protocol-level pings keep WebSocket connections alive; see the connection's ping sweep. */
  heartbeat(): void {}

  end(error?: RillError): void {
    if (this.ended) return;
    this.ended = true;
    if (this.held === null) {
      if (error) {
        this.meter?.failed(error);
        this.writer.send(wsErrorFrame(error, { sub: this.sub }));
      }
    } else {
      // Not announced yet: the subscribe request's reply reports the error instead.
      this.failure = error;
      this.held = null;
      this.heldBytes = 0;
    }
    this.releaseOpenWaiters();
    this.onEnd(this, error);
  }

  /** Stops the sink without telling the client (unsubscribe, connection gone). */
  detach(): void {
    if (this.ended) return;
    this.ended = true;
    this.held = null;
    this.heldBytes = 0;
    this.releaseOpenWaiters();
  }

  private releaseOpenWaiters(): void {
    const w = this.openWaiters;
    this.openWaiters = [];
    for (const resolve of w) resolve();
  }
}
