import type { ServerResponse } from 'node:http';
import type { RillError } from '../errors.js';
import type { RillEvent } from '../event.js';
import { eventId, eventJson } from '../event.js';
import type { ResetNotice, Sink } from '../sink.js';

/**
 * Server-Sent Events framing (WHATWG HTML §9.2). Each event is
 * `id: <cursor>` / `event: <type>` (when typed) / `data: <event JSON>`, blank line. The data is the
 * whole event object (topic, seq, id, type, time, key, data), the same bytes NDJSON and WebSocket
 * carry, so one serialization serves every transport.
 *
 * `id` and `event` can never break a frame: topic, epoch and seq have no line breaks by their
 * grammar, and `type` with CR, LF or NUL is rejected at publish.
 */

/** `data:` lines for arbitrary text: one field per line, whatever the line ending. */
export function sseData(text: string): string {
  if (text.indexOf('\n') === -1 && text.indexOf('\r') === -1) return `data: ${text}\n`;
  return text
    .split(/\r\n|\r|\n/)
    .map((line) => `data: ${line}\n`)
    .join('');
}

/** Everything after the `id:` line of an event's frame; cached on the event. */
function body(ev: RillEvent & { sseBody?: string }): string {
  let b = ev.sseBody;
  if (b === undefined) {
    b = (ev.type === undefined ? '' : `event: ${ev.type}\n`) + sseData(eventJson(ev)) + '\n';
    ev.sseBody = b;
  }
  return b;
}

/** The complete frame of an event on a single-topic stream; cached on the event. */
export function sseEventFrame(ev: RillEvent & { sse?: string }, id: string | null): string {
  if (id !== null) return `id: ${id}\n${body(ev)}`;
  let f = ev.sse;
  if (f === undefined) {
    f = `id: ${eventId(ev)}\n${body(ev)}`;
    ev.sse = f;
  }
  return f;
}

export function sseResetFrame(n: ResetNotice, id: string): string {
  return `id: ${id}\nevent: reset\n${sseData(JSON.stringify(n))}\n`;
}

export function sseErrorFrame(err: RillError): string {
  const body = JSON.stringify({
    code: err.code,
    message: err.message,
    retryable: err.retryable,
    closeCode: err.closeCode,
  });
  return `event: error\n${sseData(body)}\n`;
}

export interface SseOptions {
  /** `retry:` hint for EventSource reconnects, ms. */
  retryMs: number;
}

/**
 * A hub sink over an HTTP response. Headers go out on `open()` or with the first bytes, so a
 * subscription that fails while it is being set up can still answer with a plain JSON error.
 */
export class SseSink implements Sink {
  private opened = false;
  private ended = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly options: SseOptions,
  ) {}

  get headersSent(): boolean {
    return this.opened;
  }

  open(): void {
    if (this.opened) return;
    this.opened = true;
    this.res.socket?.setNoDelay(true);
    this.res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      // nginx (and others honouring it) would otherwise buffer the stream.
      'x-accel-buffering': 'no',
    });
    this.res.write(`retry: ${this.options.retryMs}\n\n`);
  }

  frameEvent(ev: RillEvent, id: string | null): string {
    return sseEventFrame(ev, id);
  }

  frameReset(n: ResetNotice, id: string): string {
    return sseResetFrame(n, id);
  }

  write(chunk: string): void {
    if (this.ended) return;
    if (!this.opened) this.open();
    this.res.write(chunk);
  }

  bufferedBytes(): number {
    return this.res.writableLength;
  }

  waitDrain(): Promise<void> {
    if (this.ended || this.res.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.res.off('drain', done);
        this.res.off('close', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
    });
  }

  heartbeat(): void {
    if (this.opened && !this.ended) this.res.write(':\n\n');
  }

  end(error?: RillError): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.opened) {
      const status = error?.status ?? 200;
      this.res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
      this.res.end(error ? JSON.stringify(error.toJSON()) : '');
      return;
    }
    this.res.end(error ? sseErrorFrame(error) : undefined);
  }
}
