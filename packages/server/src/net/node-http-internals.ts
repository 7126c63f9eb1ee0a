import type { IncomingMessage } from 'node:http';
import { createServer, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * Every use of node:http's internal state, in one place. Nothing here is public API: each function
 * checks what it relies on and, when that is missing, answers as if the fast path did not apply,
 * so a Node.js release that changes these internals makes streams slower, never wrong.
 * {@link probeNodeHttp} checks them once at start-up on a throwaway server connection; when it
 * fails, streams are never detached.
 */

/** What node:http keeps on a server connection's socket. */
type HttpSocket = Duplex & {
  /** The response being written (the next pipelined one is assigned as it finishes). */
  _httpMessage?: ServerResponse | null;
  /** The connection's parser, with the latest request parsed; none once released. */
  parser?: { incoming?: IncomingMessage | null } | null;
};

/** The parts of a ServerResponse the detach step reads and changes. */
interface ResponseState {
  chunkedEncoding?: boolean;
  _headerSent?: boolean;
  outputSize?: number;
  detachSocket?(socket: Socket): void;
}

/** The response being written on a server connection, if any. */
export function activeResponse(socket: Duplex): ServerResponse | null {
  return (socket as HttpSocket)._httpMessage ?? null;
}

/** The latest request node:http's parser read on a server connection, if any. */
export function parsedRequest(socket: Duplex): IncomingMessage | null {
  return (socket as HttpSocket).parser?.incoming ?? null;
}

/**
 * Whether node:http still parses requests on this connection: false once it has let go of it (an
 * upgrade to WebSocket, a detached stream).
 */
export function hasParser(socket: Duplex): boolean {
  return Boolean((socket as HttpSocket).parser);
}

/** Node's own parser release (the one an HTTP upgrade uses): unconsume, untrack, pool or free. */
const freeParser = (
  createRequire(import.meta.url)('_http_common') as {
    freeParser?: (parser: unknown, req: unknown, socket: unknown) => void;
  }
).freeParser;

/**
 * The listeners node:http's server puts on a connection's socket (`connectionListenerInternal`),
 * by function name: bound per-connection handlers and shared ones. All must be found, or the
 * connection is left to node:http.
 */
const SERVER_LISTENERS: Record<string, readonly string[]> = {
  data: ['bound socketOnData'],
  end: ['bound socketOnEnd'],
  close: ['bound socketOnClose'],
  drain: ['bound socketOnDrain'],
  error: ['socketOnError'],
  timeout: ['socketOnTimeout'],
  resume: ['onSocketResume'],
  pause: ['onSocketPause'],
};

/** Methods node:http overrides on a server socket; the prototype's own are put back on detach. */
const SOCKET_OVERRIDES = ['on', 'addListener', 'prependListener', 'setEncoding'] as const;

type Listener = (...args: unknown[]) => void;

/** node:http's listeners on `socket`, one per event of {@link SERVER_LISTENERS}, or null. */
function serverListeners(socket: Socket): Array<[string, Listener]> | null {
  const found: Array<[string, Listener]> = [];
  for (const [event, names] of Object.entries(SERVER_LISTENERS)) {
    const fns = (socket.listeners(event) as Listener[]).filter((fn) => names.includes(fn.name));
    if (fns.length !== 1) return null;
    found.push([event, fns[0]!]);
  }
  return found;
}

export interface ProbeResult {
  ok: boolean;
  /** Why not, when not. */
  reason?: string;
}

let probed: ProbeResult | null = null;

/**
 * Checks, once per process, that node:http has what {@link detachFromHttp} relies on: Node's
 * parser release, `ServerResponse#detachSocket`, and on a connection handed to a throwaway server
 * (no network involved) a parser and exactly the listeners and overrides expected.
 */
export function probeNodeHttp(): ProbeResult {
  probed ??= runProbe();
  return probed;
}

function runProbe(): ProbeResult {
  if (typeof freeParser !== 'function') return { ok: false, reason: '_http_common.freeParser' };
  if (typeof (ServerResponse.prototype as ResponseState).detachSocket !== 'function') {
    return { ok: false, reason: 'ServerResponse.detachSocket' };
  }
  const server = createServer();
  const socket = new Socket();
  try {
    server.emit('connection', socket);
    if (!hasParser(socket)) return { ok: false, reason: 'socket.parser' };
    if (serverListeners(socket) === null) return { ok: false, reason: 'connection listeners' };
    for (const m of SOCKET_OVERRIDES) {
      if (!Object.prototype.hasOwnProperty.call(socket, m)) {
        return { ok: false, reason: `socket.${m} override` };
      }
    }
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: String(err) };
  } finally {
    socket.destroy();
  }
}

/**
 * Takes a streaming response's connection away from node:http, as an HTTP upgrade does: once the
 * headers are out, a stream that lasts as long as its connection needs none of the request
 * parser, the request and response objects or the per-connection server state, and an idle
 * stream is mostly those (about half of its memory). Returns the socket, now the caller's, or
 * null, leaving everything as it was, unless the start-up probe passed, the response is the
 * connection's only message with its headers sent, chunked, and nothing queued, and node:http's
 * listeners are exactly the expected ones.
 */
export function detachFromHttp(res: ServerResponse): Socket | null {
  if (!probeNodeHttp().ok) return null;
  const socket = res.socket as (Socket & HttpSocket) | null;
  const state = res as unknown as ResponseState;
  if (
    typeof state.detachSocket !== 'function' ||
    socket === null ||
    socket._httpMessage !== res ||
    state.chunkedEncoding !== true ||
    state._headerSent !== true ||
    state.outputSize !== 0 ||
    res.writableEnded ||
    socket.destroyed ||
    // A pipelined request parsed after this one still needs the parser and its response.
    socket.parser?.incoming !== res.req
  ) {
    return null;
  }
  const found = serverListeners(socket);
  if (found === null) return null;
  for (const [event, fn] of found) socket.removeListener(event, fn);
  // Put the inherited methods back as own properties rather than deleting the overrides: a
  // `delete` turns the socket into a dictionary-mode object, whose property store alone cost
  // ~1.6 KiB per idle stream (heap snapshots of 5,000 streams, 2026-11-28).
  const proto = Object.getPrototypeOf(socket) as Record<string, unknown>;
  for (const m of SOCKET_OVERRIDES) {
    if (Object.prototype.hasOwnProperty.call(socket, m))
      (socket as never as Record<string, unknown>)[m] = proto[m];
  }
  state.detachSocket(socket);
  freeParser!(socket.parser, res.req, socket);
  socket.setTimeout(0);
  return socket;
}
