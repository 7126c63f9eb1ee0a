/**
 * The README's React hook in real Chromium, in a page served from another origin than the Rill
 * server (another port), with a token: where the page's origin is in `http.allowedOrigins`, its
 * requests pass CORS (the preflight for `Authorization`, the exposed headers) and the hook renders
 * the events; where it is not, the browser refuses the answers and the hook never opens.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { pageServer, startServer, useCleanups } from '@rill/testkit';
import { authConfig, sign } from '@rill/testkit/auth';
import { bundle, closeBrowser, newPage } from '@rill/testkit/chromium';
import type { Page } from 'playwright-core';

describe('the README hook on another origin', () => {
  const { cleanups } = useCleanups();
  afterAll(closeBrowser);

  async function open(allowedOrigins: (page: string) => string[]): Promise<{
    page: Page;
    rill: Awaited<ReturnType<typeof startServer>>;
  }> {
    const pages = await pageServer({
      '/': {
        type: 'text/html',
        body: '<!doctype html><div id="root"></div><script type="module" src="/app.js"></script>',
      },
      '/app.js': {
        type: 'text/javascript',
        body: await bundle('packages/react/test/fixtures/readme-hook.tsx'),
      },
    });
    cleanups.push(pages.close);
    const rill = await startServer({
      auth: authConfig(),
      http: { allowedOrigins: allowedOrigins(pages.url) },
    });
    cleanups.push(rill.close);
    const token = await sign({ sub: 'alice', subscribe: ['demo.>'] });
    const { page, close } = await newPage();
    cleanups.push(close);
    await page.goto(`${pages.url}/?rill=${encodeURIComponent(rill.url)}&token=${token}`);
    return { page, rill };
  }

  it('receives events when the page origin is listed', async () => {
    const { page, rill } = await open((origin) => [origin]);
    await page.waitForFunction(
      () => (window as { hook?: { status: string } }).hook?.status === 'open',
    );
    await rill.server.engine.append('demo.random', [{ data: '42' }, { data: '7' }]);
    await page.waitForFunction(
      () => (window as { hook?: { data: unknown[] } }).hook?.data.length === 2,
      undefined,
      { polling: 20 },
    );
    expect(await page.evaluate(() => (window as { hook?: unknown }).hook)).toMatchObject({
      status: 'open',
      data: [42, 7],
    });
    expect(await page.locator('p').textContent()).toBe('open: 7');
  });

  it('fails when it is not: the browser refuses the answers, the hook never opens', async () => {
    const { page, rill } = await open(() => ['http://other.example:3000']);
    await rill.server.engine.append('demo.random', [{ data: '1' }]);
    await page.waitForFunction(
      () => (window as { hook?: { error?: string } }).hook?.error === 'connection_failed',
      undefined,
      { polling: 20 },
    );
    const hook = (await page.evaluate(() => (window as { hook?: unknown }).hook)) as {
      status: string;
      data: unknown[];
    };
    expect(hook.status).not.toBe('open');
    expect(hook.data).toEqual([]);
  });
});
