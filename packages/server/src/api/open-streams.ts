import { isRevoked, OPEN_IDENTITY, type Identity } from '../auth/index.js';
import { RillError } from '../model/errors.js';
import type { Subscription } from '../fanout/subscription.js';
import type { ConnectionRow } from '@rill/client';

/** What the registry does to a stream it tracks; each transport ends its own way. */
export interface TrackedStream {
  /**
   * End it with `err`: its credential was revoked (`unauthorized`), or an operator disconnected it
   * (`disconnected_by_admin`).
   */
  revoked(err: RillError): void;
  /**
   * Its identity's `expiresAt` has come: end it with `err` (`token_expired`). Without it no
   * deadline is kept (a long-poll bounds its own wait).
   */
  expired?(err: RillError): void;
}

/** How a stream reaches its client; `poll` is a long-poll waiting for events. */
export type Transport = 'sse' | 'ndjson' | 'ws' | 'poll';

/** What a stream is doing now, read only when connections are listed (never per event). */
export interface ConnectionState {
  /** The topics and patterns it subscribed to. */
  patterns: string[];
  /** Topics it is subscribed to now (a pattern's matches included). */
  topics: number;
  /** Bytes queued for it or held in its socket, not yet taken by the client. */
  bufferedBytes: number;
  /** On the live path in every topic (false: catching up from the log). */
  live: boolean;
}

/** What the connections listing shows of a stream: never a credential. */
export interface ConnectionInfo {
  /** The id of the request that opened it (Fastify's `req.id`, the `reqId` of the log lines; a WebSocket's upgrade request's). */
  id: string;
  transport: Transport;
  /** The client's address as the server sees it (a proxy's, behind one). */
  address: string;
  /** When it opened, ms since the epoch. */
  openedAt: number;
  state(): ConnectionState;
}

/** One row of `GET /v1/connections` (the type the dashboard reads too). */
export type { ConnectionRow };

/** What the connections listing shows of a subscription (`sub` undefined while it starts). */
export function subscriptionState(
  patterns: string[],
  sub: Subscription | undefined | null,
): ConnectionState {
  return sub
    ? { patterns, topics: sub.states.size, bufferedBytes: sub.bufferedBytes(), live: !sub.behind }
    : { patterns, topics: 0, bufferedBytes: 0, live: false };
}

/** A stream's place in the registry. */
export interface StreamHandle {
  /** The stream now runs under another identity (a WebSocket that re-authenticated). */
  update(identity: Identity): void;
  /** The stream ended: forget it. Idempotent. */
  untrack(): void;
}

const NOT_TRACKED: StreamHandle = { update: () => undefined, untrack: () => undefined };

/** Resolution of {@link Deadlines}, ms: a deadline fires at most this long after its time. */
export const DEADLINE_RESOLUTION_MS = 250;

/**
 * Deadlines for many streams on one timer: each goes into the bucket of its time rounded up to
 * {@link DEADLINE_RESOLUTION_MS}, and one sweep per resolution step fires the buckets that are due,
 * so a sweep costs what it fires, not what is waiting. The timer runs only while a deadline waits
 * and never keeps the process alive.
 */
export class Deadlines {
  private readonly buckets = new Map<number, Set<() => void>>();
  /** The last bucket swept; later deadlines go after it. */
  private swept = 0;
  private timer: NodeJS.Timeout | undefined;

  /** Calls `fn` once `at` (ms since the epoch) has passed; returns what cancels it. */
  at(at: number, fn: () => void): () => void {
    if (this.timer === undefined) {
      this.swept = Math.floor(Date.now() / DEADLINE_RESOLUTION_MS);
      this.timer = setInterval(() => this.sweep(), DEADLINE_RESOLUTION_MS);
      this.timer.unref();
    }
    const key = Math.max(Math.ceil(at / DEADLINE_RESOLUTION_MS), this.swept + 1);
    let bucket = this.buckets.get(key);
    if (!bucket) this.buckets.set(key, (bucket = new Set()));
    // A wrapper per call: the same function scheduled twice is two deadlines.
    const entry = (): void => fn();
    bucket.add(entry);
    return () => {
      const b = this.buckets.get(key);
      if (b?.delete(entry) && b.size === 0) this.buckets.delete(key);
    };
  }

