import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { constants as zlibConstants, createGzip, type Gzip } from 'node:zlib';
import type { RillError } from '../errors.js';
import type { RillEvent } from '../event.js';
import type { ResetNotice, Sink } from '../sink.js';

/** How a streaming HTTP transport frames what the hub hands it. */
export interface Framing {
  contentType: string;
  /** Bytes sent right after the headers. */
  preamble: string;
  event(ev: RillEvent, id: string | null): string;
  reset(n: ResetNotice, id: string): string;
  error(err: RillError): string;
  /** Bytes that keep an idle stream alive. */
  heartbeat: string;
}

export interface HttpSinkOptions {
  /** gzip the stream (the client sent `Accept-Encoding: gzip` and config allows it). */
  gzip: boolean;
}

let lastChunk: string | null = null;
let lastWire: Buffer = Buffer.alloc(0);

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
  return out;
}

/** The parts of Node's ServerResponse the raw fast path must check (node:http internals). */
interface ResponseState {
  chunkedEncoding?: boolean;
  _headerSent?: boolean;
  outputSize?: number;
}

/**
 * A hub sink over a streaming HTTP response (SSE, NDJSON). Headers go out on `open()` or with the
 * first bytes, so a subscription that fails while it is being set up can still answer with a
 * plain JSON error and status.
 *
 * With gzip, every write is followed by a sync flush: the hub already writes once per tick, so
 * compression costs no latency, and heartbeats reach the client through the compressor.
 */
export class HttpStreamSink implements Sink {
  private opened = false;
  private ended = false;
  private gz: Gzip | null = null;

  constructor(
    private readonly res: ServerResponse,
    private readonly framing: Framing,
    private readonly options: HttpSinkOptions,
  ) {}

  get headersSent(): boolean {
    return this.opened;
  }

  open(): void {
    if (this.opened) return;
    this.opened = true;
    this.res.socket?.setNoDelay(true);
    const headers: Record<string, string> = {
      'content-type': this.framing.contentType,
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      // nginx (and others honouring it) would otherwise buffer the stream.
      'x-accel-buffering': 'no',
      vary: 'accept-encoding',
    };
    if (this.options.gzip) {
      headers['content-encoding'] = 'gzip';
      this.gz = createGzip({ flush: zlibConstants.Z_SYNC_FLUSH });
      this.gz.pipe(this.res);
    }
    this.res.writeHead(200, headers);
    if (this.framing.preamble) this.send(this.framing.preamble);
    else this.res.flushHeaders();
    // Node keeps the header block it sent for the response's whole life, as a rope of a few dozen
    // small strings (one per concatenation, ~0.8 KiB); a long-lived idle stream is mostly such
    // leftovers, so keep one flat copy instead. Node only tests it for presence from now on.
    const state = this.res as unknown as { _header?: string | null };
    if (typeof state._header === 'string') {
      state._header = Buffer.from(state._header, 'latin1').toString('latin1');
    }
  }

  /**
   * The response's socket when bytes may go to it directly: headers sent, chunked encoding,
   * nothing queued in the response, and the response is the socket's current message (not one
   * waiting behind an earlier pipelined response).
   */
  private rawSocket(): Socket | null {
    const res = this.res;
    const socket = res.socket as (Socket & { _httpMessage?: unknown }) | null;
    const state = res as unknown as ResponseState;
    if (
      socket === null ||
      socket._httpMessage !== res ||
      state.chunkedEncoding !== true ||
      state._headerSent !== true ||
      state.outputSize !== 0 ||
      res.writableEnded
    ) {
      return null;
    }
    return socket;
  }

  private send(chunk: string): void {
    if (this.gz) {
      this.gz.write(chunk);
      this.gz.flush(zlibConstants.Z_SYNC_FLUSH);
    } else {
      this.res.write(chunk);
    }
  }

  frameEvent(ev: RillEvent, id: string | null): string {
    return this.framing.event(ev, id);
  }

  frameReset(n: ResetNotice, id: string): string {
    return this.framing.reset(n, id);
  }

  write(chunk: string): void {
    if (this.ended) return;
    if (!this.opened) this.open();
    if (!this.gz) {
      // Fast path, hand-written because it is the fan-out hot path: `res.write` costs a size
      // computation, a UTF-8 encoding, a cork with a nextTick and a four-part writev per socket;
      // here each socket gets one write of bytes built once per chunk (see wireOf). The framing
      // is the same chunked encoding `res` would produce, so `res.end()` still ends it properly.
      const socket = this.rawSocket();
      if (socket !== null) {
        socket.write(wireOf(chunk));
        return;
      }
    }
    this.send(chunk);
  }

  bufferedBytes(): number {
    return (
      this.res.writableLength + (this.gz ? this.gz.writableLength + this.gz.readableLength : 0)
    );
  }

  waitDrain(): Promise<void> {
    if (this.ended || this.res.destroyed) return Promise.resolve();
    const gz = this.gz;
    // Raw writes (see write) leave the response unaware of the socket's backlog, so the
    // socket's own drain counts too.
    const socket = this.res.socket;
    return new Promise((resolve) => {
      const done = (): void => {
        this.res.off('drain', done);
        this.res.off('close', done);
        socket?.off('drain', done);
        gz?.off('drain', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
      socket?.on('drain', done);
      gz?.on('drain', done);
    });
  }

  heartbeat(): void {
    if (this.opened && !this.ended) this.send(this.framing.heartbeat);
  }

  end(error?: RillError): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.opened) {
      const status = error?.status ?? 200;
      const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
      if (error?.retryable && status === 503) headers['retry-after'] = '1';
      this.res.writeHead(status, headers);
      this.res.end(error ? JSON.stringify(error.toJSON()) : '');
      return;
    }
    const tail = error ? this.framing.error(error) : '';
    if (this.gz) this.gz.end(tail);
    else this.res.end(tail);
  }
}
