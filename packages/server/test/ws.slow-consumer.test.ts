/**
 * A WebSocket subscriber that stops reading while a large volume is published: the server's
 * memory stays bounded (the subscription leaves the live path once the socket's backlog passes
 * `limits.maxSubscriberBufferBytes` and later replays from the log), a fast subscriber on another
 * socket is not held back, and the slow one, once it reads again, gets every event in order.
 */
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { RssSampler, spawnServer, tempDir, useCleanups } from '@rill/testkit';
import { wsUrl } from '@rill/testkit/ws';

const TOTAL = 200_000;
const BATCH = 1000;
/** 1 KiB per event: the stream (~230 MB) dwarfs V8's garbage-collection slack. */
const PAYLOAD = 'p'.repeat(1024);
const TOPIC = 'slow.ws';
const MiB = 2 ** 20;
/**
 * Bound on what the server holds for the stalled client: its RssAnon growth from before the first
 * publish to the peak (while the slow client is stalled and while it catches up), minus the growth
 * of a reference server in the same run that takes the same publishes with only the fast
 * subscriber (the runtime's own slack from ingesting 200 MiB of JSON and sending 200,000
 * messages, which depends on the Node version: 95-101 MiB on Node 20, up to 175 MiB on Node 24).
 * Measured on 2 shared cores (lmdb): the difference is within a few MiB of zero either way. With
 * the sink's backlog hidden from the hub (bufferedBytes returning 0) or the limit lifted
 * (RILL_LIMITS__MAX_SUBSCRIBER_BUFFER_BYTES=4GiB), the growth was 314-324 MiB while stalled and
 * 560-566 MiB at the peak, over 200 MiB above the reference.
 */
const MAX_GROWTH = 60 * MiB;
/** Bound on the growth over the reference including the slow client's catch-up. */
const MAX_CATCH_UP_GROWTH = 110 * MiB;

/** The server both runs start. */
function serverEnv(): Record<string, string> {
  return {
    RILL_RETENTION__MAX_EVENTS: String(TOTAL * 2),
    // V8's young generation is sized by the runtime (Node 24 lets it grow by ~100 MiB under this
    // allocation rate, all of it garbage); held at Node 22's size so both runs vary less.
    NODE_OPTIONS: '--max-semi-space-size=16',
    // The paused client cannot answer pings; this test is about backpressure, not liveness.
    RILL_WS__PING_INTERVAL: '10m',
    RILL_WS__PING_TIMEOUT: '10m',
  };
}

