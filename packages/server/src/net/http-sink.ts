import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { constants as zlibConstants, createGzip, type Gzip } from 'node:zlib';
import { detachFromHttp } from './node-http-internals.js';
import type { ResetNotice, Sink } from '../fanout/sink.js';
import { retryAfterSeconds, type RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import type { TransportMeter } from '../model/meters.js';
import type { Framing } from '../wire/framing.js';
import { drainOrClose } from './drain.js';

export interface HttpSinkOptions {
  /** gzip the stream (the client sent `Accept-Encoding: gzip` and config allows it). */
  gzip: boolean;
}

let lastChunk: string | null = null;
let lastWire: Buffer = Buffer.alloc(0);
/** The UTF-8 bytes of `lastChunk` (its wire bytes without the chunk's size line and CRLF). */
let lastSize = 0;

/**
 * A coalesced chunk as the bytes of one HTTP/1.1 chunk (`<hex size>\r\n<chunk>\r\n`). The hub
 * flushes every subscriber of a topic one after another with the same shared frames, so this
 * one-entry cache turns N encodings (and N size computations) into one, and every socket gets the
 * same bytes.
 */
function wireOf(chunk: string): Buffer {
  if (chunk === lastChunk) return lastWire;
  const size = Buffer.byteLength(chunk);
  const head = `${size.toString(16)}\r\n`;
  const out = Buffer.allocUnsafe(head.length + size + 2);
  out.write(head, 0, 'latin1');
  out.write(chunk, head.length, 'utf8');
  out[out.length - 2] = 0x0d;
  out[out.length - 1] = 0x0a;
  lastChunk = chunk;
  lastWire = out;
  lastSize = size;
  return out;
}

/**
 * Largest chunk (in UTF-16 units) sent as shared bytes from {@link wireOf}. A larger one written
 * as one string goes out as a string: Node encodes it into memory it frees as soon as the kernel
 * has the bytes, whereas a new Buffer per large chunk is only freed by a later garbage collection,
 * and a few hundred MiB passing through in such Buffers would show as that much more resident
 * memory.
 */
const SHARED_CHUNK_MAX = 16 * 1024;

const CRLF = Buffer.from('\r\n', 'latin1');

/** The terminating chunk of a chunked body. */
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

/** The response headers of a stream (also what `HEAD` on a stream route answers). */
export function streamHeaders(framing: Framing, gzip: boolean): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': framing.contentType,
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    // nginx (and others honouring it) would otherwise buffer the stream.
    'x-accel-buffering': 'no',
    vary: 'accept-encoding',
  };
  if (gzip) headers['content-encoding'] = 'gzip';
  return headers;
}

/**
 * A hub sink over a streaming HTTP response (SSE, NDJSON). Headers go out on `open()` or with the
 * first bytes, so a subscription that fails while it is being set up can still answer with a
 * plain JSON error and status.
 *
 * Once open, an uncompressed stream's connection is detached from node:http (see
 * {@link detachFromHttp}) and the sink writes the chunked body straight to the socket. When that
 * is not possible (a pipelined request behind it, HTTP/1.0), it goes on through the response.
 *
 * With gzip, every write is followed by a sync flush: the hub already writes once per tick, so
 * compression costs no latency, and heartbeats reach the client through the compressor.
 */
export class HttpStreamSink implements Sink {
  private opened = false;
  private ended = false;
  private gz: Gzip | null = null;
  /** The response, until the connection is detached from it. */
  private res: ServerResponse | null;
  /** The connection, once detached: the chunked body is written to it directly. */
  private socket: Socket | null = null;
  private gone: (() => void) | null = null;

  constructor(
    res: ServerResponse,
    private readonly framing: Framing,
    private readonly options: HttpSinkOptions,
    /** Counts the bytes written (and, through the subscription, the events). */
    readonly meter: TransportMeter | null = null,
  ) {
    this.res = res;
  }

  get headersSent(): boolean {
    return this.opened;
  }

  /** True once the connection is detached from node:http (for tests and metrics). */
  get detached(): boolean {
    return this.socket !== null;
  }

  /** Calls `fn` once when the client goes away or the stream has ended. */
  onClose(fn: () => void): void {
    let called = false;
    this.gone = () => {
      if (called) return;
      called = true;
      fn();
    };
    this.res?.once('close', this.gone);
    this.socket?.once('close', this.gone);
  }

