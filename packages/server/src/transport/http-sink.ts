import type { ServerResponse } from 'node:http';
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
    return new Promise((resolve) => {
      const done = (): void => {
        this.res.off('drain', done);
        this.res.off('close', done);
        gz?.off('drain', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
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
