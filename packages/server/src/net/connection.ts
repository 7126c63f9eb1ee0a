import type { IncomingMessage } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { ServerHttp2Session } from 'node:http2';
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import type { FastifyBaseLogger } from 'fastify';
import { RillError } from '../model/errors.js';
import { activeResponse, hasParser, parsedRequest } from './node-http-internals.js';

/** Runs `fn` once every response to the requests parsed so far on `socket` has closed. */
function whenIdle(socket: Duplex, fn: () => void): void {
  if (socket.destroyed) return;
  const res = activeResponse(socket);
  if (res === null) fn();
  else res.once('close', () => whenIdle(socket, fn));
}

/** Connections whose client error is being answered: further ones are ignored. */
const failing = new WeakSet<Duplex>();

/** How long a peer that does not read our last answer may keep its connection. */
const LINGER_MS = 2000;

/** Writes a complete HTTP error answer with the catalogue's body and closes the connection. */
export function answerAndClose(
  socket: Duplex,
  err: RillError,
  options: { status?: number; headers?: Record<string, string> } = {},
): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const status = options.status ?? err.status;
  const body = JSON.stringify(err.toJSON());
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'Connection: close',
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.once('finish', () => socket.destroy());
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** The answer to a request with more than `max` headers (431), on every path that can see it. */
export function tooManyHeaders(max: number): RillError {
  return new RillError('invalid_parameter', `More than ${max} request headers`, {
    details: { limit: max },
  });
}

/** The bounds on a request head that node:http's parser enforces. */
export interface HeadLimits {
  maxHeaderSize: number;
  maxHeadersCount: number;
}

/** The catalogue error (and HTTP status) for an error node:http's parser or timers reported. */
function clientErrorToRill(
  err: NodeJS.ErrnoException & { bytesParsed?: number },
  limits: HeadLimits,
): { error: RillError; status?: number } {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { error: new RillError('request_timeout') };
    case 'HPE_HEADER_OVERFLOW':
      // Node 22 drops headers past maxHeadersCount (the onRequest hook answers those); Node 24's
      // parser stops with this error instead, before the head reaches maxHeaderSize bytes.
      if (err.bytesParsed !== undefined && err.bytesParsed < limits.maxHeaderSize) {
        return { status: 431, error: tooManyHeaders(limits.maxHeadersCount) };
      }
      return {
        status: 431,
        error: new RillError(
          'invalid_parameter',
          `Request head larger than ${limits.maxHeaderSize} bytes`,
          { details: { limit: limits.maxHeaderSize } },
        ),
      };
    default:
      return { error: new RillError('bad_request') };
  }
}

/**
 * node:http's `clientError`: a request it could not parse, or one not received within
 * `http.headersTimeout` / `http.requestTimeout`. Answers with the catalogue's body and closes.
 * Requests parsed before the bad bytes on the same connection (a publish followed by garbage in
 * the same packet) are answered first: they may already be stored, and a client that saw only the
 * error would retry them. Whatever the client sends meanwhile is dropped.
 */
export function clientErrorHandler(
  log: FastifyBaseLogger,
  limits: HeadLimits,
): (err: NodeJS.ErrnoException, socket: Duplex) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed || failing.has(socket)) return;
    failing.add(socket);
    const { error, status } = clientErrorToRill(err, limits);
    log.debug({ code: err.code }, 'client error');
    const answer = (): void => answerAndClose(socket, error, status ? { status } : {});
    // A timeout, or a body cut short by bad framing, leaves a request that will never complete:
    // nothing to wait for. A response already under way cannot be followed by an error answer.
    const waitable = error.code !== 'request_timeout' && parsedRequest(socket)?.complete !== false;
    if (waitable) whenIdle(socket, answer);
    else if (activeResponse(socket)?.headersSent) socket.destroy();
    else answer();
  };
}

/**
 * Serves a request that offered an upgrade other than WebSocket (`Upgrade: h2c`, as
 * `curl --http2` sends) as plain HTTP, which RFC 9110 §7.8 allows: node:http hands every such
 * request to the `upgrade` listener, parser released. The request head is rebuilt without its
 * `Upgrade` header and put back in front of the unread bytes (the body, further requests), and
 * the connection is given to node:http again, which parses it as any other: bodies, keep-alive and
 * every check of the routes apply. Waits first for earlier requests on the connection to be
 * answered, so answers are never interleaved. Over TLS the decrypted socket goes back the way it
 * first came, as a `secureConnection` (a `connection` there is a TCP connection to encrypt).
 */
