/**
 * The dashboard (`/ui/`, packages/ui) in Chromium (playwright-core, Debian's package) against a
 * real `rill serve`: every view shows the server's real data. Events published by the test show
 * in the overview's counters and charts, the topics table and the inspector's live tail and
 * history; a publish from the inspector's form is stored; an SSE client opened by the test is
 * listed under Connections, and disconnecting it there ends its stream. The topics table stays
 * virtualised with 10,000 topics. With authentication the dashboard asks for credentials and
 * refuses a token without the admin permission. (Through nginx: nginx.browser.test.ts.)
 */
import type { ConsoleMessage, Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { openSse, publish, spawnServer, useCleanups } from '@rill/testkit';
import { SECRET, sign } from '@rill/testkit/auth';
import { closeBrowser, newPage as newKitPage } from '@rill/testkit/chromium';

describe('dashboard in Chromium against rill serve', () => {
  const { cleanups, track } = useCleanups();
  afterAll(() => closeBrowser());

  /** A page at 1280×800 whose console errors (CSP violations included) are collected. */
  async function newPage(): Promise<{ page: Page; errors: string[] }> {
    const { page, close } = await newKitPage();
    cleanups.push(close);
    await page.setViewportSize({ width: 1280, height: 800 });
    const errors: string[] = [];
    page.on('console', (m: ConsoleMessage) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    return { page, errors };
  }

  it('overview, topics, inspector and connections show the server’s real data; a disconnect ends the stream', async () => {
    const server = track(await spawnServer(['--engine', 'memory', '--port', '0']));
    const { url } = server;
    // The start-up log says where the dashboard is.
    expect(server.stdout()).toContain(`"dashboard":"${url}/ui/"`);
    for (const t of ['prices.eu.sap', 'prices.us.aapl', 'orders'])
      expect(
        (
          await publish(
            url,
            t,
            Array.from({ length: 10 }, (_, i) => ({ data: { i } })),
          )
        ).status,
      ).toBe(201);
    expect(
      (
        await publish(
          url,
          'prices.eu.sap',
          Array.from({ length: 5 }, () => ({ data: 1 })),
        )
      ).status,
    ).toBe(201);

    const { page, errors } = await newPage();
    // `/` leads a browser to the dashboard.
    await page.goto(`${url}/`);
    expect(page.url()).toBe(`${url}/ui/`);

    // Overview: the counters of the stats stream, and charts with points.
    await page.getByRole('status').filter({ hasText: 'live' }).waitFor();
    await page.locator('.tile', { hasText: 'Publishes/s' }).getByText('35 total').waitFor();
    expect(await page.locator('.chart canvas').count()).toBeGreaterThanOrEqual(6);
    // The events chart holds the publishes seen: hovering along it, its legend shows a rate
    // above 0 somewhere (uPlot draws on a canvas; the legend is the readable part).
    const events = page.locator('.chart').first();
    const over = events.locator('.u-over');
    const seen: number[] = [];
    for (let i = 0; i <= 40 && !seen.some((v) => v > 0); i++) {
      // The mouse itself, not an actionability-checked hover: the chart redraws every second.
      const box = (await over.boundingBox())!;
      await page.mouse.move(box.x + (box.width * i) / 40, box.y + box.height / 2);
      const v = await events.locator('.u-series').nth(1).locator('.u-value').textContent();
      seen.push(Number(v));
    }
    expect(Math.max(...seen.filter((v) => Number.isFinite(v)))).toBeGreaterThan(0);

    // Topics: every topic with its numbers; the pattern filter asks the server.
    await page.getByRole('link', { name: 'Topics' }).click();
    const row = (t: string) => page.locator('.topics-table .vrow', { hasText: t });
    await row('prices.eu.sap').waitFor();
    expect(await row('prices.eu.sap').locator('[role=cell]').allTextContents()).toEqual(
      expect.arrayContaining(['prices.eu.sap', '15', '1']),
    );
    expect(await page.locator('.topics-table .vrow').count()).toBe(3);
    await page.getByLabel('Pattern').fill('prices.>');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.waitForFunction(() => location.hash.includes('pattern='));
    await row('prices.us.aapl').waitFor();
    await expect.poll(() => page.locator('.topics-table .vrow').count()).toBe(2);
    // Sorted by count, largest first.
    await page.getByRole('button', { name: /^Count/ }).click();
    expect(await page.locator('.topics-table .vrow a').first().textContent()).toBe('prices.eu.sap');
    // Search narrows what is shown.
    await page.getByLabel('Search').fill('aapl');
    await expect.poll(() => page.locator('.topics-table .vrow').count()).toBe(1);

    // Inspector: the live tail shows an event published now, the history the stored ones.
    await row('prices.us.aapl').getByRole('link').click();
    await page.locator('h1', { hasText: 'prices.us.aapl' }).waitFor();
    await page.locator('.pill', { hasText: 'open' }).waitFor();
    expect(
      (await publish(url, 'prices.us.aapl', { type: 'tick', data: { price: 187.5 } })).status,
    ).toBe(201);
    const tail = page.getByRole('list', { name: 'Live events' });
    await tail.getByText('{"price":187.5}').waitFor();
    const history = page.getByRole('list', { name: 'History events' });
    await history.locator('button.event').first().waitFor();
    await expect.poll(() => history.locator('button.event').count()).toBeGreaterThanOrEqual(10);
    expect(await history.locator('.seq').first().textContent()).toBe('#1');
    // An event's JSON, pretty-printed, with its cursor.
    await tail.getByText('{"price":187.5}').click();
    const detail = page.getByLabel('Selected event');
    expect(await detail.locator('pre').textContent()).toContain('"price": 187.5');
    expect(await detail.textContent()).toMatch(/cursor prices\.us\.aapl:[A-Za-z0-9]+:11/);
    // Following from a seq replays from there.
    await page.getByLabel('Follow from').fill('3');
    await page.getByRole('button', { name: 'Follow', exact: true }).click();
    await tail.getByText('#3', { exact: true }).waitFor();
    await expect.poll(() => tail.locator('button.event').count()).toBe(9);
    // The publish form refuses invalid JSON and stores valid JSON.
    const data = page.getByLabel('Data (JSON)');
    await data.fill('{"price": ');
    expect(await page.getByRole('button', { name: 'Publish' }).isDisabled()).toBe(true);
    await data.fill('{"price": 190}');
    await page.getByLabel('Type').fill('tick');
    await page.getByRole('button', { name: 'Publish' }).click();
    await page.getByText('stored as #12').waitFor();
    await tail.getByText('{"price":190}').waitFor();
    // The history's newest page takes it in.
    await expect.poll(() => history.locator('button.event').count()).toBe(12);
    // Snippets for this topic.
    await page.getByRole('tab', { name: 'curl' }).click();
    expect(await page.locator('.snippet pre').textContent()).toBe(
      `curl -N ${url}/v1/topics/prices.us.aapl/stream`,
    );

    // Connections: a client of the test's own is listed; disconnecting it ends its stream.
    const sse = await openSse(`${url}/v1/topics/orders/stream?from=earliest`);
    cleanups.push(() => sse.close());
    await sse.until(() => sse.events().length === 10);
    await page.getByRole('link', { name: 'Connections' }).click();
    const ordersRow = page.locator('.conn-table .vrow').filter({
      has: page.locator('[role=cell]', { hasText: /^orders$/ }),
    });
    await ordersRow.waitFor();
    expect(await ordersRow.locator('[role=cell]').allTextContents()).toEqual(
      expect.arrayContaining(['SSE', 'anonymous', '127.0.0.1', 'orders', 'live']),
    );
    page.once('dialog', (d) => void d.accept());
    await ordersRow.getByRole('button', { name: /Disconnect/ }).click();
    await sse.ended;
    const err = sse.frames.find((f) => f.event === 'error');
    expect(JSON.parse(err!.data!)).toMatchObject({ code: 'disconnected_by_admin' });
    await expect.poll(() => ordersRow.count()).toBe(0);

    // Limits & auth: the refusal counters.
    await page.getByRole('link', { name: 'Limits & auth' }).click();
    await page.locator('.tile', { hasText: 'Refused by a limit' }).waitFor();

    // No CSP violation or script error on the way.
    expect(errors).toEqual([]);
  });

  it('the topics table stays virtualised with 10,000 topics', async () => {
    const server = track(await spawnServer(['--engine', 'memory', '--port', '0']));
    const { url } = server;
    const N = 10_000;
    let next = 0;
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < N) {
          const i = next++;
          const r = await publish(url, `load.t${String(i).padStart(5, '0')}`, { data: i });
          if (r.status !== 201) throw new Error(`publish ${i}: ${r.status}`);
        }
      }),
    );
    console.log(`10,000 topics published in ${Date.now() - t0} ms`);
    const { page, errors } = await newPage();
    const t1 = Date.now();
    await page.goto(`${url}/ui/#/topics`);
    await page
      .getByText(`${(10_000).toLocaleString('en')} of ${(10_000).toLocaleString('en')}`)
      .waitFor({ timeout: 60_000 });
    console.log(`10,000 topics loaded and shown in ${Date.now() - t1} ms`);
    // Only the rows in view are in the page.
    const rendered = await page.locator('.topics-table .vrow').count();
    expect(rendered).toBeGreaterThan(10);
    expect(rendered).toBeLessThan(100);
    // The keyboard reaches the last one: End on a row scrolls it into view.
    await page.locator('.topics-table .vrow a').first().focus();
    await page.keyboard.press('End');
    await page.locator('.topics-table .vrow a', { hasText: 'load.t09999' }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('load.t09999');
    expect(await page.locator('.topics-table .vrow').count()).toBeLessThan(100);
    expect(errors).toEqual([]);
  }, 240_000);

  it('with authentication: asks for credentials, refuses a token without the admin permission, works with one', async () => {
    const server = track(
      await spawnServer(['--engine', 'memory', '--port', '0'], { RILL_AUTH__JWT__SECRET: SECRET }),
    );
    const { url } = server;
    const { page } = await newPage();
    const urls: string[] = [];
    page.on('request', (r) => urls.push(r.url()));
    await page.goto(`${url}/ui/`);
    const form = page.getByRole('form', { name: 'Credentials' });
    await form.getByText('needs credentials').waitFor();
    await form.getByLabel('Token or API key').fill(await sign({ sub: 'alice', subscribe: ['>'] }));
    await form.getByRole('button', { name: 'Use it' }).click();
    await form.getByText('lack the admin').waitFor();
    const admin = await sign({ sub: 'root', admin: true });
    await form.getByLabel('Token or API key').fill(admin);
    await form.getByRole('button', { name: 'Use it' }).click();
    await page.getByRole('status').filter({ hasText: 'live' }).waitFor();
    await page.locator('.tile', { hasText: 'Publishes/s' }).waitFor();
    // Kept for the tab: a reload needs no new entry.
    await page.reload();
    await page.getByRole('status').filter({ hasText: 'live' }).waitFor();
    await page.goto(`${url}/ui/#/connections`);
    await page.getByText(/open on this node/).waitFor();
    // The token never went into a URL.
    expect(urls.filter((u) => u.includes(admin) || u.includes('access_token'))).toEqual([]);
  });
});
