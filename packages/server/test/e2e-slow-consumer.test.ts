/**
 * End to end, over real sockets against a child `rill serve`: one subscriber stops reading while
 * 200,000 events are published (docs/architecture.md § Guarantees: slow consumers). The server must neither buffer them for it (memory
 * stays bounded) nor drop it, nor slow the other subscriber down; once it reads again it gets every
 * event, in seq order, from the log (the catch-up path), and then rejoins the live path.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { RssSampler, spawnServer, tempDir, useCleanups } from '@rill/testkit';

const TOTAL = 200_000;
const BATCH = 1000;
const TOPIC = 'slow.consumer';
const MiB = 1024 * 1024;
/** The per-subscriber limit under test (`limits.maxSubscriberBufferBytes`, 1 MiB by default). */
const SUB_LIMIT = MiB;
/**
 * Padding of each event. With ~20-byte payloads the whole 200k-event stream is only ~31 MiB, the
 * same order as V8's garbage-collection slack, and a memory measurement could not tell "bounded"
 * from "buffered everything". With 1 KiB per event the slow subscriber's stream is ~228 MiB, so
 * buffering it would blow far past the bound below while the bounded server stays well under it.
 */
const PAD = 'x'.repeat(1024);
/**
 * Bound on what the server holds for the stalled subscriber: its anonymous-memory (RssAnon) growth
 * over the whole test (from before the first publish to the peak while publishing, while the slow
 * subscriber is paused, and while it catches up), minus the growth of a reference server in the
 * same run that takes the same publishes with only the subscriber that keeps up.
 *
 * The reference is what the runtime itself keeps from ingesting 200 MiB of JSON bodies and
 * sending 228 MiB of frames, and it depends on the Node version and the machine's load, not on
 * Rill: measured on 2 shared cores (lmdb engine) 100-120 MiB on Node 20 and 120-130 MiB on Node 24
 * (with no subscriber at all: 23-25 MiB on Node 20, 85-90 MiB on Node 24, whose V8 keeps a larger
 * old generation under this allocation rate). The difference was -3 to 13 MiB. With the
 * per-subscriber limit effectively removed (RILL_LIMITS__MAX_SUBSCRIBER_BUFFER_BYTES=4GiB, so the
 * paused subscriber's frames all stay in the server) it was 480 MiB. 60 MiB leaves several times
 * the measured spread and is less than a third of what buffering the slow subscriber's stream
 * costs at the very least (its 228 MiB of frames, asserted below).
 */
const GROWTH_BOUND = 60 * MiB;

/** The server both runs start: lmdb, a large retention, the limit under test. */
function serverEnv(): Record<string, string> {
  return {
    RILL_RETENTION__MAX_EVENTS: '500000',
    // V8's young generation is sized by the runtime (Node 24 lets it grow by ~100 MiB under this
    // allocation rate, all of it garbage); held at Node 22's size so both runs vary less.
    NODE_OPTIONS: '--max-semi-space-size=16',
    RILL_LIMITS__MAX_SUBSCRIBER_BUFFER_BYTES: String(SUB_LIMIT),
  };
}

async function publishAll(base: string): Promise<number> {
  let publishedBytes = 0;
  for (let from = 0; from < TOTAL; from += BATCH) {
    publishedBytes += await postBatch(base, from, BATCH);
  }
  return publishedBytes;
}

/**
 * Kernel queues of the TCP connection between `clientPort` and `serverPort` on 127.0.0.1, from
 * /proc/net/tcp: bytes the server has sent but the client has not acknowledged (server tx_queue)
 * plus bytes received but not read by the client process (client rx_queue).
 */
function kernelQueued(clientPort: number, serverPort: number): number {
  let total = 0;
  let found = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const local = parseInt(f[1]!.split(':')[1]!, 16);
    const remote = parseInt(f[2]!.split(':')[1]!, 16);
    const [tx, rx] = f[4]!.split(':').map((h) => parseInt(h, 16)) as [number, number];
    if (local === serverPort && remote === clientPort) {
      total += tx;
      found++;
    } else if (local === clientPort && remote === serverPort) {
      total += rx;
      found++;
    }
  }
  if (found !== 2) throw new Error(`connection ${clientPort}->${serverPort} not in /proc/net/tcp`);
  return total;
}

/**
 * A lean SSE reader over raw node:http (200k frames: no per-frame objects kept). Checks, as frames
 * arrive, that seqs run 1, 2, 3 … without gap or repeat and that each event's data is the one
 * published with that seq.
 */
