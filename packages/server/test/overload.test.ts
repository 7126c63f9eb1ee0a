/**
 * Load shedding on a real `rill serve`: its event loop is kept busy by real requests (history
 * pages of 1,000 events of 1 KB each, twelve at a time, which are never refused), with a low
 * utilisation threshold. While overloaded, new streams, long-polls, WebSocket upgrades, HTTP
 * publishes and WebSocket publish/subscribe ops get `503 overloaded` with a Retry-After; open
 * streams keep every event; health answers; readiness says 503. Once the load stops it accepts
 * again, and the SDK's publishes that were refused meanwhile are stored exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type PublishRetry } from '@rill/client';
import { openSse, spawnServer, waitFor, type ChildServer, type SseStream } from '@rill/testkit';
import { rawRequest, WsClient, wsUrl } from '@rill/testkit/ws';

let srv: ChildServer;
let url: string;
const BULK = 'bulk';
const LIVE = 'live';

beforeAll(async () => {
  srv = await spawnServer(['--port', '0', '--engine', 'memory'], {
    // Delay off: the utilisation of a loop serving nothing but this test is near 0, with the
    // load near 1; a delay threshold low enough to see this load would also see a busy machine.
    RILL_OVERLOAD__MAX_EVENT_LOOP_DELAY: '0',
    RILL_OVERLOAD__MAX_EVENT_LOOP_UTILIZATION: '0.5',
    RILL_OVERLOAD__SAMPLE_INTERVAL: '200ms',
  });
  url = srv.url;
  // What the load reads: two pages of 1,000 events of about 1 KB.
  const client = createClient({ url });
  const pad = 'x'.repeat(1000);
  for (let b = 0; b < 2; b++) {
    await client.publishBatch(
      BULK,
      Array.from({ length: 1000 }, (_, i) => ({ data: { i, pad } })),
    );
  }
}, 60_000);

const loads: Array<() => void> = [];

afterAll(async () => {
  for (const stop of loads) stop();
  srv.proc.kill('SIGKILL');
  await srv.exited;
});

/** Twelve readers of full history pages, each starting the next as the last one ends. */
function startLoad(): { stop: () => Promise<number> } {
  let stopped = false;
  let pages = 0;
  const workers = Array.from({ length: 12 }, async (_, w) => {
    while (!stopped) {
      const after = w % 2 === 0 ? 0 : 1000;
      const r = await fetch(`${url}/v1/topics/${BULK}/events?after=${after}&limit=1000`);
      await r.arrayBuffer();
      // Reads are never refused.
      if (r.status !== 200) throw new Error(`history read answered ${r.status}`);
      pages++;
    }
  });
  // A failure is reported by stop(); a test that failed first stops the load in afterAll.
  const done = Promise.all(workers);
  done.catch(() => (stopped = true));
  loads.push(() => (stopped = true));
  return {
    stop: async () => {
      stopped = true;
      await done;
      return pages;
    },
  };
}

interface Answer {
  status: number;
  retryAfter: string | null;
  body: { error?: { code: string; retryAfter?: number; retryable?: boolean } };
}

async function answer(res: Response): Promise<Answer> {
  // A stream that opened (a sample under the threshold) would never end: not read, closed.
  if (/event-stream|ndjson/.test(res.headers.get('content-type') ?? '')) {
    await res.body?.cancel();
    return { status: res.status, retryAfter: null, body: {} };
  }
  const text = await res.text();
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    body: (text.startsWith('{') ? JSON.parse(text) : {}) as Answer['body'],
  };
}

/**
 * Repeats `attempt` until it is refused as overloaded (a sample may fall under the threshold
 * between two checks, for 200 ms) and returns that refusal; fails if it never is.
 */
async function refusal(attempt: () => Promise<Answer>): Promise<Answer> {
  const end = Date.now() + 20_000;
  for (;;) {
    const a = await attempt();
    if (a.status === 503) return a;
    expect(a.status, JSON.stringify(a.body)).toBeLessThan(300);
    if (Date.now() > end) throw new Error(`never refused; last ${a.status}`);
  }
}

function expectOverloaded(a: Answer): void {
  expect(a.status).toBe(503);
  expect(a.body.error?.code).toBe('overloaded');
  expect(a.body.error?.retryable).toBe(true);
  const ra = Number(a.retryAfter);
  expect(ra).toBeGreaterThanOrEqual(1);
  expect(ra).toBeLessThanOrEqual(5);
  expect(a.body.error?.retryAfter).toBe(ra);
}

const ready = async (): Promise<number> => (await fetch(`${url}/readyz`)).status;

