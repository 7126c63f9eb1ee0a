import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { ServerOptions } from 'ws';
import { WebSocketServer } from 'ws';
import { extractToken, OPEN_IDENTITY, type Authenticator, type Identity } from '../auth/index.js';
import type { Lease } from '../limits/index.js';
import { RillError, retryAfterSeconds } from '../model/errors.js';
import { redactAccessToken } from '../model/redact.js';
import { answerAndClose, serveAsHttp, tooManyHeaders } from '../net/connection.js';
import type { AppContext } from './context.js';
import { errors, route } from './schemas.js';
import { listsOrigin } from './cors.js';
import { nextRequestId } from './request-id.js';
import type { HostPolicy } from './host.js';
import { WsSession, type SessionStart } from './ws-session.js';
import type { HookClientInfo } from '../hooks/index.js';

/** Where the WebSocket endpoint lives. */
export const WS_PATH = '/v1/ws';
/** The subprotocol of this version of the JSON protocol. */
export const WS_SUBPROTOCOL = 'rill.v1';
/**
 * Most frames one message may arrive in. `maxPayload` bounds the reassembled size; this bounds the
 * work and the per-fragment bookkeeping of a message cut into tiny (or empty) pieces. Past it `ws`
 * closes with 1008.
 */
export const WS_MAX_FRAGMENTS = 1024;
/** How long a closing handshake may take before the socket is destroyed. */
export const WS_CLOSE_TIMEOUT_MS = 5000;

const KEY_RE = /^[+/0-9A-Za-z]{22}==$/;

/**
 * Whether a browser page from `origin` may open a WebSocket here: no `Origin` (not a browser), the
 * same host and port as the request's `Host`, an origin listed in `allowed`, or `*` there. This is
 * what stops cross-site WebSocket hijacking: browsers send cookies with a WebSocket handshake from
 * any page, and the same-origin policy does not apply to WebSockets. "Same as `Host`" is only
 * meaningful for a `Host` this server answers for: a page on a rebound name has an `Origin` equal
 * to its `Host`, so callers check the `Host` first ({@link HostPolicy}).
 */
export function isOriginAllowed(
  origin: string | undefined,
  host: string | undefined,
  allowed: readonly string[],
): boolean {
  if (origin === undefined) return true;
  if (listsOrigin(allowed, origin)) return true;
  const o = origin.trim().toLowerCase().replace(/\/+$/, '');
  if (host === undefined || o === 'null') return false;
  try {
    const u = new URL(o);
    const h = new URL(`http://${host.trim().toLowerCase()}`);
    const defaultPort = u.protocol === 'https:' || u.protocol === 'wss:' ? '443' : '80';
    return u.hostname === h.hostname && (u.port || defaultPort) === (h.port || defaultPort);
  } catch {
    return false;
  }
}

/** The subprotocols a client offered, in its order. */
function offeredProtocols(header: string | undefined): string[] {
  if (header === undefined) return [];
  return header
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
}

/** Refuses a handshake: an HTTP answer with the catalogue's body, then the connection closes. */
const rejectUpgrade = answerAndClose;

/**
 * The WebSocket endpoint (`GET /v1/ws`, subprotocol `rill.v1`, docs/protocol.md § WebSocket) on the
 * HTTP server's `upgrade` event: `ws` in `noServer` mode, every handshake checked here first (path,
 * method, header count, version, origin, subprotocol) so that refusals carry the catalogue's JSON
 * body. Registers its own shutdown (close every socket with 4001) and one shared ping sweep.
 */