  open(): void {
    if (this.opened) return;
    this.opened = true;
    const res = this.res!;
    res.socket?.setNoDelay(true);
    const headers = streamHeaders(this.framing, this.options.gzip);
    if (this.options.gzip) {
      this.gz = createGzip({ flush: zlibConstants.Z_SYNC_FLUSH });
      this.gz.pipe(res);
    }
    res.writeHead(200, headers);
    if (this.framing.preamble) this.send(this.framing.preamble);
    else res.flushHeaders();
    if (this.gz === null) this.detach(res);
  }

  private detach(res: ServerResponse): void {
    const socket = detachFromHttp(res);
    if (socket === null) return;
    this.socket = socket;
    this.res = null;
    // The client has nothing more to say on this connection: anything it sends is dropped, its
    // end of the connection ends ours, and an error closes it (every path ends in 'close').
    socket.on('data', () => undefined);
    socket.on('end', () => socket.end());
    socket.on('error', () => socket.destroy());
    if (this.gone) socket.once('close', this.gone);
    socket.resume();
  }

  /** See `Sink.bytesWritten`: the frames' own bytes, as the stream's log line reports them. */
  bytesWritten = 0;

  /**
   * Writes one chunk; the transport meter counts what goes on the wire (HTTP chunk lines
   * included, before compression). Returns the chunk's own UTF-8 bytes.
   */
  private send(chunk: string): number {
    let size: number;
    let wireBytes: number;
    if (this.socket) {
      if (chunk.length <= SHARED_CHUNK_MAX) {
        const wire = wireOf(chunk);
        size = lastSize;
        wireBytes = wire.length;
        this.socket.write(wire);
      } else {
        // Three writes in one writev: concatenating the size line would make Node flatten
        // (copy) the whole chunk before encoding it.
        const socket = this.socket;
        size = Buffer.byteLength(chunk);
        const head = `${size.toString(16)}\r\n`;
        wireBytes = head.length + size + 2;
        socket.cork();
        socket.write(head, 'latin1');
        socket.write(chunk);
        socket.write(CRLF);
        socket.uncork();
      }
    } else if (this.gz) {
      // Counted before compression.
      size = wireBytes = Buffer.byteLength(chunk);
      this.gz.write(chunk);
      this.gz.flush(zlibConstants.Z_SYNC_FLUSH);
    } else {
      size = wireBytes = Buffer.byteLength(chunk);
      this.res!.write(chunk);
    }
    if (this.meter) this.meter.bytes += wireBytes;
    return size;
  }

  frameEvent(ev: RillEvent, id: string | null): string {
    return this.framing.event(ev, id);
  }

  frameReset(n: ResetNotice, id: string): string {
    return this.framing.reset(n, id);
  }

  frameEphemeral(ev: EphemeralEvent): string {
    return this.framing.ephemeral(ev);
  }

  /**
   * Hand-written fast path, because it is the fan-out hot path: on a detached connection each
   * socket gets one write of bytes built once per chunk (see wireOf), where `res.write` costs a
   * size computation, a UTF-8 encoding, a cork with a nextTick and a four-part writev per socket.
   */
  write(chunk: string): void {
    if (this.ended) return;
    if (!this.opened) this.open();
    this.bytesWritten += this.send(chunk);
  }

  bufferedBytes(): number {
    if (this.socket) return this.socket.writableLength;
    return (
      this.res!.writableLength + (this.gz ? this.gz.writableLength + this.gz.readableLength : 0)
    );
  }

  waitDrain(): Promise<void> {
    const target = this.socket ?? this.res!;
    if (this.ended || target.destroyed) return Promise.resolve();
    return drainOrClose(target, this.gz);
  }

  heartbeat(): void {
    if (this.opened && !this.ended) this.send(this.framing.heartbeat);
  }

  /** Why the server ended the stream: the error's code, `server`; null while it has not. */
  endReason: string | null = null;

  end(error?: RillError): void {
    if (this.ended) return;
    this.ended = true;
    this.endReason = error?.code ?? 'server';
    if (error) this.meter?.failed(error);
    const tail = error ? this.framing.error(error) : '';
    if (this.socket) {
      // The body ends properly (last chunk), then the connection: it belongs to no HTTP server.
      if (tail) this.socket.write(wireOf(tail));
      this.socket.end(LAST_CHUNK);
      return;
    }
    const res = this.res!;
    if (!this.opened) {
      const status = error?.status ?? 200;
      const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
      const retryAfter = retryAfterSeconds(error);
      if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter);
      res.writeHead(status, headers);
      res.end(error ? JSON.stringify(error.toJSON()) : '');
      return;
    }
    if (this.gz) this.gz.end(tail);
    else res.end(tail);
  }
}
