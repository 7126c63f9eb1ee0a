/**
 * The SDK in real Chromium against a real Rill server with authentication, from a page on another
 * origin (another port, listed in `http.allowedOrigins`: CORS for SSE over fetch with its
 * `Authorization` preflight, the Origin check for the WebSocket). The page's token function asks
 * its own server, which hands out the same two-second JWT until it has expired, so tokens really
 * expire under open streams: an SSE stream ends with `token_expired`, a WebSocket closes 4006.
 * Events are published throughout; the page sees every one exactly once, in order.
 */
import { decodeJwt } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { pageServer, startServer, useCleanups, waitFor } from '@rill/testkit';
import { authConfig, sign } from '@rill/testkit/auth';
import { bundle, closeBrowser, newPage } from '@rill/testkit/chromium';
import type { SdkSnapshot } from './fixtures/auth-sdk-page.js';

const TTL = 2000;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);

describe('the SDK in Chromium, with tokens that expire', () => {
  const { cleanups } = useCleanups();
  afterAll(closeBrowser);

  for (const transport of ['sse', 'ws'] as const) {
    it(`${transport}: streams resume with a new token after each expiry, every event exactly once`, async () => {
      let current: string | undefined;
      let issued = 0;
      const pages = await pageServer({
        '/': {
          type: 'text/html',
          body: '<!doctype html><script type="module" src="/app.js"></script>',
        },
        '/app.js': {
          type: 'text/javascript',
          body: await bundle('packages/client/test/fixtures/auth-sdk-page.ts'),
        },
        '/token': {
          type: 'text/plain',
          body: async () => {
            if (current === undefined || decodeJwt(current).exp! * 1000 <= Date.now()) {
              current = await sign({ sub: 'alice', subscribe: ['orders'] }, TTL);
              issued++;
            }
            return current;
          },
        },
      });
      cleanups.push(pages.close);
      const rill = await startServer({
        auth: authConfig({ expiryWarning: 500 }),
        http: { allowedOrigins: [pages.url] },
      });
      cleanups.push(rill.close);

      const { page, close } = await newPage();
      cleanups.push(close);
      await page.goto(`${pages.url}/?transport=${transport}&rill=${encodeURIComponent(rill.url)}`);
      const snap = async (): Promise<SdkSnapshot> =>
        (await page.evaluate(() => (window as Window & { sdk?: SdkSnapshot }).sdk))!;
      const expiries = async (): Promise<number> =>
        (await snap()).states.filter((s) => s.error === 'token_expired').length;

      let total = 0;
      while ((await expiries()) < 2) {
        await rill.server.engine.append('orders', [{ data: '1' }, { data: '2' }]);
        total += 2;
        await waitFor(async () => (await snap()).seqs.length === total, 15_000);
      }
      await rill.server.engine.append('orders', [{ data: '3' }]);
      total += 1;
      await waitFor(async () => (await snap()).seqs.length === total, 15_000);
      const s = await snap();
      expect(s.seqs).toEqual(range(total));
      expect(issued).toBeGreaterThanOrEqual(3);
      expect(s.states.at(-1)?.state).toBe('open');
    });
  }
});
