import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RillConfigInput } from '../src/config.js';
import { openSse, startServer, tempDir, type SseStream } from '@rill/testkit';
import { dropStreams, SHARED_NATS_URL, uniqueNatsPrefix } from '@rill/testkit/nats';
import { dropPrefix, SHARED_REDIS_URL, uniquePrefix } from '@rill/testkit/redis';
import { WsClient, wsUrl } from '@rill/testkit/ws';

/**
 * The resume rule, on every engine and every transport: a cursor only ever advances over events
 * the client has received. Following cursors — long-poll pages of any size and wait, streams cut
 * at any point and resumed from the last id — yields every event exactly once, in order per topic,
 * whatever the interleaving of publishes over several topics.
 */

interface EngineUnderTest {
  config: RillConfigInput;
  cleanup: () => Promise<void>;
}

// Against the shared Redis and NATS with prefixes of their own: fails (never skips) without them.
const ENGINES: Record<string, () => EngineUnderTest> = {
  memory: () => ({ config: { engine: 'memory' }, cleanup: async () => undefined }),
  lmdb: () => {
    const dir = tempDir();
    return { config: { engine: 'lmdb', dataDir: dir.path }, cleanup: async () => dir.remove() };
  },
  redis: () => {
    const prefix = uniquePrefix();
    return {
      config: { engine: 'redis', redis: { url: SHARED_REDIS_URL, prefix } },
      cleanup: () => dropPrefix(SHARED_REDIS_URL, prefix),
    };
  },
  nats: () => {
    const prefix = uniqueNatsPrefix();
    return {
      config: { engine: 'nats', nats: { url: SHARED_NATS_URL, prefix } },
      cleanup: () => dropStreams(SHARED_NATS_URL, prefix),
    };
  },
};

type Step = { kind: 'publish'; topic: number; n: number } | { kind: 'read'; n: number };

interface Scenario {
  k: number;
  pattern: boolean;
  steps: Step[];
  limit: number;
  wait: number;
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  k: fc.integer({ min: 1, max: 3 }),
  pattern: fc.boolean(),
  steps: fc.array(
    fc.oneof(
      fc.record({
        kind: fc.constant('publish' as const),
        topic: fc.nat(2),
        n: fc.integer({ min: 1, max: 40 }),
      }),
      fc.record({ kind: fc.constant('read' as const), n: fc.integer({ min: 1, max: 60 }) }),
    ),
    { minLength: 1, maxLength: 10 },
  ),
  limit: fc.integer({ min: 1, max: 50 }),
  wait: fc.constantFrom(0, 0.05),
});

interface Got {
  topic: string;
  seq: number;
  data: unknown;
}

let runCounter = 0;

/** One scenario's topics, what was published to each, and the checks on what came back. */
class Run {
  readonly base = `rp${++runCounter}x${Math.random().toString(36).slice(2, 7)}`;
  readonly topics: string[];
  readonly published = new Map<string, unknown[]>();
  readonly got: Got[] = [];

  constructor(
    readonly url: string,
    readonly s: Scenario,
  ) {
    this.topics = Array.from({ length: s.k }, (_, i) => `${this.base}.t${i}`);
    for (const t of this.topics) this.published.set(t, []);
  }

  /** `topics=` of the subscription: the names, or one pattern over them. */
  get subscription(): string[] {
    return this.s.pattern ? [`${this.base}.*`] : this.topics;
  }

  get publishedCount(): number {
    let n = 0;
    for (const v of this.published.values()) n += v.length;
    return n;
  }