  private sweep(): void {
    const now = Math.floor(Date.now() / DEADLINE_RESOLUTION_MS);
    const due: Array<() => void> = [];
    if (now - this.swept <= this.buckets.size) {
      for (let k = this.swept + 1; k <= now; k++) this.take(k, due);
    } else {
      // Longer since the last sweep than there are buckets (a paused process): look at each.
      for (const k of [...this.buckets.keys()]) if (k <= now) this.take(k, due);
    }
    this.swept = now;
    if (this.buckets.size === 0) this.stop();
    for (const fn of due) fn();
  }

  private take(key: number, into: Array<() => void>): void {
    const b = this.buckets.get(key);
    if (!b) return;
    this.buckets.delete(key);
    into.push(...b);
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.stop();
    this.buckets.clear();
  }
}

/** What a stream whose token expired ends with. */
export function tokenExpired(): RillError {
  return new RillError('token_expired', 'The token has expired');
}

interface Entry {
  stream: TrackedStream;
  identity: Identity;
  credentialId: string;
  cancelExpiry: (() => void) | undefined;
  /** Listed by `GET /v1/connections` when given. */
  info: ConnectionInfo | undefined;
  /** Position in the listing (open order), its paging cursor. */
  order: number;
}

/**
 * The open streams (SSE, NDJSON, long-poll waits, WebSockets) by the credential that opened them,
 * so that a revoked credential's streams can be ended, and each stream's expiry on the shared
 * {@link Deadlines}; and, for the admin endpoints, every stream that gave its
 * {@link ConnectionInfo}, in open order, to be listed and disconnected. Touched when a stream
 * opens and ends, never per delivered event. Without authentication only the listing is kept
 * (nothing can be revoked or expire).
 */
export class OpenStreams {
  readonly deadlines = new Deadlines();
  private readonly byCredential = new Map<string, Set<Entry>>();
  /** Streams with connection info, in open order (a Set keeps insertion order). */
  private readonly listed = new Set<Entry>();
  private nextOrder = 1;

  /** Number of tracked streams (tests, metrics). */
  get size(): number {
    let n = 0;
    for (const set of this.byCredential.values()) n += set.size;
    return n;
  }

  /** Number of streams the connections listing shows. */
  get connections(): number {
    return this.listed.size;
  }

  /**
   * Tracks a stream opened by `identity` until its handle's `untrack`: it is told when its
   * credential is revoked and when its identity expires (at `expiresAt`, when there is one), and
   * with `info` it is listed as a connection and may be disconnected.
   */
  track(identity: Identity, stream: TrackedStream, info?: ConnectionInfo): StreamHandle {
    const open = identity === OPEN_IDENTITY;
    if (open && info === undefined) return NOT_TRACKED;
    const entry: Entry = {
      stream,
      identity,
      credentialId: '',
      cancelExpiry: undefined,
      info,
      order: this.nextOrder++,
    };
    let tracked = true;
    if (info) this.listed.add(entry);
    if (!open) this.place(entry, identity);
    return {
      update: (next) => {
        if (!tracked) return;
        if (entry.credentialId !== '') this.remove(entry);
        entry.identity = next;
        if (next !== OPEN_IDENTITY) this.place(entry, next);
      },
      untrack: () => {
        if (!tracked) return;
        tracked = false;
        this.listed.delete(entry);
        if (entry.credentialId !== '') this.remove(entry);
      },
    };
  }

  /**
   * Ends, with `unauthorized`, every stream whose credential is in `revoked` (as a reload reports
   * them: exact ids and `jwt:<kid>:*`); returns how many.
   */
  revoke(revoked: readonly string[]): number {
    const hit: Entry[] = [];
    for (const [id, set] of this.byCredential) if (isRevoked(id, revoked)) hit.push(...set);
    for (const e of hit) this.forget(e);
    const err = new RillError('unauthorized', 'The credentials of this stream were revoked');
    for (const e of hit) e.stream.revoked(err);
    return hit.length;
  }