describe('load shedding', () => {
  it('refuses new work with 503 overloaded while the loop is busy, keeps open streams whole, and recovers', async () => {
    // Set up while it accepts: storing the pages above, or a busy machine, may have overloaded
    // it for a sample.
    const accepted = async <T>(open: () => Promise<T>): Promise<T> => {
      for (;;) {
        await waitFor(async () => (await ready()) === 200, 30_000);
        try {
          return await open();
        } catch (err) {
          if (!/503|overloaded/.test(String(err))) throw err;
        }
      }
    };
    const sse: SseStream = await accepted(async () => {
      const s = await openSse(`${url}/v1/topics/${LIVE}/stream`);
      if (s.status !== 200) throw new Error(`stream answered ${s.status}`);
      return s;
    });
    const ws = await accepted(() => WsClient.open(wsUrl(url)));
    const sub = await accepted(async () => {
      const m = await ws.request({ op: 'subscribe', topics: [LIVE] });
      if (m.op !== 'subscribed') throw new Error(`subscribe answered ${JSON.stringify(m)}`);
      return m;
    });
    // Retries enough to outlast the overload, however long the checks below take.
    const client = createClient({ url, publishRetries: 100 });
    for (let n = 1; n <= 5; n++) await client.publish(LIVE, { n });
    await sse.until(() => sse.events().length === 5);

    const started = Date.now();
    const load = startLoad();
    await waitFor(async () => (await ready()) === 503, 30_000);
    const enteredMs = Date.now() - started;
    const readyz = await answer(await fetch(`${url}/readyz`));
    // Readiness may have flipped back for a sample; when it says 503, it says why.
    if (readyz.status === 503) expect(readyz.body.error?.code).toBe('overloaded');

    // The SDK's publishes meanwhile: refused, retried after the Retry-After, stored once.
    const retries: PublishRetry[] = [];
    const during = (async () => {
      for (let n = 6; n <= 8; n++) {
        await client.publish(LIVE, { n }, { onRetry: (r) => retries.push(r) });
      }
    })();

    expectOverloaded(await refusal(async () => answer(await fetch(`${url}/v1/stream?topics=x`))));
    expectOverloaded(
      await refusal(async () => answer(await fetch(`${url}/v1/topics/x/stream?format=ndjson`))),
    );
    expectOverloaded(
      await refusal(async () => answer(await fetch(`${url}/v1/events?topics=x&wait=0`))),
    );
    expectOverloaded(
      await refusal(async () =>
        answer(
          await fetch(`${url}/v1/topics/x/events`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: '{"data":1}',
          }),
        ),
      ),
    );
    // A WebSocket upgrade is answered with HTTP 503 at the handshake.
    expectOverloaded(
      await refusal(async () => {
        const r = await rawRequest(url);
        r.socket.destroy();
        if (r.status === 101) return { status: 101, retryAfter: null, body: {} };
        return {
          status: r.status,
          retryAfter: r.headers['retry-after'] ?? null,
          body: JSON.parse(r.body) as Answer['body'],
        };
      }),
    );
    // Ops on an open WebSocket: an error reply each, and the socket stays.
    const op = async (msg: Record<string, unknown>): Promise<Answer> => {
      const m = await ws.request(msg);
      if (m.op !== 'error') return { status: 200, retryAfter: null, body: {} };
      const error = (m as unknown as { error: NonNullable<Answer['body']['error']> }).error;
      return { status: 503, retryAfter: String(error.retryAfter), body: { error } };
    };
    expectOverloaded(await refusal(() => op({ op: 'publish', topic: 'x', data: 1 })));
    expectOverloaded(await refusal(() => op({ op: 'subscribe', topics: ['x'] })));
    expect((await ws.request({ op: 'ping' })).op).toBe('pong');
    expect(ws.closeInfo).toBeNull();
    // Health answers throughout.
    expect((await fetch(`${url}/healthz`)).status).toBe(200);

    const pages = await load.stop();
    const stoppedAt = Date.now();
    await waitFor(async () => (await ready()) === 200, 30_000);
    const recoveredMs = Date.now() - stoppedAt;
    await during;
    // The refused publishes were retried no sooner than the server asked.
    const refused = retries.filter((r) => r.error.code === 'overloaded');
    for (const r of refused) {
      expect(r.error.retryAfter).toBeGreaterThanOrEqual(1);
      expect(r.delay).toBeGreaterThanOrEqual(r.error.retryAfter! * 1000);
    }

    // Accepting again: a new stream, a publish.
    const late = await openSse(`${url}/v1/topics/${LIVE}/stream?from=earliest`);
    expect(late.status).toBe(200);
    expect((await client.publish(LIVE, { n: 9 })).seq).toBe(9);
    // Every event, once, in order, on the streams that were open all along and on the new one.
    const want = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    await sse.until(() => sse.events().length >= 9);
    await ws.until(() => ws.events(sub.sub).length >= 9);
    await late.until(() => late.events().length >= 9);
    expect(sse.events().map((e) => (e.data as { n: number }).n)).toEqual(want);
    expect(sse.events().map((e) => e.seq)).toEqual(want);
    expect(ws.events(sub.sub).map((e) => e.seq)).toEqual(want);
    expect(late.events().map((e) => e.seq)).toEqual(want);

    const log = srv
      .stdout()
      .split('\n')
      .filter((l) => l.includes('overload'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(log.some((l) => String(l.msg).startsWith('overloaded: refusing'))).toBe(true);
    console.log(
      JSON.stringify({
        enteredMs,
        recoveredMs,
        pagesRead: pages,
        sdkPublishRetries: refused.length,
        log: log.map((l) => ({
          msg: String(l.msg).slice(0, 40),
          elu: l.eventLoopUtilization,
          delayMs: l.eventLoopDelayMs,
          refused: l.refused,
          overloadedMs: l.overloadedMs,
          episodes: l.episodes,
        })),
      }),
    );
    sse.close();
    late.close();
    ws.close();
  }, 120_000);
});
