/**
 * useStream in real Chromium (development build, so StrictMode double-mounts effects) against a
 * real in-process server that also serves the test page: events exactly once and in order, a
 * bounded buffer, a topic change, and no leaked connection — the server's own subscription count
 * (hub.size) must come back to exactly one, then zero after unmount.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createServer, type RillServer } from '../../server/src/index.js';
import { publish, waitFor, useCleanups } from '@rill/testkit';
import { bundle, closeBrowser, newPage } from '@rill/testkit/chromium';
import type { HookSnapshot } from './fixtures/hook-app.js';

type HookWindow = Window & {
  hook?: HookSnapshot;
  setTopic?: (t: string) => void;
  setMounted?: (m: boolean) => void;
};

async function serve(): Promise<{ server: RillServer; url: string }> {
  const server = await createServer(
    { engine: 'memory', port: 0, logLevel: 'silent' },
    { logger: pino({ level: 'silent' }) },
  );
  const js = await bundle('packages/react/test/fixtures/hook-app.tsx');
  server.app.get('/test/', async (_q, r) =>
    r
      .type('text/html')
      .send(
        '<!doctype html><div id="root"></div><script type="module" src="/test/app.js"></script>',
      ),
  );
  server.app.get('/test/app.js', async (_q, r) => r.type('text/javascript').send(js));
  return { server, url: await server.listen() };
}

describe('useStream in Chromium', () => {
  const { cleanups } = useCleanups();
  afterAll(closeBrowser);

  for (const transport of ['sse', 'ws'] as const) {
    it(`${transport}: StrictMode, bounded buffer, topic change and unmount: exactly once, no leaked connection`, async () => {
      const { server, url } = await serve();
      cleanups.push(() => server.close());
      const { page, close } = await newPage();
      cleanups.push(close);
      const hook = (): Promise<HookSnapshot | undefined> =>
        page.evaluate(() => (window as HookWindow).hook);
      const until = (pred: string): Promise<unknown> =>
        page.waitForFunction(
          `(() => { const h = window.hook; return h && (${pred}); })()`,
          undefined,
          { polling: 20 },
        );

      for (let n = 1; n <= 3; n++) await publish(url, 'a', { data: { n } });
      await page.goto(`${url}/test/?topic=a&max=5&transport=${transport}`);
      await until(`h.status === 'open' && h.last === 3`);
      expect((await hook())!.seqs).toEqual([1, 2, 3]);
      // StrictMode mounted, unmounted and mounted again: one subscription must remain.
      await waitFor(() => server.hub.size === 1);

      for (let n = 4; n <= 12; n++) await publish(url, 'a', { data: { n } });
      await until('h.last === 12');
      expect((await hook())!.seqs).toEqual([8, 9, 10, 11, 12]);

      await page.evaluate(() => (window as HookWindow).setTopic!('b'));
      await until(`h.topic === 'b' && h.status === 'open'`);
      await publish(url, 'a', { data: { n: 13 } });
      for (let n = 1; n <= 2; n++) await publish(url, 'b', { data: { n } });
      await until('h.last === 2');
      const b = (await hook())!;
      expect(b.seqs).toEqual([1, 2]);
      expect(b.topics).toEqual(['b', 'b']);
      await waitFor(() => server.hub.size === 1);

      await page.evaluate(() => (window as HookWindow).setMounted!(false));
      await waitFor(() => server.hub.size === 0);
      expect(await page.textContent('p')).toBe('unmounted');
    });
  }
});
