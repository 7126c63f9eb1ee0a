import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, openSse, publish, REPO, systemBinary, tempDir } from '@rill/testkit';
import { launchChromium } from '@rill/testkit/chromium';
import { checkProxiedStreams, twoRedisNodes } from '@rill/testkit/proxy';

/** The configuration docs/operations.md recommends, as shipped. */
const CONF = join(REPO, 'docs/deploy/nginx-rill.conf');

/** Starts Debian's nginx with the documented config pointed at `ports`, on a free port. */
async function startNginx(ports: number[]): Promise<{ url: string; stop: () => Promise<void> }> {
  const nginx = systemBinary('nginx');
  const dir = tempDir('rill-nginx-');
  const port = await freePort();
  let conf = readFileSync(CONF, 'utf8');
  const servers = ports
    .map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=5s;`)
    .join('\n');
  conf = conf.replace(
    /^ {4}server 127\.0\.0\.1:808\d .*\n(?: {4}server 127\.0\.0\.1:808\d .*\n)*/m,
    `${servers}\n`,
  );
  conf = conf.replace('listen 8080;', `listen 127.0.0.1:${port};`);
  expect(conf).toContain(`server 127.0.0.1:${ports[0]}`);
  writeFileSync(join(dir.path, 'rill.conf'), conf);
  const d = dir.path;
  writeFileSync(
    join(d, 'nginx.conf'),
    `worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${d}/body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
  include ${d}/rill.conf;
}
`,
  );
  const proc: ChildProcess = spawn(
    nginx,
    ['-p', d, '-c', join(d, 'nginx.conf'), '-e', join(d, 'error.log')],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  proc.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (proc.exitCode !== null) throw new Error(`nginx exited: ${out}`);
    if (Date.now() > deadline) throw new Error(`nginx did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGQUIT');
        await exited;
      }
      dir.remove();
    },
  };
}

describe('two rill nodes (redis engine) behind nginx with the documented config', () => {
  const stops: (() => unknown)[] = [];

  afterAll(async () => {
    for (const s of stops.reverse()) await s();
  });

  it('streams SSE and NDJSON unbuffered, carries WebSocket upgrades, and lets a client resume on the other node when one dies', async () => {
    const { nodes, ports, stop } = await twoRedisNodes('rillnginx');
    stops.push(stop);
    const nginx = await startNginx(ports);
    stops.push(nginx.stop);
    const topic = 'proxied';
    const sse = await checkProxiedStreams(nginx.url, topic, stops);

    // A browser: a page loaded through nginx (a name and a non-default port, as in production)
    // opens an EventSource and a WebSocket through it. The WebSocket's same-origin check needs the
    // Host with its port, which nginx passes only as the recipe says.
    const browser = await launchChromium(['--host-resolver-rules=MAP rill.test 127.0.0.1']);
    stops.push(() => browser.close());
    const page = await browser.newPage();
    const origin = `http://rill.test:${new URL(nginx.url).port}`;
    await page.goto(`${origin}/`);
    const seen = await page.evaluate(async (t) => {
      const viaSse = new Promise<number[]>((resolve, reject) => {
        const es = new EventSource(`/v1/topics/${t}/stream?from=earliest`);
        const seqs: number[] = [];
        es.onmessage = (e) => {
          seqs.push((JSON.parse(e.data as string) as { seq: number }).seq);
          if (seqs.length === 2) {
            es.close();
            resolve(seqs);
          }
        };
        es.onerror = () => reject(new Error('EventSource failed'));
      });
      const viaWs = new Promise<number[]>((resolve, reject) => {
        // globalThis: this file imports another WebSocket (ws), which the test runner would substitute.
        const ws = new globalThis.WebSocket(`ws://${location.host}/v1/ws`, 'rill.v1');
        const seqs: number[] = [];
        ws.onopen = () =>
          ws.send(JSON.stringify({ op: 'subscribe', id: 1, topics: [t], from: 'earliest' }));
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data as string) as { op: string; event?: { seq: number } };
          if (m.op === 'event') seqs.push(m.event!.seq);
          if (seqs.length === 2) {
            ws.close();
            resolve(seqs);
          }
        };
        ws.onclose = (e) => reject(new Error(`WebSocket closed ${e.code}`));
      });
      return { sse: await viaSse, ws: await viaWs };
    }, topic);
    expect(seen).toEqual({ sse: [1, 2], ws: [1, 2] });

    // The dashboard through nginx: `/` leads to it, its stats stream arrives unbuffered (live, with
    // both nodes of the shared engine), and the topics table lists the topic.
    await page.goto(`${origin}/`);
    expect(page.url()).toBe(`${origin}/ui/`);
    await page.getByRole('status').filter({ hasText: 'live' }).waitFor({ timeout: 15_000 });
    await page.locator('h1', { hasText: '2 nodes' }).waitFor({ timeout: 15_000 });
    await page.goto(`${origin}/ui/#/topics`);
    await page.locator('.topics-table .vrow', { hasText: topic }).waitFor({ timeout: 15_000 });

    // One node dies: publishes go to the survivor, and an SSE client reconnecting through nginx
    // with its Last-Event-ID resumes there, missing nothing published meanwhile.
    const last = sse.events().at(-1)!.id;
    nodes[0]!.proc.kill('SIGKILL');
    await nodes[0]!.exited;
    for (let n = 3; n <= 5; n++)
      expect((await publish(nginx.url, topic, { data: { n } })).status).toBe(201);
    const resumed = await openSse(`${nginx.url}/v1/topics/${topic}/stream`, {
      'last-event-id': last,
    });
    stops.push(() => resumed.close());
    await resumed.until(() => resumed.events().length === 3, 5_000);
    expect(resumed.events().map((e) => [e.seq, e.data])).toEqual([
      [3, { n: 3 }],
      [4, { n: 4 }],
      [5, { n: 5 }],
    ]);
  }, 60_000);
});
