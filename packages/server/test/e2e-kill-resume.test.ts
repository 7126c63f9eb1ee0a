/**
 * End to end, over real sockets against a child `rill serve --engine lmdb`: the server process is
 * SIGKILLed while events are being published and streamed, then restarted on the same port and data
 * directory. A subscriber that resumes with the `Last-Event-ID` of the last event it saw (while
 * publishing goes on, the log already well past it) must end up with every acknowledged event
 * exactly once, in seq order, with no gap, and the topic's epoch must survive the restart
 * (docs/architecture.md § Guarantees, lmdb durability).
 *
 * Publishes carry idempotency keys, and a batch whose request failed around the kill is sent again
 * (same keys) once the server is back: a batch that was committed but whose answer died with the
 * process is then acknowledged with its original seqs instead of being appended twice, so in the
 * end every published event is acknowledged exactly once and the seqs run 1..TOTAL.
 */
import { describe, expect, it } from 'vitest';
import {
  freePort,
  openSse,
  spawnServer,
  tempDir,
  waitFor,
  type SseFrame,
  type SseStream,
  useCleanups,
} from '@rill/testkit';

const TOPIC = 'kill.resume';
const TOTAL = 2000;
const BATCH = 10;
/** Concurrent publish requests: several are in flight when the server dies. */
const WORKERS = 4;
/** Kill once this many events are acknowledged and the subscriber has seen this many. */
const KILL_AFTER_ACKS = 800;
const KILL_AFTER_SEEN = 200;
/** After the restart, resume once this many more events are acknowledged. */
const RESUME_AFTER_ACKS = 300;
/** Attempts per batch before the test gives up (one failure is expected around the kill). */
const MAX_ATTEMPTS = 5;

interface Published {
  key: string;
  data: { n: number; tag: string };
}

interface Ack {
  seq: number;
  id: string;
  duplicate: boolean;
}

interface PublishReply {
  epoch: string;
  events: Ack[];
}

function epochOf(id: string): string {
  const parts = id.split(':');
  expect(parts).toHaveLength(3);
  expect(parts[0]).toBe(TOPIC);
  return parts[1]!;
}

function eventFrames(frames: SseFrame[]): Array<{ id: string; seq: number; data: unknown }> {
  return frames
    .filter((f) => f.data !== undefined && f.event === undefined)
    .map((f) => {
      const ev = JSON.parse(f.data!) as { topic: string; seq: number; id: string; data: unknown };
      expect(ev.topic).toBe(TOPIC);
      expect(f.id).toBe(ev.id);
      return { id: ev.id, seq: ev.seq, data: ev.data };
    });
}

