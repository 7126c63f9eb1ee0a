/**
 * An abusive client does not hurt a well-behaved one: while one address floods publishes and
 * stream opens (bounded: 2 s, 8 requests in flight, 127.0.0.1 only) and is answered with
 * `rate_limited`, a subscriber from another address gets every event of a steady publisher, with
 * a delivery p99 within 2× of the same run without the abuser. The two clients are told apart by
 * X-Forwarded-For from a trusted proxy (loopback), as behind a load balancer. The server and the
 * abuser run in processes of their own, so the measuring client shares its event loop with neither. On a shared 2-core
 * machine one round is noisy: three rounds alternate with and without the abuser, the medians of
 * their p99s are compared, with a floor of 25 ms under which a difference is scheduling noise.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import type { RillConfigInput } from '../src/config.js';
import { spawnServer, tempDir, useCleanups } from '@rill/testkit';

const { cleanups, track } = useCleanups();

const GOOD = '198.51.100.10';
const ABUSER = '198.51.100.66';
const ROUND_MS = 2_000;
const RATE = 50;
const FLOOR_MS = 25;

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

const median = (xs: number[]) => percentile(xs, 50);

/** An SSE subscriber recording each event's delivery delay (the publisher stamps `data.t`). */
function subscribe(url: string, topic: string): Promise<{ delays: number[]; close: () => void }> {
  return new Promise((resolve, reject) => {
    const delays: number[] = [];
    const req = http.get(
      `${url}/v1/topics/${topic}/stream`,
      { headers: { accept: 'text/event-stream', 'x-forwarded-for': GOOD } },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`subscribe: ${res.statusCode}`));
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let i;
          while ((i = buf.indexOf('\n\n')) !== -1) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = frame.split('\n').find((l) => l.startsWith('data: '));
            if (!data) continue;
            const ev = JSON.parse(data.slice(6)) as { data?: { t?: number } };
            if (typeof ev.data?.t === 'number') delays.push(performance.now() - ev.data.t);
          }
        });
        resolve({ delays, close: () => req.destroy() });
      },
    );
    req.on('error', reject);
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function post(url: string, topic: string, body: string, from: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/v1/topics/${topic}/events`,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'x-forwarded-for': from },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The abuser, in a process of its own (its client work must not slow the measuring one): 4
 * requests in flight, at most 400 a second, publishes and stream opens from ABUSER, for `ms`. Prints its status counts.
 */
const ABUSER_SCRIPT = `
const http = require('node:http');
const [url, from, ms] = process.argv.slice(1);
const until = Date.now() + Number(ms);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const statuses = {};
const count = (s) => (statuses[s] = (statuses[s] || 0) + 1);
const one = (n) => new Promise((resolve) => {
  const stream = n % 4 === 0;
  const req = http.request(url + (stream ? '/v1/topics/flood/stream' : '/v1/topics/flood.' + n + '/events'), {
    method: stream ? 'GET' : 'POST', agent: stream ? undefined : agent,
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-forwarded-for': from },
  }, (res) => {
    count(res.statusCode);
    res.resume();
    if (stream && res.statusCode === 200) setTimeout(() => req.destroy(), Math.max(0, until - Date.now()));
    else res.on('end', resolve);
    if (stream) resolve();
  });
  req.on('error', () => resolve());
  req.end(stream ? undefined : '{"data":"x"}');
});
// Paced: each worker starts at most 100 requests a second (a bounded load, 20x its allowance).
const worker = async (n) => {
  for (let i = 0, t0 = Date.now(); Date.now() < until; i++) {
    const due = t0 + i * 10;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
    await one(n);
  }
};
Promise.all([0, 1, 2, 3].map(worker)).then(() => {
  process.stdout.write(JSON.stringify(statuses));
  process.exit(0);
});
`;

function flood(url: string, ms: number): Promise<Map<number, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', ABUSER_SCRIPT, url, ABUSER, String(ms)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        const o = JSON.parse(out) as Record<string, number>;
        resolve(new Map(Object.entries(o).map(([k, v]) => [Number(k), v])));
      } catch {
        reject(new Error(`abuser printed ${out}`));
      }
    });
  });
}

async function round(url: string, topic: string, abuse: boolean) {
  const sub = await subscribe(url, topic);
  const start = performance.now();
  const end = start + ROUND_MS;
  const abuser = abuse ? flood(url, ROUND_MS) : Promise.resolve(new Map<number, number>());
  let sent = 0;
  // The steady publisher: RATE events a second, each stamped with its send time.
  while (performance.now() < end) {
    const due = start + (sent * 1000) / RATE;
    if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
    expect(await post(url, topic, JSON.stringify({ data: { t: performance.now() } }), GOOD)).toBe(
      201,
    );
    sent++;
  }
  const statuses = await abuser;
  // Every event arrives (waiting for it, not for a time).
  await new Promise<void>((resolve, reject) => {
    const deadline = performance.now() + 10_000;
    const check = () => {
      if (sub.delays.length >= sent) return resolve();
      if (performance.now() > deadline) return reject(new Error(`${sub.delays.length}/${sent}`));
      setTimeout(check, 10);
    };
    check();
  });
  sub.close();
  expect(sub.delays.length).toBe(sent);
  return { p99: percentile(sub.delays, 99), statuses };
}

describe('an abuser next to a well-behaved client', () => {
  it('is refused with rate_limited while the other client’s p99 stays within 2×', async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const config = join(dir.path, 'rill.json');
    const rateLimits = {
      exemptAddresses: [],
      trustedProxies: ['loopback'],
      overrides: {
        addresses: {
          [ABUSER]: {
            connections: 2,
            publishesPerSecond: { rate: 20, burst: 20 },
            topicsPerMinute: { rate: 10, burst: 10 },
          },
        },
      },
    };
    writeFileSync(config, JSON.stringify({ rateLimits } satisfies RillConfigInput));
    // The server in a process of its own, as in production.
    const s = track(
      await spawnServer(['--engine', 'memory', '--port', '0', '--config', config], {
        RILL_LOG_LEVEL: 'info',
      }),
    );
    const quiet: number[] = [];
    const abused: number[] = [];
    let limited = 0;
    let accepted = 0;
    const t0 = performance.now();
    for (let r = 0; r < 3; r++) {
      quiet.push((await round(s.url, `good.${r}.q`, false)).p99);
      const a = await round(s.url, `good.${r}.a`, true);
      abused.push(a.p99);
      limited += a.statuses.get(429) ?? 0;
      accepted += a.statuses.get(201) ?? 0;
      expect([...a.statuses.keys()].every((st) => [200, 201, 429].includes(st))).toBe(true);
    }
    // The abuser was refused, and got no more publishes than its bucket allows: the burst plus
    // the rate over the whole test.
    expect(limited).toBeGreaterThan(100);
    expect(accepted).toBeLessThanOrEqual(20 + 20 * ((performance.now() - t0) / 1000));
    const q = median(quiet);
    const a = median(abused);
    expect(
      a,
      `p99 quiet ${quiet.map((x) => x.toFixed(1))} abused ${abused.map((x) => x.toFixed(1))}`,
    ).toBeLessThanOrEqual(Math.max(2 * q, FLOOR_MS));
  });
});
