/**
 * `rill bench` as users run it: the built bin against a real `rill serve` child over loopback,
 * and against a deliberately lossy SSE peer, so the generator's counts, loss and latency figures
 * cannot silently break. Plus the marker scanner it counts with, fed arbitrary chunk splits.
 */
import { execFile, spawn } from 'node:child_process';
import http from 'node:http';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import type { BenchResult } from '../src/run.js';
import { MarkerScanner, benchPayload, dechunker } from '../src/scan.js';
import { BIN, spawnServer, type ChildServer } from '@rill/testkit';
import { SECRET, sign } from '@rill/testkit/auth';

const run = promisify(execFile);
const servers: ChildServer[] = [];
const closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const s of servers.splice(0)) {
    if (s.proc.exitCode === null && s.proc.signalCode === null) {
      s.proc.kill('SIGKILL');
      await s.exited;
    }
  }
  for (const c of closers.splice(0)) await c();
});

/** This package's own bin; `rill bench` (the server's bin) delegates to the same command. */
const BENCH_BIN = fileURLToPath(new URL('../bin/rill-bench.js', import.meta.url));

function runBench(
  args: string[],
  command: string[] = [BIN, 'bench'],
): Promise<{ code: number; result: BenchResult; err: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [...command, '--json', '-q', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    proc.once('error', reject);
    proc.once('exit', (code) => {
      try {
        resolve({ code: code ?? -1, result: JSON.parse(out) as BenchResult, err });
      } catch {
        reject(new Error(`rill bench exited ${code} without JSON:\n${out}\n${err}`));
      }
    });
  });
}

describe('rill bench against rill serve', () => {
  for (const [transport, publish] of [
    ['sse', 'http'],
    ['ws', 'ws'],
    ['ndjson', 'batch'],
  ] as const) {
    it(`${transport} subscribers, ${publish} publisher: every event counted, latency recorded`, async () => {
      const server = await spawnServer(['--engine', 'memory', '--port', '0']);
      servers.push(server);
      const { code, result, err } = await runBench([
        '--url',
        server.url,
        '--transport',
        transport,
        '--publish',
        publish,
        '--batch',
        '10',
        '-s',
        '30',
        '--topics',
        '3',
        '-w',
        '2',
        '-r',
        '200',
        '-d',
        '1',
        '--server-pid',
        String(server.proc.pid),
        // This test checks counting, not speed: a busy CI machine must not fail it on latency.
        '--max-p99',
        '60000',
      ]);
      expect(err).toBe('');
      expect(code).toBe(0);
      expect(result.connected).toBe(30);
      expect(result.workers).toBe(2);
      const step = result.steps[0]!;
      expect(step.published).toBeGreaterThanOrEqual(150);
      // Each event goes to the 10 subscribers of its topic.
      expect(step.expected).toBe(step.published * 10);
      expect(step.delivered).toBe(step.expected);
      expect(step.loss).toBe(0);
      expect(step.latencyMs.samples).toBe(step.delivered);
      expect(step.latencyMs.p50).toBeGreaterThan(0);
      expect(step.latencyMs.max).toBeGreaterThanOrEqual(step.latencyMs.p99);
      expect(step.serverCpuSeconds).toBeGreaterThan(0);
      expect(step.serverPeakRssKiB).toBeGreaterThan(10_000);
      // Whether the publisher kept the offered rate depends on how busy the machine is; the
      // verdicts must follow from the figures either way.
      // (publishedPerSec is rounded: only clear cases either side of 95 % of 200/s are checked.)
      if (step.publishedPerSec >= 191) expect(step.sound).toBe(true);
      if (step.publishedPerSec < 189) expect(step.sound).toBe(false);
      expect(step.ok).toBe(step.sound);
    });
  }
});