  async publish(topicIndex: number, n: number): Promise<void> {
    const topic = this.topics[topicIndex % this.topics.length]!;
    const list = this.published.get(topic)!;
    const events = Array.from({ length: n }, (_, i) => ({ data: `${topic}#${list.length + i}` }));
    const res = await fetch(`${this.url}/v1/topics/${topic}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(events),
    });
    expect(res.status).toBe(201);
    list.push(...events.map((e) => e.data));
  }

  /** Every published event exactly once, in order per topic, and nothing else. */
  check(): void {
    for (const t of this.topics) {
      const mine = this.got.filter((g) => g.topic === t);
      expect(
        mine.map((g) => g.seq),
        `seqs of ${t}`,
      ).toEqual(Array.from({ length: mine.length }, (_, i) => i + 1));
      expect(
        mine.map((g) => g.data),
        `data of ${t}`,
      ).toEqual(this.published.get(t));
    }
    expect(this.got.length).toBe(this.publishedCount);
  }
}

/** Long-poll: each read step is one poll; then polls with wait=0 until a page comes back empty. */
async function runPoll(url: string, s: Scenario): Promise<void> {
  const run = new Run(url, s);
  let cursor: string | undefined;
  const poll = async (wait: number): Promise<number> => {
    const q = new URLSearchParams({
      topics: run.subscription.join(','),
      limit: String(s.limit),
      wait: String(wait),
    });
    if (cursor === undefined) q.set('from', 'earliest');
    else q.set('cursor', cursor);
    const res = await fetch(`${url}/v1/events?${q.toString()}`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { events: Got[]; cursor: string; resets: unknown[] };
    expect(body.resets).toEqual([]);
    run.got.push(...body.events.map((e) => ({ topic: e.topic, seq: e.seq, data: e.data })));
    cursor = body.cursor;
    return body.events.length;
  };
  for (const step of s.steps) {
    if (step.kind === 'publish') await run.publish(step.topic, step.n);
    else await poll(s.wait);
  }
  for (let i = 0; i < 1000; i++) if ((await poll(0)) === 0) break;
  run.check();
}

/**
 * Streams: each read step opens a stream (from the last id received, or `earliest`), reads up to
 * `n` of the events still owed, and cuts the connection. At the end one event more per topic, and
 * a last stream read until every topic's last event arrived: anything repeated or skipped shows.
 */
async function runStream(
  url: string,
  s: Scenario,
  open: (run: Run, last: string | undefined) => Promise<StreamReader>,
  tidy?: (run: Run) => void,
): Promise<void> {
  const run = new Run(url, s);
  let last: string | undefined;
  for (const step of s.steps) {
    if (step.kind === 'publish') {
      await run.publish(step.topic, step.n);
      continue;
    }
    const reader = await open(run, last);
    const want = Math.min(run.got.length + step.n, run.publishedCount);
    await reader.until(() => run.got.length >= want);
    last = reader.stop() ?? last;
  }
  for (let i = 0; i < run.topics.length; i++) await run.publish(i, 1);
  const reader = await open(run, last);
  await reader.until(() =>
    run.topics.every((t) =>
      run.got.some((g) => g.topic === t && g.seq === run.published.get(t)!.length),
    ),
  );
  reader.stop();
  tidy?.(run);
  run.check();
}

interface StreamReader {
  until: (pred: () => boolean) => Promise<void>;
  /** Cuts the connection; returns the last cursor received (an event's or a notice's id). */
  stop: () => string | undefined;
}

async function openSseReader(run: Run, last: string | undefined): Promise<StreamReader> {
  const q = new URLSearchParams({ topics: run.subscription.join(',') });
  if (last === undefined) q.set('from', 'earliest');
  const stream: SseStream = await openSse(
    `${run.url}/v1/stream?${q.toString()}`,
    last === undefined ? {} : { 'last-event-id': last },
  );
  expect(stream.status).toBe(200);
  let seen = 0;
  let lastId: string | undefined;
  const take = (): void => {
    for (; seen < stream.frames.length; seen++) {
      const f = stream.frames[seen]!;
      expect(f.event, 'no reset or error notice').toBeUndefined();
      const ev = JSON.parse(f.data!) as Got;
      run.got.push({ topic: ev.topic, seq: ev.seq, data: ev.data });
      if (f.id !== undefined) lastId = f.id;
    }
  };
  return {
    until: async (pred) => {
      await stream.until(() => {
        take();
        return pred();
      });
    },
    stop: () => {
      take();
      stream.close();
      return lastId;
    },
  };
}

async function openWsReader(run: Run, last: string | undefined): Promise<StreamReader> {
  const c = await WsClient.open(wsUrl(run.url));
  const reply = await c.request({
    op: 'subscribe',
    topics: run.subscription,
    ...(last === undefined ? { from: 'earliest' } : { cursor: last }),
  });
  expect(reply.op).toBe('subscribed');
  const sub = reply.sub!;
  let seen = 0;
  const take = (): void => {
    const evs = c.events(sub);
    for (; seen < evs.length; seen++) {
      const ev = evs[seen]!;
      run.got.push({ topic: ev.topic, seq: ev.seq, data: ev.data });
    }
  };
  return {
    until: async (pred) => {
      await c.until(() => {
        take();
        return pred();
      });
    },
    stop: () => {
      take();
      expect(c.messages.filter((m) => m.op === 'reset' || m.op === 'error')).toEqual([]);
      const cursor = c.resumeCursor(sub);
      c.terminate();
      return cursor;
    },
  };
}

// Few runs per engine and transport keep the file under a minute; each run is a fresh set of
// topics, so runs never see each other's events.
const RUNS = Number(process.env.RILL_PROPERTY_RUNS ?? 12);

describe.each(Object.keys(ENGINES))('resume on the %s engine', (name) => {
  let url = '';
  let close: () => Promise<void> = async () => undefined;
  let eut: EngineUnderTest;

  beforeAll(async () => {
    eut = ENGINES[name]!();
    const s = await startServer(eut.config);
    url = s.url;
    close = s.close;
  });

  afterAll(async () => {
    await close();
    await eut.cleanup();
  });

  it('long-poll pages a multi-topic backlog out whole: 5 orders, then 1,000 numbers', async () => {
    const run = new Run(url, { k: 2, pattern: false, steps: [], limit: 100, wait: 0 });
    await run.publish(0, 5);
    await run.publish(1, 1000);
    // Age the backlog past the one-second watermark margin, as any real backlog is: a cursor
    // that wrongly covered `orders` by time would then skip them.
    await new Promise((r) => setTimeout(r, 1100));
    let cursor: string | undefined;
    for (let i = 0; i < 40 && run.got.length < 1005; i++) {
      const q = cursor === undefined ? 'from=earliest' : `cursor=${encodeURIComponent(cursor)}`;
      const res = await fetch(`${url}/v1/events?topics=${run.topics[1]},${run.topics[0]}&${q}`);
      const body = (await res.json()) as { events: Got[]; cursor: string };
      run.got.push(...body.events);
      cursor = body.cursor;
    }
    run.check();
  });

  it('long-poll, the first page with the default wait=0 holds the backlog', async () => {
    const run = new Run(url, { k: 1, pattern: false, steps: [], limit: 100, wait: 0 });
    await run.publish(0, 3);
    const res = await fetch(`${url}/v1/events?topics=${run.topics[0]}&from=earliest`);
    const body = (await res.json()) as { events: Got[] };
    run.got.push(...body.events);
    run.check();
  });

  it('long-poll: any interleaving, page size and wait yields every event once, in order', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, (s) => runPoll(url, s)),
      { numRuns: RUNS },
    );
  });

  it('SSE resume from the last id yields every event once, in order', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, (s) => runStream(url, s, openSseReader)),
      { numRuns: RUNS },
    );
  });

  it('WebSocket resume from the last cursor yields every event once, in order', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, (s) => runStream(url, s, openWsReader)),
      { numRuns: RUNS },
    );
  });
});

describe('resume when a cursor lists fewer topics than the subscription has', () => {
  let url = '';
  let close: () => Promise<void> = async () => undefined;
  beforeAll(async () => {
    const s = await startServer({ limits: { maxCursorTopics: 1 } });
    url = s.url;
    close = s.close;
  });
  afterAll(() => close());

  // Topics beyond the cursor's list resume by time: at least once, never a loss. Exactly-once
  // then holds per (topic, seq) after dropping repeats, as the SDK does.
  const dedupe = (run: Run): void => {
    const seen = new Set<string>();
    const kept = run.got.filter((g) => {
      const key = `${g.topic}:${g.seq}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    run.got.splice(0, run.got.length, ...kept);
  };

  it('SSE loses nothing', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, (s) => runStream(url, s, openSseReader, dedupe)),
      { numRuns: RUNS },
    );
  });

  // A long-poll cursor goes out once per page, not with every event: it lists every topic that
  // fits in a cursor the next request may carry, so paging stays exact (resuming topics by time
  // would hand their last events back on every page, and a poll loop would never see an end).
  it('long-poll stays exact', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, (s) => runPoll(url, s)),
      { numRuns: RUNS },
    );
  });
});

describe.each([
  ['redis', { engine: 'redis', redis: { url: 'redis://127.0.0.1:1' } }],
  ['nats', { engine: 'nats', nats: { url: 'nats://127.0.0.1:1' } }],
] as const)('long-poll with the %s engine unreachable', (_name, config) => {
  let url = '';
  let close: () => Promise<void> = async () => undefined;
  beforeAll(async () => {
    const s = await startServer(config);
    url = s.url;
    close = s.close;
  });
  afterAll(() => close());

  it.each(['topics=a,b&from=earliest', 'topics=a&wait=0.2', 'topics=a.*', 'topics=a'])(
    '%s answers 503 engine_unavailable with Retry-After, never an empty page',
    async (q) => {
      const res = await fetch(`${url}/v1/events?${q}`);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const body = (await res.json()) as { error: { code: string } };
      expect(body.error.code).toBe('engine_unavailable');
    },
  );
});
