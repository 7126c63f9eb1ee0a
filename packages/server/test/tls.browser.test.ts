/**
 * Why TLS is on Rill's own listener: over HTTP/1.1 a browser holds at most six connections to one
 * origin, so a page's seventh EventSource waits for one of the first six to close; over HTTP/2
 * they all share one connection.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RillServer } from '../src/server.js';
import { publish, startServer, waitFor } from '@rill/testkit';
import { launchChromium } from '@rill/testkit/chromium';
import { h2Connect, h2Request, selfSignedCert, type CertFiles } from '@rill/testkit/tls';

const STREAMS = 10;

let browser: Browser;
let cert: CertFiles;
beforeAll(async () => {
  cert = selfSignedCert();
  browser = await launchChromium(['--ignore-certificate-errors']);
});
afterAll(async () => {
  await browser.close();
  cert.remove();
});

/** Opens STREAMS EventSources to `topic` on the page's origin; each records what it receives. */
async function openStreams(page: Page, topic: string): Promise<void> {
  await page.evaluate(
    ({ n, topic }) => {
      const w = window as unknown as { streams: EventSource[]; got: unknown[][] };
      w.streams = [];
      w.got = [];
      for (let i = 0; i < n; i++) {
        const es = new EventSource(`/v1/topics/${topic}/stream`);
        const got: unknown[] = [];
        es.onmessage = (e) => got.push(JSON.parse(e.data as string).data);
        w.streams.push(es);
        w.got.push(got);
      }
    },
    { n: STREAMS, topic },
  );
}

/** How many of the page's EventSources are open, and what each received. */
function state(page: Page): Promise<{ open: number; got: unknown[][] }> {
  return page.evaluate(() => {
    const w = window as unknown as { streams: EventSource[]; got: unknown[][] };
    return { open: w.streams.filter((s) => s.readyState === EventSource.OPEN).length, got: w.got };
  });
}

async function pageOn(url: string): Promise<{ page: Page; close: () => Promise<void> }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${url}/healthz`);
  return { page, close: () => context.close() };
}

describe('EventSource streams from one page to one origin', () => {
  let server: RillServer;
  let url: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ server, url, close } = await startServer({ tls: { cert: cert.cert, key: cert.key } }));
  });
  afterAll(() => close());

  it(`over HTTPS (HTTP/2): all ${STREAMS} open and receive`, async () => {
    expect(url).toMatch(/^https:/);
    const { page, close: closePage } = await pageOn(url);
    try {
      const protocol = await page.evaluate(
        () =>
          (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming)
            .nextHopProtocol,
      );
      expect(protocol).toBe('h2');
      await openStreams(page, 'tab.h2');
      await waitFor(() => server.hub.size === STREAMS);
      await waitFor(async () => (await state(page)).open === STREAMS);
      // Published over a TLS connection of its own (fetch would refuse the self-signed cert).
      const s = await h2Connect(url);
      try {
        expect(
          (await h2Request(s, 'POST', '/v1/topics/tab.h2/events', { data: 'all' })).status,
        ).toBe(201);
      } finally {
        s.destroy();
      }
      await waitFor(async () => (await state(page)).got.every((g) => g.length === 1));
      expect((await state(page)).got).toEqual(Array(STREAMS).fill(['all']));
    } finally {
      await closePage();
    }
  });
});

describe('the same page over plain HTTP/1.1', () => {
  let server: RillServer;
  let url: string;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ server, url, close } = await startServer());
  });
  afterAll(() => close());

  it('gets at most six open: the rest wait for a connection', async () => {
    const { page, close: closePage } = await pageOn(url);
    try {
      await openStreams(page, 'tab.h1');
      await waitFor(() => server.hub.size === 6);
      await waitFor(async () => (await state(page)).open === 6);
      expect((await publish(url, 'tab.h1', { data: 'some' })).status).toBe(201);
      // Once the six open ones have the event, the other four still have no connection.
      await waitFor(async () => (await state(page)).got.filter((g) => g.length === 1).length === 6);
      const after = await state(page);
      expect(after.open).toBe(6);
      expect(after.got.filter((g) => g.length === 0)).toHaveLength(STREAMS - 6);
      expect(server.hub.size).toBe(6);
    } finally {
      await closePage();
    }
  });
});