describe('rill bench against a rill serve with authentication', () => {
  for (const transport of ['sse', 'ws'] as const) {
    it(`${transport}: --token authenticates every subscriber and the publisher`, async () => {
      const server = await spawnServer(['--engine', 'memory', '--port', '0'], {
        RILL_AUTH__JWT__SECRET: SECRET,
      });
      servers.push(server);
      const args = ['--url', server.url, '--transport', transport, '--publish', 'http', '-s', '8'];
      const timing = ['-w', '1', '-r', '100', '-d', '1', '--warmup', '0', '--max-p99', '60000'];
      const token = await sign({ sub: 'bench', subscribe: ['>'], publish: ['>'] });
      const ok = await runBench([...args, ...timing, '--token', token]);
      expect(ok.err).toBe('');
      expect(ok.result.connected).toBe(8);
      const step = ok.result.steps[0]!;
      expect(step.published).toBeGreaterThan(0);
      expect(step.delivered).toBe(step.published * 8);
      // Without the token every connection is refused (401) and nothing is published.
      const refused = await runBench([...args, ...timing]);
      expect(refused.result.connected).toBe(0);
      expect(refused.result.steps[0]?.published ?? 0).toBe(0);
    }, 60_000);
  }
});

describe('rill-bench, the bin of its own', () => {
  it('has the flags of `rill bench`', async () => {
    // The help texts without the usage line (the command's name) and rill-bench's --version.
    const help = async (command: string[]): Promise<string[]> =>
      (await run(process.execPath, [...command, '--help'])).stdout
        .split('\n')
        .filter((line) => !line.startsWith('Usage: ') && !line.includes('--version'));
    const own = await help([BENCH_BIN]);
    expect(own.join('\n')).toContain('--subscribers <n>');
    expect(own).toEqual(await help([BIN, 'bench']));
  });

  it('runs the same load test', async () => {
    const server = await spawnServer(['--engine', 'memory', '--port', '0']);
    servers.push(server);
    const { code, result, err } = await runBench(
      ['--url', server.url, '-s', '4', '-r', '100', '-d', '1', '--max-p99', '60000'],
      [BENCH_BIN],
    );
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(result.connected).toBe(4);
    const step = result.steps[0]!;
    expect(step.published).toBeGreaterThan(0);
    expect(step.delivered).toBe(step.published * 4);
  });
});

describe('rill bench, many topics: own topic + a shared topic per connection', () => {
  for (const [transport, topics, publish] of [
    ['sse', 20, 'http'],
    // Uneven subscribers per topic (3 on topics 0–5, 2 on topic 6), so a publisher process's
    // counts added to the wrong topic would change the expected deliveries.
    ['ws', 7, 'ws'],
  ] as const) {
    it(`${transport}, ${topics} own topics, 2 publisher processes: exact per-topic loss accounting`, async () => {
      const server = await spawnServer(['--engine', 'memory', '--port', '0']);
      servers.push(server);
      const subscribers = 20;
      const { code, result, err } = await runBench([
        '--url',
        server.url,
        '--transport',
        transport,
        '--publish',
        publish,
        '-s',
        String(subscribers),
        '--topics',
        String(topics),
        '--shared-rate',
        '10',
        '--publishers',
        '2',
        '-r',
        '100',
        '-d',
        '1',
        '--warmup',
        '0',
        '--max-p99',
        '60000',
      ]);
      expect(err).toBe('');
      expect(code).toBe(0);
      expect(result.connected).toBe(subscribers);
      expect(result.sharedRate).toBe(10);
      expect(result.publishers).toBe(2);
      const step = result.steps[0]!;
      const shared = step.sharedPublished!;
      const own = step.published - shared;
      expect(own).toBeGreaterThanOrEqual(95);
      expect(shared).toBeGreaterThanOrEqual(9);
      // Own-topic events reach one topic's subscribers, shared ones every connection.
      const perTopic = Array.from({ length: topics }, (_, t) =>
        Math.ceil((subscribers - t) / topics),
      );
      if (topics === subscribers) expect(step.expected).toBe(own + shared * subscribers);
      expect(step.expected).toBeGreaterThanOrEqual(own * Math.min(...perTopic) + shared * 20);
      expect(step.expected).toBeLessThanOrEqual(own * Math.max(...perTopic) + shared * 20);
      // Every connection got its own topic's events and the shared ones, nothing more.
      expect(step.delivered).toBe(step.expected);
      expect(step.loss).toBe(0);
      expect(step.publishErrors).toBe(0);
    });
  }
});

