/**
 * RillProvider's `token` in real Chromium, against a test server that checks tokens as Rill does
 * (`@rill/testkit/auth-server`, which also serves the page): the app keeps its token in state and
 * passes it to the provider. A token that changes is sent at once on an open WebSocket (another
 * `auth` on the same socket); a token that expired while the app had no new one yet makes the
 * subscription retry until the app sets a new one, then resume: every event exactly once.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor, useCleanups } from '@rill/testkit';
import { AuthTestServer } from '@rill/testkit/auth-server';
import { bundle, closeBrowser, newPage } from '@rill/testkit/chromium';
import type { TokenSnapshot } from './fixtures/token-app.js';

type TokenWindow = Window & { hook?: TokenSnapshot; setToken?: (t: string) => void };

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

describe('RillProvider token in Chromium', () => {
  const { cleanups } = useCleanups();
  afterAll(closeBrowser);

  for (const transport of ['sse', 'ws'] as const) {
    it(`${transport}: a token kept in state is followed; after an expiry the stream resumes with the next one`, async () => {
      const srv = new AuthTestServer();
      const url = await srv.listen();
      cleanups.push(() => srv.close());
      srv.serve(
        '/test/',
        'text/html',
        '<!doctype html><div id="root"></div><script type="module" src="/test/app.js"></script>',
      );
      srv.serve(
        '/test/app.js',
        'text/javascript',
        await bundle('packages/react/test/fixtures/token-app.tsx'),
      );
      const { page, close } = await newPage();
      cleanups.push(close);
      const hook = async (): Promise<TokenSnapshot> =>
        (await page.evaluate(() => (window as TokenWindow).hook))!;
      const until = (pred: string): Promise<unknown> =>
        page.waitForFunction(
          `(() => { const h = window.hook; return h && (${pred}); })()`,
          undefined,
          { polling: 20 },
        );
      const setToken = (t: string): Promise<void> =>
        page.evaluate((x) => (window as TokenWindow).setToken!(x), t);
      const refusals = (): number =>
        srv.seen.filter((s) => s.route !== 'ws-subscribe' && s.result === 'token_expired').length;

      srv.append('orders', 5);
      const first = srv.sign('alice', 3_600_000);
      await page.goto(`${url}/test/?transport=${transport}&token=${first}`);
      await until(`h.status === 'open' && h.seqs.length === 5`);

      // A new token while the stream is open…
      const second = srv.sign('alice', 3_600_000);
      await setToken(second);
      if (transport === 'ws') {
        // …is sent on the same socket, right away.
        await waitFor(() => srv.seen.some((s) => s.route === 'ws-auth' && s.token === second));
        expect(srv.seen.filter((s) => s.route === 'ws-auth').map((s) => s.conn)).toEqual([1, 1]);
      } else {
        // …is what the next stream carries.
        srv.expireAll();
        await waitFor(() => srv.seen.some((s) => s.route === 'stream' && s.token === second));
      }
      srv.append('orders', 5);
      await until(`h.status === 'open' && h.seqs.length === 10`);

      // Expired before the app has a newer one: the subscription retries (and says why)…
      srv.expireAll();
      srv.append('orders', 5);
      await until(`h.error === 'token_expired'`);
      await waitFor(() => refusals() >= 2);
      // …until the app sets one; then it resumes from its cursor.
      await setToken(srv.sign('alice', 3_600_000));
      await until(`h.status === 'open' && h.seqs.length === 15`);
      srv.append('orders', 5);
      await until(`h.seqs.length === 20`);
      expect((await hook()).seqs).toEqual(range(20));
      const via = transport === 'ws' ? 'op' : 'header';
      expect(srv.seen.every((s) => s.route === 'ws-subscribe' || s.via === via)).toBe(true);
    });
  }
});