  /**
   * A page of the listed streams in open order, after the one whose `order` is `after` (0: from
   * the first); `next` is the cursor of the following page, or null at the end.
   */
  list(opts: { after: number; limit: number }): {
    connections: ConnectionRow[];
    next: number | null;
  } {
    const p = this.page(opts);
    return { connections: p.rows, next: p.more ? p.orders[p.orders.length - 1]! : null };
  }

  /** {@link list}'s page with each row's place in the open order, and whether more follow. */
  page(opts: { after: number; limit: number }): {
    rows: ConnectionRow[];
    orders: number[];
    more: boolean;
  } {
    const now = Date.now();
    const rows: ConnectionRow[] = [];
    const orders: number[] = [];
    for (const e of this.listed) {
      if (e.order <= opts.after) continue;
      if (rows.length === opts.limit) return { rows, orders, more: true };
      rows.push(row(e, now));
      orders.push(e.order);
    }
    return { rows, orders, more: false };
  }

  /**
   * Ends the streams listed with connection id `id` with `disconnected_by_admin`; returns how many
   * (ids are unique unless a client chose its own request id).
   */
  disconnect(id: string): number {
    const hit: Entry[] = [];
    for (const e of this.listed) if (e.info!.id === id) hit.push(e);
    for (const e of hit) this.forget(e);
    const err = new RillError('disconnected_by_admin');
    for (const e of hit) e.stream.revoked(err);
    return hit.length;
  }

  /**
   * Ends every listed stream of subject `sub` (a JWT's `sub`, or an API key's configured `sub`)
   * with `disconnected_by_admin`; returns how many.
   */
  disconnectSubject(sub: string): number {
    const hit: Entry[] = [];
    for (const e of this.listed) if (e.identity.sub === sub) hit.push(e);
    for (const e of hit) this.forget(e);
    const err = new RillError('disconnected_by_admin');
    for (const e of hit) e.stream.revoked(err);
    return hit.length;
  }

  close(): void {
    this.deadlines.close();
    this.byCredential.clear();
    this.listed.clear();
  }

  /** Forgets a stream about to be ended by the registry (its own untrack then does nothing). */
  private forget(entry: Entry): void {
    this.listed.delete(entry);
    if (entry.credentialId !== '') this.remove(entry);
  }

  private place(entry: Entry, identity: Identity): void {
    entry.credentialId = identity.credentialId;
    let set = this.byCredential.get(identity.credentialId);
    if (!set) this.byCredential.set(identity.credentialId, (set = new Set()));
    set.add(entry);
    const expired = entry.stream.expired;
    if (identity.expiresAt !== null && expired) {
      entry.cancelExpiry = this.deadlines.at(identity.expiresAt, () => {
        entry.cancelExpiry = undefined;
        this.forget(entry);
        expired.call(entry.stream, tokenExpired());
      });
    }
  }

  private remove(entry: Entry): void {
    entry.cancelExpiry?.();
    entry.cancelExpiry = undefined;
    const set = this.byCredential.get(entry.credentialId);
    if (set?.delete(entry) && set.size === 0) this.byCredential.delete(entry.credentialId);
    entry.credentialId = '';
  }
}

/** A listing row: who, from where, what, and how far behind. */
function row(e: Entry, now: number): ConnectionRow {
  const info = e.info!;
  const st = info.state();
  const id = e.identity;
  return {
    id: info.id,
    transport: info.transport,
    identity: { kind: id.kind, sub: id.sub, name: id.name ?? null, credentialId: id.credentialId },
    address: info.address,
    patterns: st.patterns,
    topics: st.topics,
    bufferedBytes: st.bufferedBytes,
    live: st.live,
    state: st.live ? 'live' : 'catch-up',
    openedAt: new Date(info.openedAt).toISOString(),
    ageSeconds: Math.max(0, Math.floor((now - info.openedAt) / 1000)),
  };
}
