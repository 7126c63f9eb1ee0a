/**
 * End to end in a real browser: Chromium's native EventSource (driven by playwright-core, the
 * Debian `chromium` package, never a downloaded browser) against a child `rill serve`.
 *
 * 1. A page on the server's own origin subscribes with `new EventSource(...)`; the server is
 *    SIGKILLed and restarted on the same port and data directory, then stopped gracefully (SIGTERM)
 *    and restarted again; each time the browser reconnects by itself after the `retry:` hint with
 *    its `Last-Event-ID`, and the page ends with seqs 1..N exactly once, in order.
 * 2. The demo page served at `/` shows live values of `demo.random` when the server runs `--demo`.
 *
 * A missing /usr/bin/chromium fails both tests (CI installs it); they are never skipped.
 */
import type { Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, spawnServer, tempDir, useCleanups, publishRange } from '@rill/testkit';
import { closeBrowser, newPage as newKitPage } from '@rill/testkit/chromium';

const TOPIC = 'browser.resume';
const PER_PHASE = 50;
const BATCH = 10;

/** What the page keeps on `window` (see `subscribe` below). */
interface PageState {
  seqs: number[];
  ids: string[];
  datas: unknown[];
  opens: number;
  errors: number;
  resets: string[];
}

/** The page's window with that state; no global augmentation, so other test files can't clash. */
type PageWindow = Window & { rillEs?: PageState };

/** Resolves once the page's received seqs end with `seq` (fails the test after `timeout` ms). */
async function waitForSeq(page: Page, seq: number, timeout = 15_000): Promise<void> {
  await page.waitForFunction((s) => (window as PageWindow).rillEs?.seqs.at(-1) === s, seq, {
    timeout,
    polling: 20,
  });
}

describe('e2e: Chromium EventSource', () => {
  const { cleanups, track } = useCleanups();
  afterAll(() => closeBrowser());

  /**
   * A page in a fresh context, closed after the test. The browser is launched on first use, inside
   * each test rather than in a hook, so a missing Chromium fails every test with its message
   * instead of leaving them "skipped".
   */
  async function newPage(): Promise<Page> {
    const { page, close } = await newKitPage();
    cleanups.push(close);
    return page;
  }

  it('native EventSource resumes with Last-Event-ID across a SIGKILL restart and a graceful restart (lmdb): seqs 1..N exactly once, in order', async () => {
    const page = await newPage();
    const dir = tempDir('rill-browser-');
    cleanups.push(() => dir.remove());
    const port = await freePort();
    const args = ['--port', String(port), '--engine', 'lmdb', '--data-dir', dir.path];
    const env = { RILL_SSE__RETRY: '200' };
    let server = track(await spawnServer(args, env));
    const url = server.url;

    const health = await page.goto(`${url}/healthz`);
    expect(health?.status()).toBe(200);
    // from=earliest: a reconnect that ignored Last-Event-ID would replay from 1 (duplicates).
    await page.evaluate((path) => {
      const state: PageState = { seqs: [], ids: [], datas: [], opens: 0, errors: 0, resets: [] };
      (window as PageWindow).rillEs = state;
      const es = new EventSource(path);
      es.onopen = () => state.opens++;
      es.onerror = () => state.errors++;
      es.onmessage = (e: MessageEvent<string>) => {
        const ev = JSON.parse(e.data) as { seq: number; id: string; data: unknown };
        state.seqs.push(ev.seq);
        state.ids.push(e.lastEventId);
        state.datas.push(ev.data);
      };
      es.addEventListener('reset', (e) => state.resets.push((e as MessageEvent<string>).data));
    }, `/v1/topics/${TOPIC}/stream?from=earliest`);
    await page.waitForFunction(() => (window as PageWindow).rillEs?.opens === 1);

    const expected: number[] = [];
    expected.push(...(await publishRange(url, TOPIC, 1, PER_PHASE, BATCH)));
    await waitForSeq(page, PER_PHASE);

    server.proc.kill('SIGKILL');
    expect(await server.exited).toBe('SIGKILL');
    // The browser noticed the dead connection (and keeps retrying every 200 ms meanwhile).
    await page.waitForFunction(() => ((window as PageWindow).rillEs?.errors ?? 0) >= 1);
    server = track(await spawnServer(args, env));
    expect(server.url).toBe(url);
    expected.push(...(await publishRange(url, TOPIC, PER_PHASE + 1, 2 * PER_PHASE, BATCH)));
    await waitForSeq(page, 2 * PER_PHASE);
    expect(await page.evaluate(() => (window as PageWindow).rillEs?.opens)).toBe(2);

    // And a graceful restart: the stream ends with `event: error` (shutting_down), the browser
    // reconnects to the new process and resumes just the same.
    server.proc.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    server = track(await spawnServer(args, env));
    expect(server.url).toBe(url);
    expected.push(...(await publishRange(url, TOPIC, 2 * PER_PHASE + 1, 3 * PER_PHASE, BATCH)));
    await waitForSeq(page, 3 * PER_PHASE);

    const state = (await page.evaluate(() => (window as PageWindow).rillEs))!;
    const all = Array.from({ length: 3 * PER_PHASE }, (_, i) => i + 1);
    expect(expected).toEqual(all);
    expect(state.seqs).toEqual(all);
    expect(state.datas).toEqual(all.map((n) => ({ n })));
    expect(state.opens).toBe(3);
    expect(state.resets).toEqual([]);
    // Every id is topic:epoch:seq, one epoch across the restart.
    const epochs = new Set(
      state.ids.map((id, i) => {
        const [topic, epoch, seq] = id.split(':');
        expect(topic).toBe(TOPIC);
        expect(Number(seq)).toBe(all[i]);
        return epoch;
      }),
    );
    expect(epochs.size).toBe(1);
  });

  it('the demo page at /demo shows live values from demo.random (--demo)', async () => {
    const page = await newPage();
    const port = await freePort();
    const server = track(
      await spawnServer(['--port', String(port), '--engine', 'memory', '--demo']),
    );
    await page.goto(`${server.url}/demo`);
    const isValue = (text: string | null): boolean =>
      text !== null && /^\d{1,2}$/.test(text) && Number(text) <= 99;
    await page.waitForFunction(
      () => /^\d{1,2}$/.test(document.getElementById('value')?.textContent ?? ''),
      undefined,
      { timeout: 10_000 },
    );
    const first = await page.textContent('#value');
    expect(isValue(first)).toBe(true);
    // It keeps updating: the log grows past the first event.
    await page.waitForFunction(
      () => (document.getElementById('log')?.textContent ?? '').split('\n').length >= 3,
      undefined,
      { timeout: 10_000 },
    );
    expect(isValue(await page.textContent('#value'))).toBe(true);
    expect(await page.textContent('#status')).toBe('live');
  });
});