export function wsRoutes(app: FastifyInstance, ctx: AppContext, hosts: HostPolicy): void {
  const cfg = ctx.config.ws;
  const log = ctx.logs.ws;
  const sessions = new Set<WsSession>();
  const options: ServerOptions & { closeTimeout: number } = {
    noServer: true,
    clientTracking: false,
    maxPayload: cfg.maxPayload,
    maxFragments: WS_MAX_FRAGMENTS,
    // Chunks wait in ws's receiver only while a frame is incomplete. A legitimate peer delivers a
    // maxPayload frame in reads of a few hundred bytes at the very least; a peer trickling one
    // byte per TCP segment would otherwise pin ws's default of 262,144 small buffers.
    maxBufferedChunks: Math.max(1024, Math.ceil(cfg.maxPayload / 512)),
    closeTimeout: WS_CLOSE_TIMEOUT_MS,
    // ws inflates only up to maxPayload and closes with 1009 past it: no decompression bomb.
    // zlib's defaults would hold ~300 KB per socket; a 16 KiB window and memLevel 7 hold ~80 KB.
    perMessageDeflate: cfg.perMessageDeflate
      ? {
          threshold: 1024,
          concurrencyLimit: 10,
          serverMaxWindowBits: 12,
          zlibDeflateOptions: { memLevel: 7 },
        }
      : false,
    handleProtocols: (protocols) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  };
  const wss = new WebSocketServer(options);
  // Handshake problems ws finds itself (bad Sec-WebSocket-Protocol or -Extensions syntax).
  wss.on('wsClientError', (err, socket) => {
    rejectUpgrade(socket, new RillError('invalid_parameter', err.message));
  });

  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (!isWebSocketUpgrade(req)) {
      serveAsHttp(app.server, req, socket, head);
      return;
    }
    socket.on('error', () => socket.destroy());
    // The connection's id: its `reqId` in the log, as an HTTP request's.
    const reqId = nextRequestId();
    const err = checkHandshake(req, ctx, hosts);
    if (err) {
      ctx.obs?.meters.error('ws', err.error);
      rejectUpgrade(socket, err.error, err);
      return;
    }
    // The connection counts for its client address and, once known, its key or user: over a
    // limit the handshake is refused with 429 and Retry-After (after it, with close 4008).
    const address = ctx.limits.enabled
      ? ctx.limits.address(req.socket.remoteAddress, req.headers)
      : null;
    const hookClient: HookClientInfo = {
      address:
        address ??
        ctx.limits.address(req.socket.remoteAddress, req.headers) ??
        req.socket.remoteAddress ??
        '',
      transport: 'ws',
      connection: reqId,
    };
    /**
     * The connect hook, for a connection that starts with an identity (the upgrade's credentials,
     * or anonymous): the backend's refusal is told over the WebSocket, as refused credentials are.
     * One that waits for an `auth` message is asked when it comes (ws-auth.ts).
     */
    const connectHook = async (start: SessionStart): Promise<SessionStart> => {
      const hooks = ctx.hooks;
      if (!hooks?.has('connect') || 'error' in start || start.identity === null) return start;
      try {
        const r = await hooks.connect(start.identity, hookClient, []);
        return { identity: r.identity, hook: r.decision };
      } catch (err) {
        return {
          error:
            err instanceof RillError
              ? err
              : new RillError('internal', 'Cannot ask the connect hook', { cause: err }),
        };
      }
    };
    const admit = (identity: Identity): Lease | null | RillError => {
      try {
        return ctx.limits.openConnection(ctx.limits.subjects(identity, address));
      } catch (e) {
        if (e instanceof RillError) return e;
        throw e;
      }
    };
    const upgrade = (start: SessionStart, lease: Lease | null): void => {
      if (!socket.writable) {
        lease?.release();
        socket.destroy();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        const session = new WsSession(
          ws,
          ctx,
          log,
          reqId,
          () => sessions.delete(session),
          start,
          {
            address,
            lease,
          },
          {
            id: reqId,
            address: req.socket.remoteAddress ?? '',
            hookClient,
          },
        );
        sessions.add(session);
        if (ctx.state.closing) session.close(new RillError('shutting_down'));
      });
    };
    const refuse = (e: RillError): void => {
      rejectUpgrade(socket, e, { headers: { 'Retry-After': String(retryAfterSeconds(e) ?? 1) } });
    };
    if (!ctx.auth.enabled) {
      const open = (start: SessionStart): void => {
        const lease = 'error' in start ? null : admit(OPEN_IDENTITY);
        if (lease instanceof RillError) refuse(lease);
        else upgrade(start, lease);
      };
      if (ctx.hooks?.has('connect')) void connectHook({ identity: OPEN_IDENTITY }).then(open);
      else open({ identity: OPEN_IDENTITY });
      return;
    }
    // Credentials at the upgrade are checked before the socket is taken over; whatever the
    // outcome, it is told over the WebSocket (close 4524 or 4006), which a browser can see.
    void handshakeIdentity(req, ctx.auth)
      .then(connectHook)
      .then((start) => {
        if ('error' in start) {
          log.debug(
            { reqId, url: redactAccessToken(req.url ?? ''), code: start.error.code },
            'WebSocket credentials refused',
          );
        }
        // Waiting for an `auth` message, the connection counts for its address until then; refused
        // credentials are told over the WebSocket and hold nothing.
        const lease = 'error' in start ? null : admit(start.identity ?? OPEN_IDENTITY);
        if (lease instanceof RillError) refuse(lease);
        else upgrade(start, lease);
      });
  });

  // A plain GET (no Upgrade) is a client that does not speak WebSocket: tell it so.
  app.get(
    WS_PATH,
    route({
      summary: 'WebSocket (rill.v1)',
      description:
        'Upgraded to a WebSocket (RFC 6455, version 13, subprotocol rill.v1) for subscribing and publishing over one connection; its messages are described in asyncapi.yaml (docs/protocol.md § WebSocket). Credentials may come with the upgrade (as for the other routes) or in an auth message. A GET without Upgrade answers 426.',
      tags: ['streams'],
      operationId: 'webSocket',
      headers: {
        upgrade: { type: 'string', const: 'websocket' },
        'sec-websocket-version': { type: 'string', const: '13' },
        'sec-websocket-protocol': { type: 'string', description: 'rill.v1, or none.' },
      },
      response: {
        101: { description: 'Switching Protocols: the WebSocket is open', type: 'null' },
        ...errors(
          'invalid_parameter',
          'unauthorized',
          'forbidden_origin',
          'not_found',
          'upgrade_required',
          'rate_limited',
          'too_many_connections',
          'overloaded',
          'shutting_down',
        ),
      },
    }),
    async (_req, reply) => {
      const e = new RillError('upgrade_required', 'GET /v1/ws is a WebSocket endpoint');
      return reply
        .code(426)
        .header('upgrade', 'websocket')
        .header('connection', 'Upgrade')
        .header('sec-websocket-version', '13')
        .send(e.toJSON());
    },
  );

  // One sweep for every socket: ping the ones due (first ping jittered per socket, so a fleet of
  // clients reconnecting together does not ping in lockstep), terminate those whose pong is late.
  const tick = Math.max(20, Math.floor(Math.min(cfg.pingInterval, cfg.pingTimeout) / 4));
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const s of sessions) s.heartbeat(now, cfg.pingInterval, cfg.pingTimeout);
  }, tick);
  sweep.unref();

  app.addHook('preClose', (done) => {
    const err = new RillError('shutting_down');
    for (const s of sessions) s.close(err);
    done();
  });
  app.addHook('onClose', (_instance, done) => {
    clearInterval(sweep);
    done();
  });
}

