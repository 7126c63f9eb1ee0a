/**
 * The HTTP guards and encodings as Chromium sees them: a page whose name is rebound to the
 * loopback Rill can neither publish nor read, and gzip-compressed SSE decodes in EventSource.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, history, startServer } from '@rill/testkit';
import { launchChromium } from '@rill/testkit/chromium';

describe('Host check (DNS rebinding)', () => {
  it('a page in Chromium whose name is rebound to 127.0.0.1 can neither publish nor read', async () => {
    // The attacker's page is served on 127.0.0.1:P under the name rebind.test; then Rill takes over
    // 127.0.0.1:P, as if the name had been re-resolved to the loopback Rill. The page is now
    // same-origin with Rill as far as the browser knows.
    const p = await freePort();
    const attacker = http.createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'text/html', connection: 'close' }).end('<p>hi</p>'),
    );
    await new Promise<void>((r) => attacker.listen(p, '127.0.0.1', r));
    const browser = await launchChromium([`--host-resolver-rules=MAP rebind.test 127.0.0.1`]);
    let rill: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      const page = await browser.newPage();
      await page.goto(`http://rebind.test:${p}/`);
      attacker.closeAllConnections();
      await new Promise((r) => attacker.close(r));
      rill = await startServer({ port: p });
      const result = await page.evaluate(async () => {
        const pub = await fetch('/v1/topics/rb/events', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"data":"stolen"}',
        });
        const pubBody = (await pub.json()) as unknown;
        const read = await fetch('/v1/topics/rb/events');
        const ws = await new Promise<string>((resolve) => {
          const s = new WebSocket(`ws://${location.host}/v1/ws`, 'rill.v1');
          s.onopen = () => resolve('open');
          s.onclose = (e) => resolve(`closed ${e.code}`);
        });
        return { pub: pub.status, pubBody, read: read.status, ws };
      });
      expect(result).toEqual({
        pub: 421,
        pubBody: {
          error: {
            code: 'host_not_allowed',
            message: `Host rebind.test:${p} is not served here (see http.allowedHosts)`,
            retryable: false,
            closeCode: 4522,
          },
        },
        read: 421,
        ws: 'closed 1006',
      });
      expect(await history(rill.url, 'rb')).toEqual([]);
    } finally {
      await browser.close();
      await rill?.close();
    }
  }, 60_000);
});

describe('gzip', () => {
  let url: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ url, close } = await startServer({ sse: { heartbeat: 150 }, http: { compression: true } }));
  });
  afterAll(() => close());

  it('is decoded by Chromium', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const encodings: Array<string | undefined> = [];
      page.on('response', (r) => {
        if (r.url().includes('/gz.chrome/stream')) encodings.push(r.headers()['content-encoding']);
      });
      await page.goto(`${url}/healthz`);
      await page.evaluate(() => {
        const w = window as unknown as { got: unknown[] };
        w.got = [];
        const es = new EventSource('/v1/topics/gz.chrome/stream');
        es.onmessage = (e) => w.got.push(JSON.parse(e.data as string).data);
        es.onopen = () =>
          fetch('/v1/topics/gz.chrome/events', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify([{ data: 'c1' }, { data: 'c2' }]),
          });
      });
      await page.waitForFunction(
        () => (window as unknown as { got: unknown[] }).got.length >= 2,
        null,
        {
          timeout: 15_000,
        },
      );
      expect(await page.evaluate(() => (window as unknown as { got: unknown[] }).got)).toEqual([
        'c1',
        'c2',
      ]);
      expect(encodings).toEqual(['gzip']);
    } finally {
      await browser.close();
    }
  });
});
