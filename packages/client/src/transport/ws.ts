import { fromBody, networkError, rillError, RillError } from '../errors.js';
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

/** Close codes that name a Rill error (docs/protocol.md § Errors); others are `connection_failed`. */
const CLOSE_CODES: Record<number, string> = {
  4006: 'token_expired',
  4008: 'rate_limited',
  4009: 'overloaded',
  4524: 'unauthorized',
  4525: 'forbidden',
};

/**
 * One WebSocket (`rill.v1`) per client, shared by all its subscriptions: each `open` is a
 * `subscribe` on it; a dropped socket closes every subscription on it, and each reconnects with
 * its own backoff and cursor, reopening the socket on first need.
 *
 * With a token, the socket's first message is `{"op":"auth"}` and subscribes wait for its
 * `authed` (browsers cannot set headers on an upgrade, and tokens stay out of URLs). While the
 * socket is open, every new token (a refresh ahead of expiry, the server's `token_expiring`) is
 * sent with another `auth` on the same socket, so its subscriptions go on undisturbed.
 */
class Mux {
  private ws: WebSocket | undefined;
  private readonly entries = new Map<number, Entry>();
  private nextId = 1;
  private lastRx = 0;
  private readonly abandoned = new Set<number>();
  private ticker: ReturnType<typeof setInterval> | undefined;
  /** The socket is authenticated (or needs no token): subscribes may go out. */
  private ready = false;
  /** `auth` ops sent and not answered yet, by id: the token each carried. */
  private readonly authing = new Map<number, string>();
  /** The token the server last accepted on this socket. */
  private authedToken: string | undefined;
  private release: (() => void) | undefined;

  constructor(private readonly ctx: TransportContext) {}

  open(req: StreamRequest, h: StreamHandlers): () => void {
    const e: Entry = { req, h, reqId: this.nextId++ };
    this.entries.set(e.reqId, e);
    this.socket();
    if (this.ready) this.subscribe(e);
    return () => {
      if (!this.entries.delete(e.reqId)) return;
      if (this.ws?.readyState === 1 && this.ready) {
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
    this.ready = false;
    ws.onopen = () => {
      this.lastRx = Date.now();
      // Browsers hide protocol pings: the `ping` op is how a client notices a dead path.
      const idle = (this.ctx.options.idleTimeout as number | undefined) ?? 45_000;
      this.ticker = setInterval(() => {
        const quiet = Date.now() - this.lastRx;
        if (quiet > idle) this.fail(ws, 4003, 'no answer to pings');
        else if (quiet > idle / 3 && this.ready) {
          ws.send(JSON.stringify({ op: 'ping', id: this.nextId++ }));
        }
      }, idle / 3);
      void this.authenticate(ws);
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

  /** Sends the token as the first message, or goes straight to subscribing without one. */
  private async authenticate(ws: WebSocket): Promise<void> {
    let token: string | undefined;
    try {
      token = await this.ctx.tokens.get();
    } catch (err) {
      return this.failWith(ws, err instanceof RillError ? err : networkError(err));
    }
    if (this.ws !== ws) return;
    if (token === undefined) return this.authed(ws);
    this.sendAuth(token);
  }

  private sendAuth(token: string): void {
    const id = this.nextId++;
    this.authing.set(id, token);
    this.ws!.send(JSON.stringify({ op: 'auth', id, token }));
  }

  /** A new token while the socket is open: authenticate again with it on the same socket. */
  private renewed(token: string): void {
    if (this.ws?.readyState !== 1 || token === this.authedToken) return;
    if ([...this.authing.values()].includes(token)) return;
    this.sendAuth(token);
  }

  /** Authentication done (or not needed): send the waiting subscribes, keep the token fresh. */
  private authed(ws: WebSocket): void {
    if (this.ws !== ws || this.ready) return;
    this.ready = true;
    this.release = this.ctx.tokens.hold((t) => this.renewed(t));
    for (const e of this.entries.values()) this.subscribe(e);
  }

  /** The answer to an `auth` op. */
  private authAnswer(m: Record<string, unknown>, token: string): void {
    const ws = this.ws!;
    if (m.op === 'authed') {
      this.authedToken = token;
      return this.authed(ws);
    }
    if (m.op !== 'error') return;
    const err = fromBody(m);
    if (err.code === 'unknown_op' && !this.ready) {
      // A server without authentication: the socket is used as it is, as requests are.
      return this.authed(ws);
    }
    if (err.code === 'token_expired') {
      this.ctx.tokens.expired(token);
      // An authenticated socket keeps its old token until that expires: try a new one.
      if (this.ready && this.ctx.tokens.renewable) return this.reauth(token);
    }
    this.failWith(ws, err);
  }

  /** The server said the socket's token expired: get another and send it (when one can be had). */
  private reauth(spent: string): void {
    this.ctx.tokens.expired(spent);
    if (!this.ctx.tokens.renewable) return;
    this.ctx.tokens.get().then(
      (t) => {
        if (t !== undefined) this.renewed(t);
      },
      () => {},
    );
  }

  /** The socket is gone (or given up on): every subscription on it reconnects by its close code. */
  private fail(ws: WebSocket, code: number, reason: string): void {
    const err = rillError(
      CLOSE_CODES[code] ?? 'connection_failed',
      `WebSocket closed (${code}${reason ? ` ${reason}` : ''})`,
      { closeCode: code },
    );
    this.failWith(ws, err);
  }

  /** Ends the socket and every subscription on it with `err`. */
  private failWith(ws: WebSocket, err: RillError): void {
    if (this.ws !== ws) return;
    if (err.code === 'token_expired' && this.authedToken !== undefined) {
      this.ctx.tokens.expired(this.authedToken);
    }
    this.reset();
    if (ws.readyState < 2) ws.close();
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const e of all) e.h.close(err);
  }

  private reset(): void {
    this.ws = undefined;
    this.ready = false;
    this.authing.clear();
    this.authedToken = undefined;
    this.abandoned.clear();
    clearInterval(this.ticker);
    this.release?.();
    this.release = undefined;
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
    this.reset();
    ws?.close(code, reason);
  }

  private subscribe(e: Entry): void {
    const { topics, from, since, cursor, presence } = e.req;
    this.ws!.send(
      JSON.stringify({
        op: 'subscribe',
        id: e.reqId,
        topics,
        from,
        since,
        cursor,
        ...(presence ? { presence: true } : {}),
      }),
    );
  }

  private message(text: string): void {
    const m = JSON.parse(text) as Record<string, unknown>;
    if (typeof m.id === 'number') {
      const token = this.authing.get(m.id);
      if (token !== undefined) {
        this.authing.delete(m.id);
        return this.authAnswer(m, token);
      }
    }
    if (m.op === 'token_expiring') {
      // The new token, if any, goes out through `renewed`.
      this.ctx.tokens.refresh().catch(() => {});
      return;
    }
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
      case 'join':
      case 'leave': {
        const member = m.member as { sub: string; info?: Record<string, unknown> };
        e.h.presence({ kind: m.op, topic: m.topic as string, ...member });
        return;
      }
      case 'error': {
        this.entries.delete(e.reqId);
        const err: RillError = fromBody(m);
        // Refused as expired on a socket that is still open: the next subscribe needs a new token.
        if (err.code === 'token_expired' && this.authedToken !== undefined) {
          this.reauth(this.authedToken);
        }
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
