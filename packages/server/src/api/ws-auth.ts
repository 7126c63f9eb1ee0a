import type { Identity } from '../auth/index.js';
import { applyConnect, type ConnectDecision, type HookClientInfo } from '../hooks/index.js';
import { RillError } from '../model/errors.js';
import { wsErrorFrame } from '../wire/ws.js';
import type { AppContext } from './context.js';
import type { ConnectionInfo, StreamHandle } from './open-streams.js';

/**
 * How a WebSocket session starts: with the identity of its upgrade's credentials (or the
 * anonymous one), waiting for an `auth` message (`identity: null`), or refused.
 */
export type SessionStart =
  | {
      identity: Identity | null;
      /** The connect hook's decision when it was asked at the handshake (applied already). */
      hook?: ConnectDecision;
    }
  | { error: RillError };

/** What the credentials of a connection need from it. */
export interface WsCredentialsHost {
  /** Sends one message. */
  send(text: string): void;
  /**
   * Closes the socket with the error's close code; `why` is the reason its log line gives when it
   * is not the error's code (`revoked`).
   */
  close(err: RillError, why?: string): void;
  /** What the connections listing shows of it (listed once it has an identity). */
  readonly connection: ConnectionInfo;
  /** Where it comes from, as a backend hook is told. */
  readonly hookClient: HookClientInfo;
}

/**
 * The credentials of one WebSocket connection: who it is now, the deadline for its first `auth`
 * message, the `token_expiring` warning and the close at the token's expiry (on the server's
 * shared deadlines, no timer of its own), and its place among the open streams so that revoking
 * its credential closes it (4524). A refresh (another `auth`) must be for the same subject; its
 * grants replace the old ones and its expiry moves the deadlines.
 */
export class WsCredentials {
  private current: Identity | null = null;
  private tracked: StreamHandle | undefined;
  private cancelWarning: (() => void) | undefined;
  private cancelAuthDeadline: (() => void) | undefined;
  private disposed = false;
  /**
   * The connect hook's decision (its `info` and narrowed grants apply again to a refreshed
   * token); `asked`: the hook was asked for a non-anonymous identity of this connection.
   */
  private hook: { decision: ConnectDecision; asked: boolean } = { decision: null, asked: false };

  constructor(
    private readonly ctx: AppContext,
    private readonly host: WsCredentialsHost,
    start: SessionStart,
  ) {
    if ('error' in start) {
      // Told as a message too (a close reason is only the code), then the close with its code.
      host.send(wsErrorFrame(start.error));
      host.close(start.error);
      return;
    }
    if (start.identity) {
      if (start.hook !== undefined) {
        this.hook = { decision: start.hook, asked: start.identity.kind !== 'anonymous' };
      }
      this.adopt(start.identity);
      return;
    }
    const timeout = ctx.auth.settings.wsAuthTimeout;
    this.cancelAuthDeadline = ctx.streams.deadlines.at(Date.now() + timeout, () => {
      this.cancelAuthDeadline = undefined;
      if (this.current === null) {
        host.close(
          new RillError('unauthorized', `No auth message within ${timeout / 1000} s of connecting`),
        );
      }
    });
  }

  /** The identity requests act for, or null before the first `auth`. */
  get identity(): Identity | null {
    return this.current;
  }

  /** The identity for a request other than `auth`; `unauthorized` before the first `auth`. */
  require(): Identity {
    if (this.current) return this.current;
    throw new RillError(
      'unauthorized',
      'Authenticate first: send {"op":"auth","id":…,"token":…} before other requests',
    );
  }

  /**
   * Checks `token` and makes it the connection's credentials. Rejects with `unauthorized` or
   * `token_expired` (keeping the credentials in use) when it is refused, or when it is for another
   * subject than the connection's.
   */
  async authenticate(token: string): Promise<Identity> {
    let next = await this.ctx.auth.identify(token);
    if (this.disposed) return next;
    const now = this.current;
    if (now !== null && now.kind !== 'anonymous' && !sameSubject(now, next)) {
      throw new RillError(
        'unauthorized',
        'A refresh must be for the same subject as the connection (reconnect to change it)',
      );
    }
    const hooks = this.ctx.hooks;
    if (hooks?.has('connect') && !this.hook.asked && next.kind !== 'anonymous') {
      // The connection's first real identity: the application's backend decides (a refusal of
      // the first `auth` closes the socket with it).
      const r = await hooks.connect(next, this.host.hookClient, []);
      if (this.disposed) return r.identity;
      this.hook = { decision: r.decision, asked: true };
      next = r.identity;
    } else {
      // A refresh: the backend's enrichment and narrowing stay.
      next = applyConnect(next, this.hook.decision);
    }
    this.adopt(next);
    return next;
  }

  /** Stops every deadline and leaves the open streams (the socket closed). */
  dispose(): void {
    this.disposed = true;
    this.tracked?.untrack();
    this.cancelWarning?.();
    this.cancelAuthDeadline?.();
  }

  private adopt(identity: Identity): void {
    this.current = identity;
    this.cancelAuthDeadline?.();
    this.cancelAuthDeadline = undefined;
    if (this.tracked) this.tracked.update(identity);
    else {
      this.tracked = this.ctx.streams.track(
        identity,
        { revoked: (e) => this.host.close(e, 'revoked'), expired: (e) => this.host.close(e) },
        this.host.connection,
      );
    }
    this.cancelWarning?.();
    this.cancelWarning = undefined;
    const exp = identity.expiresAt;
    if (exp === null) return;
    // `expiryWarning` before the expiry; for a token living less than twice that, halfway through
    // what is left of it, so that a client refreshing on the warning is not warned again at once.
    const lead = Math.min(this.ctx.auth.settings.expiryWarning, (exp - Date.now()) / 2);
    this.cancelWarning = this.ctx.streams.deadlines.at(exp - lead, () => {
      this.cancelWarning = undefined;
      this.host.send(JSON.stringify({ op: 'token_expiring', expiresAt: exp }));
    });
  }
}

/** Whether a refresh is for the connection's subject: the same JWT `sub`, or the same API key. */
function sameSubject(a: Identity, b: Identity): boolean {
  if (a.kind !== b.kind) return false;
  return a.kind === 'jwt' ? a.sub === b.sub : a.credentialId === b.credentialId;
}
