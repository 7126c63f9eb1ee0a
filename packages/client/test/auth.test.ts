/**
 * The SDK's authentication against the wire protocol, over real sockets: a test server
 * (`@rill/testkit/auth-server`) that checks tokens as Rill does, expires them in the middle of
 * streams (SSE `error` frame, WebSocket close 4006, a long-poll refused with 401) and warns
 * WebSockets with `token_expiring`. For each transport, a stream whose token expires several
 * times, with events published meanwhile, hands the application every event exactly once, in
 * order, each reconnect carrying a new token and the cursor; short-lived JWTs are refreshed ahead
 * of expiry (a WebSocket on the same socket); refusals stop with their codes.
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { waitFor, useCleanups } from '@rill/testkit';
import { AuthTestServer, type Seen } from '@rill/testkit/auth-server';
import {
  createClient,
  ForbiddenError,
  jwtExpiry,
  type RillClient,
  type StateChange,
  type Subscription,
} from '../src/index.js';

type Transport = 'sse' | 'ws' | 'poll';
const TOPIC = 'orders';

describe('authentication against the wire protocol', () => {
  const { cleanups } = useCleanups();

  async function server(expiryWarning?: number): Promise<AuthTestServer> {
    const s = new AuthTestServer(expiryWarning);
    await s.listen();
    cleanups.push(() => s.close());
    return s;
  }

  function client(
    srv: AuthTestServer,
    transport: Transport,
    token: string | (() => string | Promise<string>),
  ): RillClient {
    const c = createClient({
      url: srv.url,
      transport,
      token,
      WebSocket,
      backoff: { initialDelay: 20, maxDelay: 100 },
    });
    cleanups.push(() => c.close());
    return c;
  }

  /** Reads a subscription into `seqs`; `states` records its state changes. */
  function read(sub: Subscription<unknown>): { seqs: number[]; done: Promise<unknown> } {
    const seqs: number[] = [];
    const done = (async () => {
      for await (const ev of sub) seqs.push(ev.seq);
    })().catch((err: unknown) => err);
    return { seqs, done };
  }

  /** The token checks of subscription connections (not publishes or history). */
  const connects = (srv: AuthTestServer): Seen[] =>
    srv.seen.filter((s) => s.route === 'stream' || s.route === 'poll' || s.route === 'ws-auth');

  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

  for (const transport of ['sse', 'ws', 'poll'] as const) {
    it(`${transport}: a token that expires mid-stream, three times: a new token each time, every event exactly once, in order`, async () => {
      const srv = await server();
      let issued = 0;
      const token = (): string => (issued++, srv.sign('alice', 3_600_000));
      const c = client(srv, transport, token);
      const states: StateChange[] = [];
      const sub = c.subscribe(TOPIC, { from: 'earliest', onState: (s) => states.push(s) });
      const { seqs } = read(sub);

      let total = 0;
      for (let round = 0; round < 3; round++) {
        srv.append(TOPIC, 15);
        total += 15;
        // Expire while the round's events may still be on their way, then publish more while
        // the client is getting a new token and reconnecting.
        await waitFor(() => seqs.length > total - 15);
        srv.expireAll();
        srv.append(TOPIC, 5);
        total += 5;
      }
      srv.append(TOPIC, 5);
      total += 5;
      await waitFor(() => seqs.length >= total);
      expect(seqs).toEqual(range(total));

      const expiries = states.filter((s) => s.error?.code === 'token_expired');
      expect(expiries.length).toBeGreaterThanOrEqual(3);
      expect(expiries.every((s) => s.state === 'reconnecting')).toBe(true);
      expect(issued).toBeGreaterThanOrEqual(4);
      const accepted = connects(srv).filter((s) => s.result === 'ok');
      // Every accepted connection used a token the server had not expired yet: a new one each round.
      expect(new Set(accepted.map((s) => s.token)).size).toBeGreaterThanOrEqual(4);
      // Carried as the protocol says: a header on requests, the auth op on a WebSocket.
      const via = transport === 'ws' ? 'op' : 'header';
      expect(connects(srv).every((s) => s.via === via)).toBe(true);
      if (transport === 'ws') expect(srv.unauthenticatedOps).toBe(0);
      // Every reconnect resumed from a cursor (none repeated events the client already had).
      const resumes =
        transport === 'ws'
          ? srv.seen.filter((s) => s.route === 'ws-subscribe')
          : accepted.filter((s) => s.route === 'stream' || s.route === 'poll');
      expect(resumes.length).toBeGreaterThanOrEqual(4);
      expect(resumes.slice(1).every((s) => s.cursor !== undefined)).toBe(true);
      expect(sub.state).toBe('open');
    });
  }

  it('ws: token_expiring gets a new token sent on the same socket; the stream goes on', async () => {
    const srv = await server();
    let issued = 0;
    const c = client(srv, 'ws', () => (issued++, srv.sign('alice', 3_600_000)));
    const sub = c.subscribe(TOPIC, { from: 'earliest' });
    const { seqs } = read(sub);
    srv.append(TOPIC, 5);
    await waitFor(() => seqs.length === 5);
    srv.warnAll();
    await waitFor(() => srv.seen.filter((s) => s.route === 'ws-auth').length === 2);
    srv.append(TOPIC, 5);
    await waitFor(() => seqs.length === 10);
    expect(seqs).toEqual(range(10));
    const auths = srv.seen.filter((s) => s.route === 'ws-auth');
    expect(auths.map((s) => [s.conn, s.result])).toEqual([
      [1, 'ok'],
      [1, 'ok'],
    ]);
    expect(auths[1]!.token).not.toBe(auths[0]!.token);
    expect(issued).toBe(2);
    expect(srv.wsCloses).toEqual([]);
  });

  it('ws: short-lived JWTs are refreshed on the open socket before they expire (no 4006)', async () => {
    const TTL = 4000;
    const srv = await server(500);
    const c = client(srv, 'ws', () => srv.sign('alice', TTL));
    const states: StateChange[] = [];
    const sub = c.subscribe(TOPIC, { from: 'earliest', onState: (s) => states.push(s) });
    const { seqs } = read(sub);
    srv.append(TOPIC, 3);
    // Two refreshes: the socket outlives the first two tokens' lifetimes.
    await waitFor(() => srv.seen.filter((s) => s.route === 'ws-auth').length >= 3, 20_000);
    srv.append(TOPIC, 3);
    await waitFor(() => seqs.length === 6);
    expect(seqs).toEqual(range(6));
    const auths = srv.seen.filter((s) => s.route === 'ws-auth');
    expect(auths.every((s) => s.conn === 1 && s.result === 'ok')).toBe(true);
    // Each refresh came while the token before it was still good.
    for (let i = 1; i < auths.length; i++) {
      expect(jwtExpiry(auths[i - 1]!.token!)! - jwtExpiry(auths[i]!.token!)!).toBeLessThan(0);
    }
    expect(srv.wsCloses).toEqual([]);
    expect(states.map((s) => s.state)).toEqual(['open']);
  });

  it('sse: a short-lived JWT expires on the stream; the token refreshed ahead is used to resume, exactly once', async () => {
    const TTL = 3000;
    const srv = await server();
    const signedAt: number[] = [];
    const c = client(srv, 'sse', () => (signedAt.push(Date.now()), srv.sign('alice', TTL)));
    const states: StateChange[] = [];
    const sub = c.subscribe(TOPIC, { from: 'earliest', onState: (s) => states.push(s) });
    const { seqs } = read(sub);
    let total = 0;
    // Publish throughout two expiries.
    while (states.filter((s) => s.error?.code === 'token_expired').length < 2) {
      srv.append(TOPIC, 2);
      total += 2;
      await waitFor(() => seqs.length === total, 10_000);
    }
    srv.append(TOPIC, 2);
    total += 2;
    await waitFor(() => seqs.length === total);
    expect(seqs).toEqual(range(total));
    const streams = srv.seen.filter((s) => s.route === 'stream');
    expect(streams.every((s) => s.result === 'ok' && s.via === 'header')).toBe(true);
    expect(new Set(streams.map((s) => s.token)).size).toBe(streams.length);
    // The second token was obtained ahead of the first one's expiry (at 80 % of its life,
    // at least 1 s before), not after the stream ended.
    expect(signedAt[1]! - signedAt[0]!).toBeLessThan(TTL - 900);
  });

  for (const transport of ['sse', 'ws', 'poll'] as const) {
    it(`${transport}: refusals stop with their codes: unauthorized, forbidden, a fixed token's expiry`, async () => {
      const srv = await server();
      const bad = srv.sign('alice', 3_600_000, undefined, Buffer.alloc(32, 1));
      const refused = async (
        token: string | (() => string),
        topic = TOPIC,
      ): Promise<{ err: unknown; attempts: number }> => {
        const before = connects(srv).length;
        const sub = client(srv, transport, token).subscribe(topic, { from: 'earliest' });
        const { done } = read(sub);
        const err = await done;
        expect(sub.state).toBe('closed');
        return { err, attempts: connects(srv).length - before };
      };

      const u = await refused(() => bad);
      expect(u.err).toBeInstanceOf(ForbiddenError);
      expect(u.err).toMatchObject({ code: 'unauthorized', retryable: false });
      expect(u.attempts).toBe(1);

      const f = await refused(srv.sign('alice', 3_600_000, ['public']));
      expect(f.err).toMatchObject({ name: 'ForbiddenError', code: 'forbidden', retryable: false });

      // A fixed token is never refreshed: its expiry ends the subscription with the error.
      const fixed = srv.sign('alice', 3_600_000);
      const sub = client(srv, transport, fixed).subscribe(TOPIC, { from: 'earliest' });
      const { seqs, done } = read(sub);
      srv.append(TOPIC, 3);
      await waitFor(() => seqs.length === 3);
      srv.expireAll();
      srv.append(TOPIC, 1); // wakes a long-poll, which then finds its token expired
      expect(await done).toMatchObject({ code: 'token_expired', retryable: false });
      expect(seqs).toEqual([1, 2, 3]);
      expect(sub.state).toBe('closed');
    });
  }

  it('publish and history carry the token; a publish refused as expired is sent again with a new one, stored once', async () => {
    const srv = await server();
    let issued = 0;
    const c = client(srv, 'sse', () => (issued++, srv.sign('alice', 3_600_000)));
    await c.publish(TOPIC, { n: 1 });
    srv.expireAll();
    const r = await c.publish(TOPIC, { n: 2 }, { key: 'k2' });
    expect(r).toMatchObject({ seq: 2, duplicate: false });
    const page = await c.history(TOPIC);
    expect(page.events.map((e) => e.data)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(issued).toBe(2);
    expect(srv.seen.map((s) => [s.route, s.via, s.result])).toEqual([
      ['publish', 'header', 'ok'],
      ['publish', 'header', 'token_expired'],
      ['publish', 'header', 'ok'],
      ['history', 'header', 'ok'],
    ]);
  });
});
