/**
 * The example apps (examples/serve.mjs, what `npm run example:*` starts) in real Chromium: the
 * random-number page renders the live stream, the ticker page fills and updates its table, and
 * in the chat two pages in separate browser contexts see each other typing and each other's
 * messages, and who is here (presence).
 */
import type { Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { useCleanups } from '@rill/testkit';
import { startExamples } from '../../../examples/serve.mjs';
import { closeBrowser, newPage } from '@rill/testkit/chromium';

describe('example apps in Chromium', () => {
  const { cleanups } = useCleanups();
  afterAll(closeBrowser);

  async function start(names: string[]): Promise<string> {
    const ex = await startExamples({ names, port: 0, tickMs: 50 });
    cleanups.push(ex.close);
    return ex.url;
  }

  async function page(): Promise<Page> {
    const p = await newPage();
    cleanups.push(p.close);
    return p.page;
  }

  it('random: numbers 0–99 arrive live', async () => {
    const url = await start(['random']);
    const p = await page();
    await p.goto(`${url}/examples/random/`);
    await p.waitForFunction(() => Number(document.getElementById('count')?.textContent) >= 10);
    expect(await p.textContent('#status')).toBe('open');
    const v = Number(await p.textContent('#value'));
    expect(Number.isInteger(v) && v >= 0 && v <= 99).toBe(true);
    const points = (await p.getAttribute('#line', 'points'))!.split(' ');
    expect(points.length).toBeGreaterThanOrEqual(10);
  });

  it('ticker: rows for the symbols, updating live', async () => {
    const url = await start(['ticker']);
    const p = await page();
    await p.goto(`${url}/examples/ticker/`);
    await p.waitForFunction(() => document.querySelectorAll('tbody tr').length >= 3);
    const total = (): Promise<number> =>
      p.$$eval('td.ticks', (tds) => tds.reduce((s, td) => s + Number(td.textContent), 0));
    const before = await total();
    await p.waitForFunction(
      (b) =>
        [...document.querySelectorAll('td.ticks')].reduce(
          (s, td) => s + Number(td.textContent),
          0,
        ) >
        b + 3,
      before,
    );
    expect(await p.textContent('#status')).toBe('open');
    expect(await p.$$eval('td.price', (tds) => tds.every((td) => Number(td.textContent) > 0))).toBe(
      true,
    );
  });

  it('chat: one page types, the other shows who is typing, then the message', async () => {
    const url = await start(['chat']);
    const alice = await page();
    const bob = await page();
    await alice.goto(`${url}/examples/chat/?room=r1&name=alice`);
    await bob.goto(`${url}/examples/chat/?room=r1&name=bob`);
    await alice.waitForFunction(() => document.getElementById('status')?.textContent === 'open');
    await bob.waitForFunction(() => document.getElementById('status')?.textContent === 'open');
    expect(await bob.textContent('#typing')).toBe('');

    await alice.locator('#text').pressSequentially('hello bob');
    await bob.waitForFunction(
      () => document.getElementById('typing')?.textContent === 'alice is typing…',
    );
    // Alice does not see herself typing.
    expect(await alice.textContent('#typing')).toBe('');

    await alice.locator('#text').press('Enter');
    await bob.waitForFunction(
      () => document.getElementById('messages')?.textContent === 'alice: hello bob',
    );
    await bob.waitForFunction(() => document.getElementById('typing')?.textContent === '');

    await bob.locator('#text').pressSequentially('hi');
    await alice.waitForFunction(
      () => document.getElementById('typing')?.textContent === 'bob is typing…',
    );
    // Typing signals are ephemeral: none is in the log, while the message is.
    const typingLog = await fetch(`${url}/v1/topics/typing.r1/events?after=0`);
    const typed =
      typingLog.status === 404 ? [] : ((await typingLog.json()) as { events: unknown[] }).events;
    expect(typed).toEqual([]);
    const chatLog = (await (await fetch(`${url}/v1/topics/chat.r1/events?after=0`)).json()) as {
      events: unknown[];
    };
    expect(chatLog.events).toHaveLength(1);
  });

  it('chat: two users see each other here, and one gone when its page closes', async () => {
    const url = await start(['chat']);
    const alice = await page();
    const bobPage = await newPage();
    cleanups.push(bobPage.close);
    const bob = bobPage.page;
    await alice.goto(`${url}/examples/chat/?room=r2&name=alice`);
    await alice.waitForFunction(
      () => document.getElementById('here')?.textContent === 'here: alice',
    );
    await bob.goto(`${url}/examples/chat/?room=r2&name=bob`);
    await bob.waitForFunction(
      () => document.getElementById('here')?.textContent === 'here: alice, bob',
    );
    await alice.waitForFunction(
      () => document.getElementById('here')?.textContent === 'here: alice, bob',
    );
    // Typing still shows while both are here.
    await bob.locator('#text').pressSequentially('hi');
    await alice.waitForFunction(
      () => document.getElementById('typing')?.textContent === 'bob is typing…',
    );
    // Bob's page goes away: after the server's grace period, alice sees him gone.
    await bobPage.close();
    await alice.waitForFunction(
      () => document.getElementById('here')?.textContent === 'here: alice',
      undefined,
      { timeout: 30_000 },
    );
  });
});