describe('rill bench against a lossy peer', () => {
  it('reports the events a peer never delivered', async () => {
    // A generic SSE peer that forwards only every other publish to its subscribers.
    const subs = new Set<http.ServerResponse>();
    let n = 0;
    const peer = http.createServer((req, res) => {
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.flushHeaders();
        subs.add(res);
        res.on('close', () => subs.delete(res));
        return;
      }
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        if (n++ % 2 === 0) for (const s of subs) s.write(`data: ${body}\n\n`);
        res.end();
      });
    });
    const sockets = new Set<net.Socket>();
    peer.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => peer.listen(0, '127.0.0.1', r));
    closers.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          peer.close(() => r());
        }),
    );
    const base = `http://127.0.0.1:${(peer.address() as net.AddressInfo).port}`;
    const { result } = await runBench([
      '--target',
      'generic',
      '--sub-url',
      `${base}/sub/{topic}`,
      '--pub-url',
      `${base}/pub/{topic}`,
      '-s',
      '5',
      '-r',
      '100',
      '-d',
      '1',
      '--drain-ms',
      '500',
      '--warmup',
      '0',
    ]);
    const step = result.steps[0]!;
    expect(step.published).toBeGreaterThanOrEqual(80);
    expect(step.delivered).toBe(Math.ceil(step.published / 2) * 5);
    expect(step.loss).toBe(step.expected - step.delivered);
    expect(step.loss).toBeGreaterThan(0);
    expect(step.ok).toBe(false);
    expect(result.best).toBeUndefined();
  });
});

describe('MarkerScanner', () => {
  it('counts every payload and samples latencies whatever the chunk boundaries', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 50 }),
        fc.integer({ min: 1, max: 5 }),
        (events, cuts, sample) => {
          let wire = '';
          for (let i = 0; i < events; i++) {
            wire += `id: t:e:${i}\ndata: {"topic":"t","data":${benchPayload(i, ',"p":"rb"')}}\n\n:\n\n`;
          }
          const bytes = Buffer.from(wire);
          const lat: number[] = [];
          const sc = new MarkerScanner(sample, (us) => lat.push(us));
          let pos = 0;
          let k = 0;
          while (pos < bytes.length) {
            const len = cuts[k++ % cuts.length]!;
            sc.push(bytes.subarray(pos, pos + len));
            pos += len;
          }
          expect(sc.count).toBe(events);
          expect(lat.length).toBeGreaterThanOrEqual(Math.floor(events / sample) - 1);
          expect(lat.length).toBeLessThanOrEqual(Math.ceil(events / sample));
          for (const us of lat) expect(us).toBeLessThan(60_000_000);
        },
      ),
    );
  });
});

describe('dechunker', () => {
  it('gives back the body of any chunking, cut anywhere, even events split over chunks', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 300 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 20 }),
        (text, chunkSizes, cuts) => {
          const body = Buffer.from(text);
          // Encode with the given chunk sizes (a server may split anywhere, Pushpin does).
          const parts: Buffer[] = [];
          let at = 0;
          for (let k = 0; at < body.length; k++) {
            const n = Math.min(chunkSizes[k % chunkSizes.length]!, body.length - at);
            parts.push(Buffer.from(`${n.toString(16)}\r\n`), body.subarray(at, at + n));
            parts.push(Buffer.from('\r\n'));
            at += n;
          }
          parts.push(Buffer.from('0\r\n\r\n'));
          const wire = Buffer.concat(parts);
          const got: Buffer[] = [];
          const feed = dechunker((b) => got.push(Buffer.from(b)));
          // Deliver it in reads of other sizes.
          let pos = 0;
          for (let k = 0; pos < wire.length; k++) {
            const n = cuts[k % cuts.length]!;
            feed(wire.subarray(pos, pos + n));
            pos += n;
          }
          expect(Buffer.concat(got).equals(body)).toBe(true);
        },
      ),
    );
  });

  it('lets the scanner read a timestamp cut by a chunk boundary', () => {
    const payload = Buffer.from(`data: ${benchPayload(1, '')}\n\n`);
    const cut = payload.indexOf('"rb":') + 8; // inside the digits
    const wire = Buffer.concat([
      Buffer.from(`${cut.toString(16)}\r\n`),
      payload.subarray(0, cut),
      Buffer.from(`\r\n${(payload.length - cut).toString(16)}\r\n`),
      payload.subarray(cut),
      Buffer.from('\r\n'),
    ]);
    const lat: number[] = [];
    const sc = new MarkerScanner(1, (us) => lat.push(us));
    dechunker((b) => sc.push(b))(wire);
    expect(sc.count).toBe(1);
    expect(lat).toHaveLength(1);
    expect(lat[0]).toBeLessThan(60_000_000);
  });
});