/**
 * How a WebSocket starts on a server with authentication: the identity of the credentials the
 * upgrade carried (`Authorization`, `access_token`, the cookie), the anonymous identity when it
 * carried none and anonymous access is configured, else waiting for an `auth` message. Never
 * rejects: a refusal is returned for the session to tell.
 */
async function handshakeIdentity(req: IncomingMessage, auth: Authenticator): Promise<SessionStart> {
  const q = (req.url ?? '').indexOf('?');
  const accessToken =
    q === -1
      ? undefined
      : (new URLSearchParams(req.url!.slice(q + 1)).get('access_token') ?? undefined);
  const creds = {
    authorization: req.headers.authorization,
    accessToken,
    cookie: req.headers.cookie,
  };
  try {
    if (extractToken(creds, auth.settings.cookie) === null && !auth.settings.anonymous) {
      return { identity: null };
    }
    return { identity: await auth.authenticate(creds) };
  } catch (err) {
    return {
      error:
        err instanceof RillError
          ? err
          : new RillError('internal', 'Cannot check the credentials', { cause: err }),
    };
  }
}

function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade?.toLowerCase();
  return upgrade !== undefined && upgrade.split(',').some((u) => u.trim() === 'websocket');
}

/**
 * Why a `Upgrade: websocket` handshake is refused, or null when it may proceed to ws. The `Host`
 * comes first: the same-origin rule of the `Origin` check compares with it, so it must be a name
 * this server answers for, not a rebound attacker's name.
 */
function checkHandshake(
  req: IncomingMessage,
  ctx: AppContext,
  hosts: HostPolicy,
): { error: RillError; status?: number; headers?: Record<string, string> } | null {
  const hostError = hosts.check(req.headers.host, req.httpVersion);
  if (hostError) return { error: hostError };
  const path = (req.url ?? '').split('?')[0] ?? '';
  if (path !== WS_PATH && path !== `${WS_PATH}/`) {
    return { error: new RillError('not_found', `No WebSocket endpoint at ${path.slice(0, 200)}`) };
  }
  if (req.method !== 'GET') {
    return { error: new RillError('method_not_allowed', 'A WebSocket handshake is a GET') };
  }
  // Node keeps one header past the limit (see http.maxHeadersCount in app.ts) so that too many
  // is seen, instead of the rest being dropped silently.
  const limit = ctx.config.http.maxHeadersCount;
  if (req.rawHeaders.length / 2 > limit) {
    return { status: 431, error: tooManyHeaders(limit) };
  }
  if (req.headers['sec-websocket-version']?.trim() !== '13') {
    return {
      error: new RillError('upgrade_required', 'Only WebSocket version 13 (RFC 6455) is supported'),
      headers: { 'Sec-WebSocket-Version': '13' },
    };
  }
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !KEY_RE.test(key.trim())) {
    return { error: new RillError('invalid_parameter', 'Missing or invalid Sec-WebSocket-Key') };
  }
  if (!isOriginAllowed(req.headers.origin, req.headers.host, ctx.config.http.allowedOrigins)) {
    const origin = String(req.headers.origin).slice(0, 200);
    return { error: new RillError('forbidden_origin', `Origin ${origin} not allowed`) };
  }
  const offered = offeredProtocols(req.headers['sec-websocket-protocol']);
  if (offered.length > 0 && !offered.includes(WS_SUBPROTOCOL)) {
    return {
      error: new RillError(
        'invalid_parameter',
        `Unsupported subprotocol: offer ${WS_SUBPROTOCOL}, or none for the same`,
      ),
    };
  }
  if (ctx.state.closing) {
    return { error: new RillError('shutting_down'), headers: { 'Retry-After': '1' } };
  }
  const full = ctx.budget?.refuseStream();
  if (full) return { error: full, headers: { 'Retry-After': String(retryAfterSeconds(full)) } };
  const overloaded = ctx.load?.refuse();
  if (overloaded) {
    return {
      error: overloaded,
      headers: { 'Retry-After': String(retryAfterSeconds(overloaded)) },
    };
  }
  return null;
}
