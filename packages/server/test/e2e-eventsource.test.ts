/**
 * End to end with a real EventSource client (the `eventsource` package, WHATWG semantics) against a
 * child `rill serve --engine lmdb`: the server goes away twice, once gracefully (SIGTERM: the stream
 * gets `event: error` shutting_down, then ends) and once hard (SIGKILL: the socket just dies), and
 * comes back on the same port and data directory. The client reconnects by itself after the
 * server's `retry:` hint, sending the last `id:` it saw as `Last-Event-ID`, and must end with every
 * seq exactly once, in order.
 *
 * The stream URL asks for `from=earliest`: a server that ignored `Last-Event-ID` on reconnect would
 * replay from the start and the duplicates would fail the test; one that lost the cursor's place
 * would leave a gap.
 */
import { EventSource } from 'eventsource';
import { describe, expect, it } from 'vitest';
import { freePort, spawnServer, tempDir, waitFor, useCleanups, publishRange } from '@rill/testkit';

const TOPIC = 'es.resume';
const PER_PHASE = 60;
const BATCH = 10;

interface StreamEvent {
  topic: string;
  seq: number;
  id: string;
  data: { n: number };
}

describe('e2e: EventSource client across server restarts (lmdb)', () => {
  const { cleanups, track } = useCleanups();

  it('reconnects by itself with Last-Event-ID after a graceful and a hard restart: every seq exactly once, in order', async () => {
    const dir = tempDir('rill-es-');
    cleanups.push(() => dir.remove());
    const port = await freePort();
    const args = ['--port', String(port), '--engine', 'lmdb', '--data-dir', dir.path];
    const env = { RILL_SSE__RETRY: '200' };
    let server = track(await spawnServer(args, env));
    const url = server.url;

    const received: StreamEvent[] = [];
    const lastEventIds: string[] = [];
    const notices: string[] = [];
    const otherFrames: string[] = [];
    let opens = 0;
    const es = new EventSource(`${url}/v1/topics/${TOPIC}/stream?from=earliest`);
    cleanups.push(() => es.close());
    es.addEventListener('open', () => opens++);
    es.addEventListener('message', (e) => {
      received.push(JSON.parse(e.data as string) as StreamEvent);
      lastEventIds.push(e.lastEventId);
    });
    // Transport errors are plain events; the server's `event: error` frames carry data.
    es.addEventListener('error', (e) => {
      const data = (e as { data?: unknown }).data;
      if (typeof data === 'string') notices.push((JSON.parse(data) as { code: string }).code);
    });
    es.addEventListener('reset', (e) => otherFrames.push(`reset ${(e as MessageEvent).data}`));

    const lastSeq = (): number => received[received.length - 1]?.seq ?? 0;
    const expected: number[] = [];

    // ---- phase 1: live delivery ----
    await waitFor(() => opens === 1, 10_000);
    expected.push(...(await publishRange(url, TOPIC, 1, PER_PHASE, BATCH)));
    await waitFor(() => lastSeq() === PER_PHASE, 10_000);

    // ---- phase 2: graceful shutdown (SIGTERM), restart, publish after the restart ----
    server.proc.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    await waitFor(() => notices.includes('shutting_down'), 10_000);
    server = track(await spawnServer(args, env));
    expect(server.url).toBe(url);
    expected.push(...(await publishRange(url, TOPIC, PER_PHASE + 1, 2 * PER_PHASE, BATCH)));
    await waitFor(() => lastSeq() === 2 * PER_PHASE, 15_000);
    expect(opens).toBe(2);

    // ---- phase 3: hard kill (SIGKILL), restart, publish after the restart ----
    server.proc.kill('SIGKILL');
    expect(await server.exited).toBe('SIGKILL');
    server = track(await spawnServer(args, env));
    expect(server.url).toBe(url);
    expected.push(...(await publishRange(url, TOPIC, 2 * PER_PHASE + 1, 3 * PER_PHASE, BATCH)));
    await waitFor(() => lastSeq() === 3 * PER_PHASE, 15_000);
    expect(opens).toBe(3);

    const all = Array.from({ length: 3 * PER_PHASE }, (_, i) => i + 1);
    expect(expected).toEqual(all);
    expect(received.map((e) => e.seq)).toEqual(all);
    for (const e of received) {
      expect(e.topic).toBe(TOPIC);
      expect(e.data).toEqual({ n: e.seq });
    }
    // The id the client would send back is the event's own id, in one epoch throughout.
    expect(lastEventIds).toEqual(received.map((e) => e.id));
    expect(new Set(received.map((e) => e.id.split(':')[1])).size).toBe(1);
    expect(notices).toEqual(['shutting_down']);
    expect(otherFrames).toEqual([]);
  });
});
