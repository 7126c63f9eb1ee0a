// Screenshots of each dashboard view at 1280×800 for the README (docs/images/dashboard-*.png):
// starts `rill serve` (memory engine, demo feed) on a free loopback port, gives it topics, events
// and clients to show, and photographs the views with Debian's Chromium (playwright-core).
// Usage: npm run build && node packages/ui/scripts/screenshots.mjs [--theme dark]
import { spawn } from 'node:child_process';
import { get } from 'node:http';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
/* global AbortController */
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const OUT = `${REPO}docs/images`;
const theme = process.argv.includes('--theme')
  ? process.argv[process.argv.indexOf('--theme') + 1]
  : 'light';

const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
const server = spawn(
  process.execPath,
  [
    `${REPO}packages/server/bin/rill.js`,
    'serve',
    '--engine',
    'memory',
    '--demo',
    '--port',
    String(port),
  ],
  { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RILL_LOG_LEVEL: 'warn' } },
);
// However this script ends, the server ends with it.
process.on('exit', () => server.kill('SIGTERM'));
process.on('uncaughtException', (err) => {
  console.error(err);
  process.exit(1);
});
const url = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  if (
    await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    )
  )
    break;
  if (i > 200) throw new Error('rill serve did not start');
  await new Promise((r) => setTimeout(r, 50));
}

const publish = (topic, events) =>
  fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  }).then((r) => {
    if (r.status !== 201) throw new Error(`publish ${topic}: ${r.status}`);
  });

// Topics: prices, orders, chat rooms; a few hundred events over them.
const symbols = ['AAPL', 'MSFT', 'NVDA', 'SAP', 'ASML', 'TSLA'];
for (const region of ['eu', 'us']) {
  for (const s of symbols) {
    await publish(
      `prices.${region}.${s.toLowerCase()}`,
      Array.from({ length: 20 + s.length * 7 }, (_, i) => ({
        type: 'tick',
        data: { symbol: s, price: Math.round((100 + Math.sin(i / 3) * 5 + s.length) * 100) / 100 },
      })),
    );
  }
}
for (let i = 1; i <= 5; i++) {
  await publish(`chat.room-${i}`, [
    { type: 'message', data: { from: 'alice', text: `hello room ${i}` } },
  ]);
}
await publish(
  'orders',
  Array.from({ length: 42 }, (_, i) => ({
    type: 'order.created',
    data: {
      id: 1000 + i,
      customer: `c-${(i * 7) % 13}`,
      total: Math.round(i * 13.7 * 100) / 100,
      items: [{ sku: 'A-1', qty: 1 + (i % 3) }],
    },
  })),
);

// Clients: SSE and NDJSON streams and a long-poll, held open while the screenshots are taken.
const ac = new AbortController();
const hold = (path, accept) =>
  fetch(`${url}${path}`, { headers: { accept }, signal: ac.signal }).then(
    (r) =>
      r.body
        ?.getReader()
        .read()
        .catch(() => undefined),
    () => undefined,
  );
for (const s of symbols.slice(0, 4))
  void hold(`/v1/topics/prices.eu.${s.toLowerCase()}/stream`, 'text/event-stream');
void hold('/v1/stream?topics=prices.>&format=ndjson', 'application/x-ndjson');
void hold('/v1/stream?topics=chat.*', 'text/event-stream');
void hold('/v1/events?topics=audit&wait=60', 'application/json');
for (let i = 0; i < 3; i++) void hold('/v1/topics/orders/stream', 'text/event-stream');
void hold('/v1/topics/demo.random/stream', 'text/event-stream');
// A WebSocket subscribed to two patterns.
const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/ws`, 'rill.v1');
ws.on('open', () =>
  ws.send(JSON.stringify({ op: 'subscribe', id: 1, topics: ['orders', 'chat.*'] })),
);
ws.on('error', () => undefined);
// A slow consumer: a stream whose reader stopped reading while large events keep coming.
const slow = get(
  `${url}/v1/topics/bulk/stream`,
  { headers: { accept: 'text/event-stream' } },
  (res) => res.pause(),
);
slow.on('error', () => undefined);
const big = 'x'.repeat(32 * 1024);
const bulk = setInterval(() => {
  void publish(
    'bulk',
    Array.from({ length: 16 }, (_, i) => ({ type: 'blob', data: { i, big } })),
  ).catch(() => undefined);
}, 500);

// A steady trickle of orders while the charts fill.
let n = 0;
const feed = setInterval(() => {
  void publish('orders', [
    { type: 'order.created', data: { id: 2000 + n++, total: 10 + (n % 17) } },
  ]).catch(() => undefined);
}, 200);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
  ],
});
const context = await browser.newContext({
  viewport: { width: 1280, height: 800 },
  colorScheme: theme,
});
const page = await context.newPage();
mkdirSync(OUT, { recursive: true });
const suffix = theme === 'dark' ? '-dark' : '';
const shot = (name) => page.screenshot({ path: `${OUT}/dashboard-${name}${suffix}.png` });

try {
  await page.goto(`${url}/`);
  // The tiles, or the word that this server has no stats.
  await page.waitForSelector('.tile, main p.muted');
  // Let the charts gather a few seconds of samples.
  await page.waitForTimeout(12000);
  await shot('overview');

  await page.goto(`${url}/ui/#/topics?pattern=${encodeURIComponent('prices.>')}`);
  await page.waitForSelector('.topics-table .vrow');
  await shot('topics');

  await page.goto(`${url}/ui/#/topic/orders`);
  await page.waitForSelector('.facts');
  await page.fill('input[name=from]', 'earliest');
  await page.click('button:text-is("Follow")');
  await page.waitForSelector('ol[aria-label="Live events"] button.event');
  await page.click('ol[aria-label="Live events"] li:nth-child(3) button.event');
  await shot('inspector');

  await page.goto(`${url}/ui/#/connections`);
  await page.waitForSelector('.conn-table .vrow');
  await shot('connections');

  await page.goto(`${url}/ui/#/limits`);
  await page.waitForSelector('main h1');
  await shot('limits');
} finally {
  clearInterval(feed);
  clearInterval(bulk);
  ac.abort();
  ws.terminate();
  slow.destroy();
  await browser.close();
  server.kill('SIGTERM');
}
console.log(`screenshots in ${OUT}`);
