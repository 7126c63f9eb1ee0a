import type { Http2ServerResponse, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { constants as zlibConstants, createGzip, type Gzip } from 'node:zlib';
import type { ResetNotice, Sink } from '../fanout/sink.js';
import { retryAfterSeconds, type RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';
import type { TransportMeter } from '../model/meters.js';
import type { Framing } from '../wire/framing.js';
import { streamHeaders, type HttpSinkOptions } from './http-sink.js';
import { drainOrClose } from './drain.js';

/**
 * A hub sink over an HTTP/2 stream (SSE, NDJSON): what `HttpStreamSink` is to an HTTP/1.1
 * response, through the public `Http2Stream` API only. There is nothing to detach: an HTTP/2
 * stream is already just a stream of DATA frames on a session other requests share.
 *
 * Backpressure is HTTP/2's own: a client that stops reading stops granting flow-control window,
 * and what the stream cannot send stays in its writable buffer, which `bufferedBytes` reports, so
 * the hub moves the subscription to catch-up past `limits.maxSubscriberBufferBytes` as it does for
 * a full socket. Headers go out on `open()` or with the first bytes, so a subscription that fails
 * while it is being set up still answers with a plain JSON error and status. With gzip, every
 * write is followed by a sync flush, as over HTTP/1.1.
 */
export class H2StreamSink implements Sink {
  private opened = false;
  private ended = false;
  private gz: Gzip | null = null;
  private readonly stream: ServerHttp2Stream;

  constructor(
    private readonly res: Http2ServerResponse,
    private readonly framing: Framing,
    private readonly options: HttpSinkOptions,
    /** Counts the bytes written (before compression) and, through the subscription, the events. */
    readonly meter: TransportMeter | null = null,
  ) {
    this.stream = res.stream;
    // A reset by the client (or a write racing it) ends in 'close', which onClose handles.
    this.stream.on('error', () => undefined);
  }

  get headersSent(): boolean {
    return this.opened;
  }

  /** Whether the stream can still take frames. */
  private get usable(): boolean {
    return !this.stream.destroyed && !this.stream.closed;
  }

  /** Calls `fn` once when the client goes away (RST_STREAM, session gone) or the stream ended. */
  onClose(fn: () => void): void {
    this.stream.once('close', fn);
  }

  open(): void {
    if (this.opened) return;
    this.opened = true;
    if (!this.usable) return;
    const headers: OutgoingHttpHeaders = streamHeaders(this.framing, this.options.gzip);
    // Connection-specific headers are not allowed in HTTP/2 (RFC 9113 §8.2.2).
    delete headers.connection;
    // Headers the route set on the response (CORS) go along: the stream is answered directly.
    this.stream.respond({ ':status': 200, ...this.res.getHeaders(), ...headers });
    if (this.options.gzip) {
      this.gz = createGzip({ flush: zlibConstants.Z_SYNC_FLUSH });
      this.gz.on('error', () => this.stream.destroy());
      this.gz.pipe(this.stream);
    }
    if (this.framing.preamble) this.send(this.framing.preamble);
  }

  /** See `Sink.bytesWritten`. */
  bytesWritten = 0;

  private send(chunk: string): void {
    const bytes = Buffer.byteLength(chunk);
    this.bytesWritten += bytes;
    if (this.meter) this.meter.bytes += bytes;
    if (this.gz) {
      this.gz.write(chunk);
      this.gz.flush(zlibConstants.Z_SYNC_FLUSH);
    } else if (this.usable) {
      this.stream.write(chunk);
    }
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

  write(chunk: string): void {
    if (this.ended) return;
    if (!this.opened) this.open();
    this.send(chunk);
  }

  bufferedBytes(): number {
    return (
      this.stream.writableLength + (this.gz ? this.gz.writableLength + this.gz.readableLength : 0)
    );
  }

  waitDrain(): Promise<void> {
    const stream = this.stream;
    if (this.ended || !this.usable) return Promise.resolve();
    return drainOrClose(stream, this.gz);
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
    if (!this.usable) return;
    if (!this.opened) {
      const status = error?.status ?? 200;
      const headers: OutgoingHttpHeaders = {
        ...this.res.getHeaders(),
        ':status': status,
        'content-type': 'application/json; charset=utf-8',
      };
      const retryAfter = retryAfterSeconds(error);
      if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter);
      this.stream.respond(headers);
      this.stream.end(error ? JSON.stringify(error.toJSON()) : '');
      return;
    }
    const tail = error ? this.framing.error(error) : '';
    if (this.gz) this.gz.end(tail);
    else this.stream.end(tail);
  }
}