describe('e2e: SIGKILL and restart (lmdb)', () => {
  const { cleanups, track } = useCleanups();

  it('resume with Last-Event-ID after the server process is SIGKILLed and restarted (lmdb): every event exactly once, in order', async () => {
    const dir = tempDir('rill-kill-resume-');
    cleanups.push(() => dir.remove());
    const port = await freePort();
    const args = ['--port', String(port), '--engine', 'lmdb', '--data-dir', dir.path];
    const env = { RILL_SSE__RETRY: '200' };

    let server = track(await spawnServer(args, env));
    const url = server.url;
    const streamUrl = `${url}/v1/topics/${TOPIC}/stream?from=earliest`;

    const streams: SseStream[] = [];
    cleanups.push(() => {
      for (const s of streams) s.close();
    });
    const first = await openSse(streamUrl);
    streams.push(first);
    expect(first.status).toBe(200);

    // ---- the publisher: WORKERS concurrent requests, each batch retried (same keys) on failure ----
    const batches: Published[][] = [];
    for (let b = 0; b < TOTAL / BATCH; b++) {
      batches.push(
        Array.from({ length: BATCH }, (_, i) => {
          const n = b * BATCH + i;
          return { key: `k-${n}`, data: { n, tag: `event ${n}` } };
        }),
      );
    }
    /** seq → the event acknowledged with it. */
    const acked = new Map<number, Published>();
    /** key → the seq it was acknowledged with. */
    const seqOfKey = new Map<string, number>();
    const publishEpochs = new Set<string>();
    let ackedCount = 0;
    let failures = 0;
    let duplicates = 0;
    /** Resolved while the server is up; replaced by a pending promise while it is down. */
    let serverUp: Promise<void> = Promise.resolve();
    let markUp: () => void = () => undefined;

    const send = async (batch: Published[]): Promise<boolean> => {
      let reply: PublishReply;
      try {
        const res = await fetch(`${url}/v1/topics/${TOPIC}/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(batch.map((e) => ({ key: e.key, data: e.data }))),
          signal: AbortSignal.timeout(10_000),
        });
        if (res.status !== 201) {
          await res.body?.cancel();
          return false;
        }
        reply = (await res.json()) as PublishReply;
      } catch {
        return false;
      }
      expect(reply.events).toHaveLength(batch.length);
      publishEpochs.add(reply.epoch);
      reply.events.forEach((ack, i) => {
        const ev = batch[i]!;
        expect(epochOf(ack.id)).toBe(reply.epoch);
        if (ack.duplicate) duplicates++;
        const prior = seqOfKey.get(ev.key);
        if (prior !== undefined) {
          // Acknowledged before (a retry of a batch that was in fact stored): same seq.
          expect(ack.seq).toBe(prior);
          return;
        }
        // A seq never stands for two different events.
        expect(acked.has(ack.seq), `seq ${ack.seq} acknowledged twice`).toBe(false);
        acked.set(ack.seq, ev);
        seqOfKey.set(ev.key, ack.seq);
        ackedCount++;
      });
      return true;
    };

    let nextBatch = 0;
    const worker = async (): Promise<void> => {
      while (nextBatch < batches.length) {
        const batch = batches[nextBatch++]!;
        for (let attempt = 1; ; attempt++) {
          if (await send(batch)) break;
          failures++;
          if (attempt >= MAX_ATTEMPTS) {
            throw new Error(`publishing batch ${batch[0]!.key} failed ${attempt} times`);
          }
          // Down (or going down): try again once the server is back.
          await serverUp;
        }
      }
    };
    const publishing = Promise.all(Array.from({ length: WORKERS }, () => worker()));
    // Surface a publisher failure at once instead of as a timeout somewhere else.
    let publishError: unknown = null;
    publishing.catch((err: unknown) => (publishError = err));

    // ---- SIGKILL mid-way: acknowledged events behind, publishes in flight ----
    await waitFor(
      () => {
        if (publishError) throw publishError as Error;
        return ackedCount >= KILL_AFTER_ACKS && eventFrames(first.frames).length >= KILL_AFTER_SEEN;
      },
      20_000,
      2,
    );
    serverUp = new Promise<void>((r) => (markUp = r));
    expect(server.proc.kill('SIGKILL')).toBe(true);
    expect(await server.exited).toBe('SIGKILL');
    const ackedAtKill = ackedCount;
    expect(ackedAtKill).toBeLessThan(TOTAL);
    // The stream died with the process; no frame arrives after that.
    await Promise.race([
      first.ended,
      new Promise((_, fail) =>
        setTimeout(() => fail(new Error('stream did not end after SIGKILL')), 10_000),
      ),
    ]);
    const before = eventFrames(first.frames);
    expect(before.length).toBeGreaterThanOrEqual(KILL_AFTER_SEEN);
    expect(first.frames.filter((f) => f.event !== undefined)).toEqual([]);

    // ---- restart on the same port and data directory, resume with Last-Event-ID ----
    server = track(await spawnServer(args, env));
    expect(server.url).toBe(url);
    markUp();
    // Resume only once the log has moved well past the subscriber: it catches up from the log
    // while publishes keep landing, then switches to the live feed.
    await waitFor(
      () => {
        if (publishError) throw publishError as Error;
        return ackedCount >= ackedAtKill + RESUME_AFTER_ACKS;
      },
      20_000,
      2,
    );
    const lastId = before[before.length - 1]!.id;
    // The same URL a browser's EventSource would reconnect to: the cursor wins over from=earliest.
    const second = await openSse(streamUrl, { 'last-event-id': lastId });
    streams.push(second);
    expect(second.status).toBe(200);

    await publishing;
    expect(failures).toBeGreaterThanOrEqual(1);
    expect(ackedCount).toBe(TOTAL);
    expect(seqOfKey.size).toBe(TOTAL);

    // A sentinel after everything: once it arrives, every earlier event has been streamed.
    const sentinel = await fetch(`${url}/v1/topics/${TOPIC}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ data: 'sentinel' }),
      signal: AbortSignal.timeout(10_000),
    });
    expect(sentinel.status).toBe(201);
    const sentinelSeq = ((await sentinel.json()) as PublishReply).events[0]!.seq;
    expect(sentinelSeq).toBe(TOTAL + 1);
    await second.until(
      (frames) => frames.some((f) => f.id !== undefined && f.id.endsWith(`:${sentinelSeq}`)),
      30_000,
    );
    const after = eventFrames(second.frames);
    expect(second.frames.filter((f) => f.event !== undefined)).toEqual([]);

    // ---- the union of both connections is exactly the acknowledged events, once each, in order ----
    const received = [...before, ...after].filter((e) => e.seq !== sentinelSeq);
    const seqs = received.map((e) => e.seq);
    expect(seqs).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1));
    expect([...acked.keys()].sort((a, b) => a - b)).toEqual(seqs);
    for (const e of received) expect(e.data).toEqual(acked.get(e.seq)!.data);
    // The second connection starts right after the Last-Event-ID it was given.
    expect(after[0]!.seq).toBe(before[before.length - 1]!.seq + 1);

    // ---- the epoch survived the restart ----
    const epochs = new Set([...before, ...after].map((e) => epochOf(e.id)));
    expect(epochs.size).toBe(1);
    expect(publishEpochs).toEqual(epochs);

    // For the record (visible with --reporter=verbose): how the kill landed.
    console.info(
      `kill-resume: killed after ${ackedAtKill} acks with ${before.length} events streamed; ` +
        `${failures} failed publish attempts, ${duplicates} retried events were already stored`,
    );
  });
});
