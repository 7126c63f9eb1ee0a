/**
 * The SDK against a real Rill server with authentication: JWTs that live two seconds, handed out
 * by a token function that (like many identity providers' caches) gives the same token until it
 * has expired, so each token really expires while a subscription uses it: the server ends the
 * SSE stream with `token_expired`, answers the long-poll 401 `token_expired` at the expiry, and
 * closes the WebSocket 4006 (after `token_expiring`, which cannot be answered with a new token
 * yet). Events are published throughout; the application sees every one exactly once, in order,
 * each reconnect carrying a new token and the cursor. Refusals (no grant, a revoked key) stop.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startServer, tempDir, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig, sign } from '@rill/testkit/auth';
import {
  createClient,
  type RillClient,
  type StateChange,
  type Subscription,
  type TransportName,
} from '../src/index.js';

const TOPIC = 'orders';
const TTL = 2000;

describe('the SDK against a server with authentication', () => {
  const { cleanups } = useCleanups();

  async function server(extra: Record<string, unknown> = {}) {
    const s = await startServer({ auth: authConfig(extra) });
    cleanups.push(s.close);
    return s;
  }

  function client(url: string, transport: TransportName, token: () => Promise<string>): RillClient {
    const c = createClient({
      url,
      transport,
      token,
      WebSocket,
      backoff: { initialDelay: 20, maxDelay: 100 },
    });
    cleanups.push(() => c.close());
    return c;
  }

  function read(sub: Subscription<unknown>): { seqs: number[]; done: Promise<unknown> } {
    const seqs: number[] = [];
    const done = (async () => {
      for await (const ev of sub) seqs.push(ev.seq);
    })().catch((err: unknown) => err);
    return { seqs, done };
  }

  /** A token source that gives the same short-lived token until it has expired. */
  function identityProvider(): { token: () => Promise<string>; issued: string[] } {
    const issued: string[] = [];
    let current: string | undefined;
    return {
      issued,
      token: async () => {
        if (current === undefined || decodeJwt(current).exp! * 1000 <= Date.now()) {
          current = await sign({ sub: 'alice', subscribe: [TOPIC] }, TTL);
          issued.push(current);
        }
        return current;
      },
    };
  }

  const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

  for (const transport of ['sse', 'ws', 'poll'] as const) {
    it(`${transport}: the JWT expires mid-stream twice; new tokens, every event exactly once, in order`, async () => {
      const { server: srv, url } = await server({ expiryWarning: 500 });
      const idp = identityProvider();
      const states: StateChange[] = [];
      const sub = client(url, transport, idp.token).subscribe(TOPIC, {
        from: 'earliest',
        onState: (s) => states.push(s),
      });
      const { seqs } = read(sub);
      const expiries = (): number => states.filter((s) => s.error?.code === 'token_expired').length;
      let total = 0;
      while (expiries() < 2) {
        await srv.engine.append(TOPIC, [{ data: String(total + 1) }, { data: String(total + 2) }]);
        total += 2;
        await waitFor(() => seqs.length === total, 15_000);
      }
      await srv.engine.append(TOPIC, [{ data: '0' }]);
      total += 1;
      await waitFor(() => seqs.length === total, 15_000);
      expect(seqs).toEqual(range(total));
      expect(idp.issued.length).toBeGreaterThanOrEqual(3);
      expect(
        states
          .filter((s) => s.error?.code === 'token_expired')
          .every((s) => s.state === 'reconnecting'),
      ).toBe(true);
      expect(sub.state).toBe('open');
    });
  }

  for (const transport of ['sse', 'ws', 'poll'] as const) {
    it(`${transport}: a topic outside the grants is refused (forbidden, not retried); a revoked key ends the subscription`, async () => {
      const key = apiKey('mobile', { subscribe: [TOPIC] });
      const dir = tempDir('rill-sdk-auth-');
      cleanups.push(dir.remove);
      const file = join(dir.path, 'keys.json');
      writeFileSync(file, JSON.stringify([key.entry]));
      const { server: srv, url } = await server({ apiKeysFile: file });
      await srv.engine.append(TOPIC, [{ data: '1' }]);
      const c = createClient({
        url,
        transport,
        token: key.key,
        WebSocket,
        backoff: { initialDelay: 20, maxDelay: 100 },
      });
      cleanups.push(() => c.close());
      const refused = read(c.subscribe('secret', { from: 'earliest' }));
      expect(await refused.done).toMatchObject({ code: 'forbidden', retryable: false });

      const sub = c.subscribe(TOPIC, { from: 'earliest' });
      const { seqs, done } = read(sub);
      await waitFor(() => seqs.length === 1);
      // The key is removed from the keys file: at the reload its subscription ends.
      writeFileSync(file, '[]');
      expect((await srv.reload()).revoked).toEqual(['key:mobile']);
      expect(await done).toMatchObject({ code: 'unauthorized', retryable: false });
      expect(sub.state).toBe('closed');
    });
  }
});