class Reader {
  /** Bytes of event frames received. */
  bytes = 0;
  count = 0;
  nextSeq = 1;
  error: string | null = null;
  ended = false;
  private buf = '';
  private readonly waiters: Array<() => void> = [];

  private constructor(
    readonly req: http.ClientRequest,
    readonly res: http.IncomingMessage,
  ) {}

  static open(url: string, paused: boolean): Promise<Reader> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error(`no response from ${url}`));
      }, 10_000);
      const req = http.get(url, { headers: { accept: 'text/event-stream' } }, (res) => {
        clearTimeout(timer);
        if (res.statusCode !== 200) {
          req.destroy();
          reject(new Error(`stream answered ${res.statusCode}`));
          return;
        }
        const r = new Reader(req, res);
        res.setEncoding('utf8');
        // Paused: the response buffers up to its high-water mark, then node stops reading the
        // socket, the kernel buffers fill and TCP's window closes: the server sees backpressure.
        if (paused) res.pause();
        res.on('data', (c: string) => r.onData(c));
        res.on('close', () => {
          r.ended = true;
          r.wake();
        });
        resolve(r);
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let i: number;
    while ((i = this.buf.indexOf('\n\n')) !== -1) {
      const frame = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 2);
      const d = frame.indexOf('\ndata: ');
      if (d === -1) continue; // the `retry:` preamble, heartbeats
      this.bytes += frame.length + 2;
      if (this.error) continue;
      let ev: { seq?: number; data?: { i?: number; pad?: string } };
      try {
        ev = JSON.parse(frame.slice(d + 7)) as typeof ev;
      } catch {
        this.error = `unparsable frame: ${frame.slice(0, 200)}`;
        continue;
      }
      if (ev.seq !== this.nextSeq) {
        this.error = `expected seq ${this.nextSeq}, got frame ${frame.slice(0, 200)}`;
      } else if (ev.data?.i !== ev.seq - 1 || ev.data.pad !== PAD) {
        this.error = `seq ${ev.seq} carries the wrong data (i=${ev.data?.i})`;
      }
      this.nextSeq++;
      this.count++;
    }
    this.wake();
  }

  /** Resolves once `n` events arrived; fails on a bad event, the stream's end, or the timeout. */
  until(n: number, timeoutMs: number): Promise<void> {
    return new Promise((ok, fail) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        const k = this.waiters.indexOf(check);
        if (k !== -1) this.waiters.splice(k, 1);
        if (err) fail(err);
        else ok();
      };
      const check = (): void => {
        if (this.error) done(new Error(this.error));
        else if (this.count >= n) done();
        else if (this.ended) done(new Error(`stream ended after ${this.count}/${n} events`));
      };
      const timer = setTimeout(
        () => done(new Error(`timed out after ${timeoutMs} ms with ${this.count}/${n} events`)),
        timeoutMs,
      );
      this.waiters.push(check);
      check();
    });
  }
}

const { cleanups, track } = useCleanups();