export function serveAsHttp(
  server: Server,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): void {
  // node:http took its listeners off with the parser: until it has the socket back, an error
  // (a reset while earlier answers are written) is ours to handle.
  const onError = (): void => {
    socket.destroy();
  };
  socket.on('error', onError);
  socket.pause();
  const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() !== 'upgrade') lines.push(`${raw[i]}: ${raw[i + 1]}`);
  }
  const rebuilt = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  whenIdle(socket, () => {
    socket.off('error', onError);
    socket.unshift(head.length > 0 ? Buffer.concat([rebuilt, head]) : rebuilt);
    server.emit(isTlsSocket(socket) ? 'secureConnection' : 'connection', socket);
    socket.resume();
  });
}

function isTlsSocket(socket: Duplex): socket is TLSSocket {
  return (socket as Partial<TLSSocket>).encrypted === true;
}

/** The TCP connection a socket is on: its peer's address and port (the same for its TLS socket). */
function peerOf(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

/**
 * Every connection the server holds, registered once (one listener per connection): its count is
 * what the connection budget compares, and at shutdown the ones with no request in flight are
 * closed. node:http's own `closeIdleConnections()` (which `server.close()` runs) leaves open a
 * connection that has not sent a complete request head, such as one opened ahead of use, and the
 * listener's close then waits for it until the client gives up.
 *
 * Over TLS a connection is counted from its TCP accept (one file descriptor, handshake done or
 * not), whatever it then speaks: HTTP/1.1 on its TLS socket, or an HTTP/2 session with any number
 * of streams. At shutdown a connection still in its handshake is closed, an HTTP/1.1 one as
 * without TLS, and an HTTP/2 session is closed gracefully: a GOAWAY, then the end of the session
 * once its streams have ended (the hub ends the subscriptions' streams first).
 */
export class ConnectionRegistry {
  private readonly sockets = new Set<Socket>();
  /** Over TLS: TCP connections waiting for their handshake, by peer. */
  private readonly handshaking = new Map<string, Socket>();
  /** Over TLS: the TLS socket of each TCP connection whose handshake is done. */
  private readonly secured = new WeakMap<Socket, TLSSocket>();
  private readonly sessions = new Set<ServerHttp2Session>();

  /**
   * `http2CloseGraceMs`: how long a closed HTTP/2 session may take to finish its streams and send
   * what it still has before it is destroyed (see {@link closeUnused}).
   */
  constructor(
    server: Server,
    private readonly options: { http2CloseGraceMs: number } = { http2CloseGraceMs: 5000 },
  ) {
    const tls = server instanceof TlsServer;
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      const peer = tls ? peerOf(socket) : '';
      if (tls) this.handshaking.set(peer, socket);
      socket.once('close', () => {
        this.sockets.delete(socket);
        if (this.handshaking.get(peer) === socket) this.handshaking.delete(peer);
      });
    });
    if (!tls) return;
    server.on('secureConnection', (secure: TLSSocket) => {
      const peer = peerOf(secure);
      const socket = this.handshaking.get(peer);
      if (socket === undefined) return;
      this.handshaking.delete(peer);
      this.secured.set(socket, secure);
    });
    server.on('session', (session: ServerHttp2Session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
    });
  }

  /** Connections open now (TCP connections: each TLS connection or HTTP/2 session is one). */
  get size(): number {
    return this.sockets.size;
  }

  /**
   * Closes connections with no request in flight; one in flight finishes, then closes. HTTP/2
   * sessions get a GOAWAY and close once their streams have ended, or are destroyed when they have
   * not within `http2CloseGraceMs`: a session waits until the peer has read what it still has to
   * send, and Node 24 waits so even for a peer that is gone (one that vanished as shutdown began),
   * which would hold the listener's close forever.
   */
  closeUnused(): void {
    for (const socket of this.sockets) {
      if (socket.destroyed) continue;
      if (this.handshaking.has(peerOf(socket))) {
        // No request can be in flight before the handshake is done.
        socket.destroy();
        continue;
      }
      const http = this.secured.get(socket) ?? socket;
      // An HTTP/2 connection's session is closed below.
      if (isTlsSocket(http) && http.alpnProtocol === 'h2') continue;
      closeUnusedHttp1(http);
    }
    for (const session of this.sessions) {
      // Node 24's server.close() may have sent the GOAWAY already.
      if (!session.closed) session.close();
      setTimeout(() => {
        if (!session.destroyed) session.destroy();
      }, this.options.http2CloseGraceMs).unref();
    }
  }
}

function closeUnusedHttp1(socket: Duplex): void {
  // No parser: the connection is a WebSocket or a detached stream, ended by the hub.
  if (!hasParser(socket) || socket.destroyed) return;
  const res = activeResponse(socket);
  if (!res) {
    socket.destroy();
    return;
  }
  if (!res.headersSent) res.shouldKeepAlive = false;
  res.once('finish', () => socket.end());
}
