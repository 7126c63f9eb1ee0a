/**
 * Chromium's native WebSocket (playwright-core driving the Debian `chromium` package, never a
 * downloaded browser) against a child `rill serve` on lmdb: several topics (plain and pattern),
 * publishes with acks, and a resume with the last cursor after a graceful restart.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, publish, spawnServer, tempDir, useCleanups } from '@rill/testkit';
import { launchChromium } from '@rill/testkit/chromium';

interface Msg {
  op: string;
  id?: string | number;
  sub?: string;
  cursor?: string;
  exact?: boolean;
  error?: { code: string };
  event?: { topic: string; seq: number; id: string; data: { n: number } };
}

interface PageState {
  msgs: Msg[];
  closes: number[];
  protocol: string;
  ws: WebSocket | null;
  connect(): Promise<void>;
  request(msg: Record<string, unknown>): Promise<Msg>;
}

declare global {
  interface Window {
    rill: PageState;
  }
}

describe('Chromium WebSocket', () => {
  let browser: Browser | undefined;
  const { cleanups, track } = useCleanups();

  beforeAll(async () => {
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
  });

  async function newPage(): Promise<Page> {
    const context = await browser!.newContext();
    cleanups.push(() => context.close());
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    return page;
  }

  const eventCount = (page: Page): Promise<number> =>
    page.evaluate(() => window.rill.msgs.filter((m) => m.op === 'event').length);

  it('subscribes to several topics, publishes with acks, resumes after a restart', async () => {
    const dir = tempDir('rill-ws-browser-');
    cleanups.push(() => dir.remove());
    const port = await freePort();
    const args = ['--port', String(port), '--engine', 'lmdb', '--data-dir', dir.path];
    const server = track(await spawnServer(args));
    const url = server.url;

    const page = await newPage();
    // Same origin as the WebSocket endpoint, as an app served by Rill would be.
    expect((await page.goto(`${url}/healthz`))?.status()).toBe(200);
    await page.evaluate(() => {
      let next = 0;
      const state: PageState = {
        msgs: [],
        closes: [],
        protocol: '',
        ws: null,
        connect: () =>
          new Promise((resolve, reject) => {
            const ws = new WebSocket(`ws://${location.host}/v1/ws`, 'rill.v1');
            ws.onmessage = (e: MessageEvent<string>) => state.msgs.push(JSON.parse(e.data) as Msg);
            ws.onclose = (e) => state.closes.push(e.code);
            ws.onerror = () => reject(new Error('websocket error'));
            ws.onopen = () => {
              state.ws = ws;
              state.protocol = ws.protocol;
              resolve();
            };
          }),
        request: (msg) =>
          new Promise((resolve, reject) => {
            const id = `b${next++}`;
            const ws = state.ws!;
            const onClose = (e: CloseEvent): void => reject(new Error(`closed ${e.code}`));
            const onReply = (e: MessageEvent<string>): void => {
              const m = JSON.parse(e.data) as Msg;
              if (m.id !== id) return;
              ws.removeEventListener('message', onReply);
              ws.removeEventListener('close', onClose);
              resolve(m);
            };
            ws.addEventListener('message', onReply);
            ws.addEventListener('close', onClose);
            ws.send(JSON.stringify({ ...msg, id }));
          }),
      };
      window.rill = state;
    });

    await page.evaluate(() => window.rill.connect());
    expect(await page.evaluate(() => window.rill.protocol)).toBe('rill.v1');
    const sub = await page.evaluate(() =>
      window.rill.request({ op: 'subscribe', topics: ['br.a', 'br.p.*'] }),
    );
    expect(sub).toMatchObject({ op: 'subscribed', exact: true });

    const topics = ['br.a', 'br.p.x', 'br.p.y'];
    const acks = await page.evaluate(
      ([ts, from, to]) =>
        Promise.all(
          Array.from({ length: to - from }, (_, k) =>
            window.rill.request({
              op: 'publish',
              topic: ts[(from + k) % ts.length],
              data: { n: from + k },
            }),
          ),
        ),
      [topics, 0, 30] as const,
    );
    expect(acks.every((a) => a.op === 'ack')).toBe(true);
    await page.waitForFunction(
      () => window.rill.msgs.filter((m) => m.op === 'event').length === 30,
    );

    // A big message (Chromium may send it in several frames) is read whole and judged as an event.
    const big = await page.evaluate(() =>
      window.rill.request({ op: 'publish', topic: 'br.a', data: 'x'.repeat(900 * 1024) }),
    );
    expect(big.error?.code).toBe('event_too_large');
    expect(await page.evaluate(() => window.rill.request({ op: 'ping' }))).toMatchObject({
      op: 'pong',
    });

    server.proc.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    await page.waitForFunction(() => window.rill.closes.length === 1);
    expect(await page.evaluate(() => window.rill.closes)).toEqual([4001]);

    const restarted = track(await spawnServer(args));
    expect(restarted.url).toBe(url);
    for (let n = 30; n < 45; n++) {
      const topic = n < 42 ? topics[n % 3]! : 'br.p.new';
      expect((await publish(url, topic, { data: { n } })).status).toBe(201);
    }

    const resumed = await page.evaluate(async () => {
      const r = window.rill;
      let cursor: string | undefined;
      for (const m of r.msgs) {
        if (m.op === 'subscribed' || m.op === 'reset') cursor = m.cursor;
        if (m.op === 'event') cursor = m.cursor ?? m.event!.id;
      }
      await r.connect();
      return r.request({ op: 'subscribe', topics: ['br.a', 'br.p.*'], cursor });
    });
    expect(resumed).toMatchObject({ op: 'subscribed', exact: true });
    await page.waitForFunction(
      () => window.rill.msgs.filter((m) => m.op === 'event').length === 45,
    );
    const more = await page.evaluate(
      ([ts]) =>
        Promise.all(
          Array.from({ length: 9 }, (_, k) =>
            window.rill.request({ op: 'publish', topic: ts[k % ts.length], data: { n: 45 + k } }),
          ),
        ),
      [topics] as const,
    );
    expect(more.every((a) => a.op === 'ack')).toBe(true);
    await page.waitForFunction(
      () => window.rill.msgs.filter((m) => m.op === 'event').length === 54,
    );

    const events = await page.evaluate(() =>
      window.rill.msgs.filter((m) => m.op === 'event').map((m) => m.event!),
    );
    expect(events.map((e) => e.data.n).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 54 }, (_, i) => i),
    );
    const byTopic = new Map<string, number[]>();
    for (const e of events) byTopic.set(e.topic, [...(byTopic.get(e.topic) ?? []), e.seq]);
    expect([...byTopic.keys()].sort()).toEqual(['br.a', 'br.p.new', 'br.p.x', 'br.p.y']);
    for (const [topic, seqs] of byTopic) {
      expect(seqs, topic).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    }
    expect(await eventCount(page)).toBe(54);
    expect(await page.evaluate(() => window.rill.msgs.some((m) => m.op === 'reset'))).toBe(false);
  });
});
