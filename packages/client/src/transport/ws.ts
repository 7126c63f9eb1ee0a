import { fromBody, rillError, type RillError } from '../errors.js';
import type { ResetNotice, RillEvent } from '../types.js';
import type { StreamHandlers, StreamRequest, Transport, TransportContext } from './transport.js';

/** The WebSocket constructor shape the SDK needs (browsers' global, `ws`, undici's). */
export type WebSocketLike = new (url: string, protocols?: string | string[]) => WebSocket;

interface Entry {
  req: StreamRequest;
  h: StreamHandlers;
  reqId: number;
  sub?: string;
}

/**
 * One WebSocket (`rill.v1`) per client, shared by all its subscriptions: each `open` is a
 * `subscribe` on it; a dropped socket closes every subscription on it, and each reconnects with
 * its own backoff and cursor, reopening the socket on first need.
 */
class Mux {
  private ws: WebSocket | undefined;
  private readonly entries = new Map<number, Entry>();
  private nextId = 1;
  private lastRx = 0;
  private readonly abandoned = new Set<number>();
  private ticker: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly ctx: TransportContext) {}

  open(req: StreamRequest, h: StreamHandlers): () => void {
    const e: Entry = { req, h, reqId: this.nextId++ };
    this.entries.set(e.reqId, e);
    const ws = this.socket();
    if (ws.readyState === 1) this.subscribe(e);
    return () => {
      if (!this.entries.delete(e.reqId)) return;
      if (this.ws?.readyState === 1) {
        if (e.sub) this.unsubscribe(e.sub);
        // Its `subscribed` has not come yet: unsubscribe when it does (StrictMode does this).
        else this.abandoned.add(e.reqId);
      }
      this.dropIfIdle();
    };
  }

  private socket(): WebSocket {
    if (this.ws) return this.ws;
    const Impl = (this.ctx.options.WebSocket ?? globalThis.WebSocket) as WebSocketLike | undefined;
    if (!Impl) {
      throw rillError('connection_failed', 'No WebSocket implementation: pass one as `WebSocket`');
    }
    const ws = new Impl(`${this.ctx.url.replace(/^http/, 'ws')}/v1/ws`, 'rill.v1');
    this.ws = ws;
    ws.onopen = () => {
      this.lastRx = Date.now();
      // Browsers hide protocol pings: the `ping` op is how a client notices a dead path.
      const idle = (this.ctx.options.idleTimeout as number | undefined) ?? 45_000;
      this.ticker = setInterval(() => {
        const quiet = Date.now() - this.lastRx;
        if (quiet > idle) this.fail(ws, 4003, 'no answer to pings');
        else if (quiet > idle / 3) ws.send(JSON.stringify({ op: 'ping', id: this.nextId++ }));
      }, idle / 3);
      for (const e of this.entries.values()) this.subscribe(e);
    };
    // A close always follows an error; Node's `ws` throws an error nobody listens to.
    ws.onerror = () => {};
    ws.onmessage = (m: MessageEvent) => {
      this.lastRx = Date.now();
      this.message(String(m.data));
    };
    ws.onclose = (c: CloseEvent) => this.fail(ws, c.code, c.reason);
    return ws;
  }

  /** The socket is gone (or given up on): every subscription on it reconnects by its close code. */
  private fail(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = undefined;
    this.abandoned.clear();
    clearInterval(this.ticker);
    if (ws.readyState < 2) ws.close();
    const err = rillError(
      'connection_failed',
      `WebSocket closed (${code}${reason ? ` ${reason}` : ''})`,
      {
        closeCode: code,
      },
    );
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const e of all) e.h.close(err);
  }

  private unsubscribe(sub: string): void {
    this.ws?.send(JSON.stringify({ op: 'unsubscribe', id: this.nextId++, sub }));
  }

  /** No subscription left: close the socket (after pending unsubscribes, if any). */
  private dropIfIdle(): void {
    if (this.entries.size === 0 && this.abandoned.size === 0) this.drop(1000, 'no subscriptions');
  }

  private drop(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = undefined;
    this.abandoned.clear();
    clearInterval(this.ticker);
    ws?.close(code, reason);
  }

  private subscribe(e: Entry): void {
    const { topics, from, since, cursor } = e.req;
    this.ws!.send(JSON.stringify({ op: 'subscribe', id: e.reqId, topics, from, since, cursor }));
  }

  private message(text: string): void {
    const m = JSON.parse(text) as Record<string, unknown>;
    if (typeof m.id === 'number' && this.abandoned.delete(m.id)) {
      if (m.op === 'subscribed') this.unsubscribe(m.sub as string);
      this.dropIfIdle();
      return;
    }
    let e: Entry | undefined;
    if (typeof m.id === 'number') e = this.entries.get(m.id);
    if (!e && typeof m.sub === 'string') {
      for (const x of this.entries.values()) if (x.sub === m.sub) e = x;
    }
    if (!e) return;
    switch (m.op) {
      case 'subscribed':
        e.sub = m.sub as string;
        e.h.open({});
        e.h.cursor(m.cursor as string);
        return;
      case 'event': {
        const ev = m.event as RillEvent;
        e.h.event(ev, (m.cursor as string | undefined) ?? ev.id);
        return;
      }
      case 'reset': {
        const n = { ...m, kind: 'reset' } as Record<string, unknown>;
        delete n.op;
        delete n.sub;
        delete n.cursor;
        e.h.reset(n as unknown as ResetNotice, m.cursor as string);
        return;
      }
      case 'error': {
        this.entries.delete(e.reqId);
        const err: RillError = fromBody(m);
        e.h.close(err);
        this.dropIfIdle();
        return;
      }
    }
  }
}

const muxes = new WeakMap<TransportContext, Mux>();

/** WebSocket transport (`rill.v1`); pass `WebSocket` in the client options where there is none. */
export const wsTransport: Transport = (req, h, ctx) => {
  let mux = muxes.get(ctx);
  if (!mux) muxes.set(ctx, (mux = new Mux(ctx)));
  return mux.open(req, h);
};