/** Publishes the test's 200,000 events in batches; resolves with the bytes sent. */
async function publishAll(url: string): Promise<number> {
  let published = 0;
  for (let b = 0; b < TOTAL / BATCH; b++) {
    const body = JSON.stringify(
      Array.from({ length: BATCH }, (_, k) => ({ data: { i: b * BATCH + k, p: PAYLOAD } })),
    );
    published += body.length;
    const res = await fetch(`${url}/v1/topics/${TOPIC}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(201);
    await res.arrayBuffer();
  }
  return published;
}

/** Counts events without keeping them (the test process must not be the one out of memory). */
class Counter {
  count = 0;
  bytes = 0;
  error: string | null = null;
  closed: number | null = null;
  private waiters = new Set<() => void>();

  constructor(readonly ws: WebSocket) {
    ws.on('message', (buf: Buffer) => {
      const m = JSON.parse(buf.toString()) as {
        op: string;
        event?: { seq: number; data: { i: number; p: string } };
      };
      if (m.op === 'event') {
        this.bytes += buf.length;
        const ev = m.event!;
        if (this.error === null) {
          if (ev.seq !== this.count + 1)
            this.error = `expected seq ${this.count + 1}, got ${ev.seq}`;
          else if (ev.data.i !== ev.seq - 1 || ev.data.p !== PAYLOAD)
            this.error = `bad data at ${ev.seq}`;
        }
        this.count++;
      } else if (m.op !== 'subscribed') {
        this.error ??= `unexpected ${buf.toString().slice(0, 200)}`;
      }
      this.wake();
    });
    ws.on('close', (code) => {
      this.closed = code;
      this.wake();
    });
  }

  static async open(url: string): Promise<Counter> {
    const ws = new WebSocket(wsUrl(url), 'rill.v1');
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const c = new Counter(ws);
    const subscribed = new Promise<void>((resolve) =>
      ws.once('message', (b: Buffer) => {
        expect(JSON.parse(b.toString())).toMatchObject({ op: 'subscribed', id: 1 });
        resolve();
      }),
    );
    ws.send(JSON.stringify({ op: 'subscribe', id: 1, topics: [TOPIC] }));
    await subscribed;
    return c;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  until(n: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.count < n && this.error === null && this.closed === null) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        if (this.error !== null) reject(new Error(this.error));
        else if (this.count < n) reject(new Error(`closed (${this.closed}) at ${this.count}`));
        else resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out with ${this.count}/${n} events`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }
}

const { cleanups, track } = useCleanups();

describe('WebSocket slow consumer', () => {
  it('keeps server memory bounded and delivers everything in order once the client reads', async () => {
    // ---- the reference: the same publishes with only a subscriber that keeps up ----
    const refDir = tempDir();
    cleanups.push(() => refDir.remove());
    const ref = track(
      await spawnServer(
        ['--engine', 'lmdb', '--data-dir', refDir.path, '--port', '0'],
        serverEnv(),
      ),
    );
    const refReader = await Counter.open(ref.url);
    cleanups.push(() => refReader.ws.terminate());
    const refSampler = new RssSampler(ref.proc.pid!);
    await publishAll(ref.url);
    await refReader.until(TOTAL, 60_000);
    const referenceGrowth = refSampler.stop();
    refReader.ws.terminate();
    ref.proc.kill('SIGKILL');
    await ref.exited;

    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const child = track(
      await spawnServer(['--engine', 'lmdb', '--data-dir', dir.path, '--port', '0'], serverEnv()),
    );
    const pid = child.proc.pid!;
    const slow = await Counter.open(child.url);
    const fast = await Counter.open(child.url);
    cleanups.push(
      () => slow.ws.terminate(),
      () => fast.ws.terminate(),
    );
    // Stop reading: the kernel buffers fill, then the server's socket backlog.
    (slow.ws as unknown as { _socket: Socket })._socket.pause();

    const sampler = new RssSampler(pid);
    try {
      const published = await publishAll(child.url);
      // Another socket's subscriber is not held back by the slow one.
      await fast.until(TOTAL, 60_000);
      const slowBefore = slow.count;
      expect(slowBefore).toBeLessThan(TOTAL / 2);
      sampler.sample();
      const growthWhileStalled = sampler.peak - sampler.base;

      (slow.ws as unknown as { _socket: Socket })._socket.resume();
      await slow.until(TOTAL, 90_000);
      const growth = sampler.stop();
      console.log(
        `ws slow consumer: ${JSON.stringify({
          publishedMiB: +(published / MiB).toFixed(1),
          streamMiB: +(slow.bytes / MiB).toFixed(1),
          slowBefore,
          baseMiB: +(sampler.base / MiB).toFixed(1),
          growthWhileStalledMiB: +(growthWhileStalled / MiB).toFixed(1),
          growthMiB: +(growth / MiB).toFixed(1),
          referenceGrowthMiB: +(referenceGrowth / MiB).toFixed(1),
          node: process.version,
        })}`,
      );
      // Holding the stalled client's stream in memory would cost more than the bound.
      expect(slow.bytes).toBe(fast.bytes);
      expect(slow.bytes).toBeGreaterThan(2 * MAX_CATCH_UP_GROWTH);
      // Nothing held for the stalled client beyond what the runtime keeps anyway.
      expect(growthWhileStalled - referenceGrowth).toBeLessThan(MAX_GROWTH);
      // Its catch-up replays from the log in bounded steps; the garbage that makes is the
      // runtime's to collect (measured 0-12 MiB over the reference on Node 20 and 24, 63 MiB on
      // Node 22, whose reference run keeps less), still far below its stream's 223 MiB.
      expect(growth - referenceGrowth).toBeLessThan(MAX_CATCH_UP_GROWTH);
      expect(slow.closed).toBeNull();
    } finally {
      sampler.stop();
    }
  }, 180_000);
});