async function postBatch(base: string, from: number, count: number): Promise<number> {
  const body = JSON.stringify(
    Array.from({ length: count }, (_, k) => ({ data: { i: from + k, pad: PAD } })),
  );
  const res = await fetch(`${base}/v1/topics/${TOPIC}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    signal: AbortSignal.timeout(15_000),
  });
  const json = (await res.json()) as { events?: Array<{ seq: number }> };
  expect(res.status).toBe(201);
  // One request in flight at a time, so seqs follow the publish order: seq = i + 1.
  expect(json.events![0]!.seq).toBe(from + 1);
  expect(json.events![count - 1]!.seq).toBe(from + count);
  return body.length;
}

describe('a subscriber that stops reading (lmdb engine, child process)', () => {
  it('keeps server memory bounded while 200,000 events pass it by, then delivers all of them in order from the log', async () => {
    // ---- the reference: the same publishes, with only the subscriber that keeps up ----
    const refDir = tempDir('rill-slow-ref-');
    cleanups.push(() => refDir.remove());
    const ref = track(
      await spawnServer(
        ['--engine', 'lmdb', '--data-dir', refDir.path, '--port', '0'],
        serverEnv(),
      ),
    );
    const refReader = await Reader.open(
      `${ref.url}/v1/topics/${TOPIC}/stream?from=earliest`,
      false,
    );
    cleanups.push(() => void refReader.req.destroy());
    const refSampler = new RssSampler(ref.proc.pid!);
    await publishAll(ref.url);
    await refReader.until(TOTAL, 10_000);
    const referenceGrowth = refSampler.stop();
    refReader.req.destroy();
    ref.proc.kill('SIGKILL');
    await ref.exited;

    const dir = tempDir('rill-slow-');
    cleanups.push(() => dir.remove());
    const child = track(
      await spawnServer(['--engine', 'lmdb', '--data-dir', dir.path, '--port', '0'], serverEnv()),
    );
    const pid = child.proc.pid!;
    const serverPort = Number(new URL(child.url).port);
    const streamUrl = `${child.url}/v1/topics/${TOPIC}/stream?from=earliest`;

    const slow = await Reader.open(streamUrl, true);
    cleanups.push(() => void slow.req.destroy());
    const fast = await Reader.open(streamUrl, false);
    cleanups.push(() => void fast.req.destroy());
    const slowPort = slow.req.socket!.localPort!;

    const sampler = new RssSampler(pid);
    try {
      // ---- publish 200k events while one subscriber is paused and one reads ----
      const t0 = Date.now();
      const publishedBytes = await publishAll(child.url);
      const tPublished = Date.now();
      // The reading subscriber is not held back by the paused one.
      await fast.until(TOTAL, 10_000);
      const tFast = Date.now();
      sampler.sample();
      const peakWhilePaused = sampler.peak;

      // Still paused, still connected: the server neither dropped the slow stream nor sent it
      // more than a bounded amount. What it could have sent so far is in the kernel's queues
      // (measured), the paused response's buffer, and the server's own socket buffer, which the
      // hub keeps under the limit (plus at most one tick's frames, one publish batch).
      const ready = (await (
        await fetch(`${child.url}/readyz`, { signal: AbortSignal.timeout(5000) })
      ).json()) as { subscribers: number };
      expect(ready.subscribers).toBe(2);
      expect(slow.ended).toBe(false);
      const queuedInKernel = kernelQueued(slowPort, serverPort);
      const inClient = slow.res.readableLength;
      const frameBytes = fast.bytes / TOTAL;
      const sentBeforeResumeMax =
        queuedInKernel + inClient + SUB_LIMIT + BATCH * frameBytes + slow.bytes;

      // ---- let the slow subscriber read again ----
      slow.res.resume();
      await slow.until(TOTAL, 60_000);
      const tSlow = Date.now();
      sampler.sample();

      // Back on the live path: a new event reaches both subscribers.
      await postBatch(child.url, TOTAL, 1);
      await Promise.all([slow.until(TOTAL + 1, 10_000), fast.until(TOTAL + 1, 10_000)]);
      const growth = sampler.stop();
      const base = sampler.base;
      const report = {
        publishMs: tPublished - t0,
        fastDoneMs: tFast - t0,
        slowCatchUpMs: tSlow - tFast,
        publishedMiB: +(publishedBytes / MiB).toFixed(1),
        streamMiB: +(slow.bytes / MiB).toFixed(1),
        baseMiB: +(base / MiB).toFixed(1),
        growthWhilePausedMiB: +((peakWhilePaused - base) / MiB).toFixed(1),
        growthMiB: +(growth / MiB).toFixed(1),
        referenceGrowthMiB: +(referenceGrowth / MiB).toFixed(1),
        node: process.version,
        queuedInKernelKiB: Math.round(queuedInKernel / 1024),
        sentBeforeResumeMaxMiB: +(sentBeforeResumeMax / MiB).toFixed(1),
      };
      console.log('slow consumer:', JSON.stringify(report));

      // Every event, in order, exactly once (the reader checked seq and data frame by frame).
      expect(slow.error).toBeNull();
      expect(fast.error).toBeNull();
      expect(slow.count).toBe(TOTAL + 1);
      expect(fast.count).toBe(TOTAL + 1);
      expect(slow.bytes).toBe(fast.bytes);

      // Memory: bounded, and far below what holding the slow subscriber's frames would cost (at
      // least their bytes, ~228 MiB, as one-byte strings, before any per-chunk overhead).
      const bufferingCost = slow.bytes;
      expect(bufferingCost).toBeGreaterThan(publishedBytes);
      expect(2 * GROWTH_BOUND).toBeLessThan(bufferingCost);
      expect(growth - referenceGrowth).toBeLessThan(GROWTH_BOUND);

      // The catch-up path: far more than the limit (and than everything the connection could
      // hold while paused) reached the slow subscriber, so most of it was produced after it
      // resumed, and since it was not held in memory it came from the log.
      expect(slow.bytes).toBeGreaterThan(100 * SUB_LIMIT);
      expect(sentBeforeResumeMax).toBeLessThan(slow.bytes / 4);
    } finally {
      sampler.stop();
    }
  }, 120_000);
});
