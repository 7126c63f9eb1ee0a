import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { check, Subscriber, type Transport } from './cluster-harness.js';
import {
  freePort,
  openSse,
  spawnServer,
  tempDir,
  waitFor,
  type ChildServer,
  type SseStream,
} from '@rill/testkit';
import { natsBackend, redisBackend, type BrokerBackend } from '@rill/testkit/brokers';
import { metric, parseMetrics, promtoolCheck } from '@rill/testkit/metrics';
import type { ConnectionRow, ConnectionsPage, StatsDocument } from '@rill/client';

/**
 * `rill serve --workers 2`: a supervisor and two worker processes sharing one port. Which worker
 * a connection lands on is node:cluster's round-robin; the tests read it back (the `rill-worker`
 * header of a publish, the `worker` of each "stream opened" log line) rather than assume it.
 */

const TRANSPORTS: Transport[] = ['sse', 'ws', 'ndjson'];
/** "stream opened" lines (debug) say which worker each subscriber's stream is on. */
const DEBUG_STREAMS = { RILL_LOG__LEVELS__HTTP: 'debug', RILL_LOG__LEVELS__WS: 'debug' };

/** An engine of the nodes: lmdb in a temp directory, or a shared broker under its own prefix. */
type Backend = Omit<BrokerBackend, 'engine'> & { engine: 'lmdb' | BrokerBackend['engine'] };

function lmdbBackend(): Backend {
  const dir = tempDir('rill-workers-');
  return {
    engine: 'lmdb',
    args: ['--data-dir', dir.path],
    env: {},
    cleanup: async () => dir.remove(),
  };
}

/** The JSON log lines a server wrote so far. */
function logLines(server: ChildServer): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of server.stdout().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line being written
    }
  }
  return out;
}

/** The pid of each worker, from its latest "worker N listening" line. */
function workerPids(server: ChildServer): Map<number, number> {
  const pids = new Map<number, number>();
  for (const l of logLines(server)) {
    if (typeof l.worker === 'number' && l.msg === `worker ${l.worker} listening`) {
      pids.set(l.worker, l.pid as number);
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * One publish on a connection of its own (so node:cluster hands it to the next worker), events
 * `i` of `items` with keys `e<i>`: the worker that took it and each event's seq.
 */
function publishFresh(
  url: string,
  topic: string,
  items: number[],
): Promise<{ worker: number; events: { i: number; seq: number; duplicate: boolean }[] }> {
  const body = JSON.stringify(items.map((i) => ({ key: `e${i}`, data: { i } })));
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/v1/topics/${topic}/events`,
      {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 15_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          if (res.statusCode !== 201) {
            reject(new Error(`publish: status ${res.statusCode}: ${text}`));
            return;
          }
          const parsed = JSON.parse(text) as { events: { seq: number; duplicate: boolean }[] };
          resolve({
            worker: Number(res.headers['rill-worker']),
            events: parsed.events.map((e, k) => ({
              i: items[k]!,
              seq: e.seq,
              duplicate: e.duplicate,
            })),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('publish timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Subscribers on `topics` opened one by one, each waiting for its "stream opened" line (so the
 * newest line is its own and says its worker), until there are `atLeast` and every topic has
 * subscribers on both workers (bounded).
 */
async function subscribeOnEveryWorker(
  server: ChildServer,
  topics: string[],
  atLeast: number,
  dead: Set<number>,
): Promise<{ subs: Subscriber[]; workerOf: Map<Subscriber, number> }> {
  const subs: Subscriber[] = [];
  const workerOf = new Map<Subscriber, number>();
  const covered = (): boolean =>
    topics.every(
      (t) => new Set(subs.filter((s) => s.topic === t).map((s) => workerOf.get(s))).size === 2,
    );
  while (subs.length < atLeast || !covered()) {
    if (subs.length >= 60) throw new Error('60 subscribers, and a topic has them on one worker');
    const i = subs.length;
    const topic = topics[Math.floor(i / 2) % topics.length]!;
    const s = new Subscriber(i, TRANSPORTS[i % 3]!, topic, [server.url], 0, dead);
    subs.push(s);
    await s.start();
    let opened: Record<string, unknown>[] = [];
    await waitFor(() => {
      opened = logLines(server).filter((l) => l.msg === 'stream opened');
      return opened.length >= subs.length;
    }, 20_000);
    workerOf.set(s, opened[subs.length - 1]!.worker as number);
  }
  return { subs, workerOf };
}

function totalsOf(
  subs: Subscriber[],
  perTopic: number,
  expected: Map<string, Map<number, number>>,
): Record<string, number> {
  const totals = { lost: 0, duplicated: 0, reordered: 0, wrong: 0, resets: 0, errors: 0 };
  for (const s of subs) {
    const c = check(s, perTopic, expected.get(s.topic)!);
    totals.lost += c.lost;
    totals.duplicated += c.duplicated;
    totals.reordered += c.reordered;
    totals.wrong += c.wrong;
    totals.resets += s.resets;
    totals.errors += s.errors.filter((e) => !e.includes('shutting_down')).length;
  }
  return totals;
}

const CLEAN = { lost: 0, duplicated: 0, reordered: 0, wrong: 0, resets: 0, errors: 0 };

const running: ChildServer[] = [];
const subscribers: Subscriber[] = [];
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const s of subscribers.splice(0)) s.close();
  for (const server of running.splice(0)) {
    if (server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill('SIGTERM');
    }
    await server.exited;
    // Workers of a supervisor killed by the test end on their own (its IPC channel closes).
    const pids = [...workerPids(server).values()];
    await waitFor(() => pids.every((p) => !alive(p)), 30_000);
  }
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startWorkers(backend: Backend, port = 0): Promise<ChildServer> {
  const server = await spawnServer(
    ['--engine', backend.engine, '--port', String(port), '--workers', '2', ...backend.args],
    { ...backend.env, ...DEBUG_STREAMS },
  );
  running.push(server);
  // Each worker's own "listening" line may reach the pipe after the supervisor's.
  await waitFor(() => workerPids(server).size === 2, 20_000);
  return server;
}

for (const makeBackend of [
  lmdbBackend,
  (): Backend => redisBackend('rillworkers'),
  (): Backend => natsBackend('rw'),
]) {
  const engine = makeBackend().engine;
  describe(`rill serve --workers 2 --engine ${engine}`, () => {
    it('delivers what one worker takes to the SSE, WebSocket and NDJSON subscribers of every worker, exactly once and in order', async () => {
      const backend = makeBackend();
      cleanups.push(backend.cleanup);
      const server = await startWorkers(backend);
      const topics = ['workers.a', 'workers.b'];
      const { subs } = await subscribeOnEveryWorker(server, topics, 12, new Set());
      subscribers.push(...subs);

      // Batch after batch, each delivered to every subscriber of its topic before the next is
      // published: no later append of the subscriber's own worker can carry it there. Until
      // both workers took several batches of each topic.
      const expected = new Map(topics.map((t) => [t, new Map<number, number>()]));
      const takenBy = new Map(topics.map((t) => [t, [0, 0, 0]]));
      let i = 0;
      for (let round = 0; ; round++) {
        const done = [...takenBy.values()].every((w) => w[1]! >= 3 && w[2]! >= 3);
        if (done && round >= 10) break;
        if (round >= 60) throw new Error('60 rounds, and a worker took too few batches');
        // One topic twice: with strict round-robin, each topic's batches alternate workers.
        for (const topic of [...topics, topics[0]!]) {
          const items = Array.from({ length: 20 }, (_, k) => i + k);
          i += items.length;
          const r = await publishFresh(server.url, topic, items);
          takenBy.get(topic)![r.worker]!++;
          for (const e of r.events) expected.get(topic)!.set(e.seq, e.i);
          const last = r.events[r.events.length - 1]!.seq;
          await waitFor(() => subs.every((s) => s.topic !== topic || s.lastSeq >= last), 20_000);
        }
      }
      for (const s of subs) {
        const mine = expected.get(s.topic)!;
        expect(check(s, mine.size, mine)).toEqual({
          lost: 0,
          duplicated: 0,
          reordered: 0,
          wrong: 0,
        });
        expect([s.resets, s.errors]).toEqual([0, []]);
      }
    }, 120_000);
  });
}

describe('rill serve --workers 2 --engine lmdb: supervision and the shared store', () => {
  it('a worker SIGKILLed mid-stream is restarted; its subscribers resume on the other with nothing lost, duplicated or reordered', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const server = await startWorkers(backend);
    const topics = ['kill.a', 'kill.b', 'kill.c'];
    const dead = new Set<number>();
    const { subs, workerOf } = await subscribeOnEveryWorker(server, topics, 24, dead);
    subscribers.push(...subs);
    const victim = workerPids(server).get(1)!;
    const onVictim = subs.filter((s) => workerOf.get(s) === 1).length;
    expect(onVictim).toBeGreaterThan(0);

    const perTopic = 1_000;
    const batch = 25;
    const requests: { topic: string; items: number[] }[] = [];
    for (let i = 0; i < perTopic * topics.length; i += batch) {
      const items = Array.from({ length: batch }, (_, k) => i + k);
      requests.push({ topic: topics[(i / batch) % topics.length]!, items });
    }
    const acked = new Map<number, { topic: string; seq: number }>();
    let next = 0;
    let retries = 0;
    let killed = false;
    const publisher = async (): Promise<void> => {
      for (;;) {
        const r = requests[next++];
        if (r === undefined) return;
        // A request cut by the kill goes again, with the same keys, to whichever worker is up.
        for (let attempt = 0; ; attempt++) {
          try {
            const res = await publishFresh(server.url, r.topic, r.items);
            for (const e of res.events) acked.set(e.i, { topic: r.topic, seq: e.seq });
            break;
          } catch (err) {
            if (attempt >= 50) throw err;
            retries++;
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
        if (!killed && acked.size >= 1_000) {
          killed = true;
          process.kill(victim, 'SIGKILL');
        }
      }
    };
    await Promise.all([publisher(), publisher(), publisher()]);
    expect(killed).toBe(true);
    expect(alive(victim)).toBe(false);

    const expected = new Map(topics.map((t) => [t, new Map<number, number>()]));
    for (const [i, { topic, seq }] of acked) expected.get(topic)!.set(seq, i);
    for (const m of expected.values()) {
      expect([...m.keys()].sort((a, b) => a - b)).toEqual(
        Array.from({ length: perTopic }, (_, j) => j + 1),
      );
    }
    await Promise.all(subs.map((s) => s.until(perTopic)));
    const totals = totalsOf(subs, perTopic, expected);
    const moved = subs.filter((s) => s.reconnects > 0);
    console.log(
      `workers(lmdb): ${subs.length} subscribers (${onVictim} on the killed worker), ${retries} retried publishes, ${moved.length} moved; ${JSON.stringify(totals)}`,
    );
    expect(totals).toEqual(CLEAN);
    expect(moved.length).toBeGreaterThanOrEqual(onVictim);
    for (const s of subs) if (workerOf.get(s) === 1) expect(s.reconnects).toBeGreaterThan(0);

    // The supervisor restarted it, under the same worker id.
    await waitFor(() => (workerPids(server).get(1) ?? victim) !== victim, 60_000);
    const lines = logLines(server);
    expect(lines.some((l) => l.msg === 'worker died: restarting it' && l.worker === 1)).toBe(true);
    await waitFor(
      () => logLines(server).some((l) => l.msg === 'worker restarted and listening'),
      60_000,
    );
  }, 240_000);

  it('idempotency keys hold across workers and seqs stay contiguous under concurrent appends from every worker', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const server = await startWorkers(backend);
    const topic = 'idem.t';
    const batches = Array.from({ length: 60 }, (_, b) =>
      Array.from({ length: 10 }, (_, k) => b * 10 + k),
    );
    const first = new Map<number, { worker: number; seq: number }>();
    const takenBy = new Set<number>();
    let next = 0;
    const publisher = async (): Promise<void> => {
      for (;;) {
        const items = batches[next++];
        if (items === undefined) return;
        const r = await publishFresh(server.url, topic, items);
        takenBy.add(r.worker);
        for (const e of r.events) {
          expect(e.duplicate).toBe(false);
          first.set(e.i, { worker: r.worker, seq: e.seq });
        }
      }
    };
    await Promise.all([publisher(), publisher(), publisher(), publisher()]);
    expect(takenBy).toEqual(new Set([1, 2]));
    expect([...first.values()].map((f) => f.seq).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 600 }, (_, j) => j + 1),
    );

    // Each batch again, through the worker that did not take it first: the same events.
    for (const items of batches) {
      const firstWorker = first.get(items[0]!)!.worker;
      for (let attempt = 0; ; attempt++) {
        if (attempt >= 20) throw new Error('20 publishes, all to the same worker');
        const r = await publishFresh(server.url, topic, items);
        expect(r.events.map((e) => [e.seq, e.duplicate])).toEqual(
          items.map((i) => [first.get(i)!.seq, true]),
        );
        if (r.worker !== firstWorker) break;
      }
    }
    const head = (await (await fetch(`${server.url}/v1/topics/${topic}`)).json()) as {
      lastSeq: number;
    };
    expect(head.lastSeq).toBe(600);
  }, 120_000);

  it('ephemeral events and a topic deletion taken by one worker reach the subscribers of every worker', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const server = await startWorkers(backend);
    const topic = 'eph.t';
    await publishFresh(server.url, topic, [0]);
    // SSE streams opened one by one until both workers hold one (read from "stream opened").
    const streams: SseStream[] = [];
    const workers = new Set<number>();
    while (workers.size < 2) {
      if (streams.length >= 20) throw new Error('20 streams, all on one worker');
      const s = await openSse(`${server.url}/v1/topics/${topic}/stream`);
      streams.push(s);
      cleanups.push(async () => void s.res.destroy());
      let opened: Record<string, unknown>[] = [];
      await waitFor(() => {
        opened = logLines(server).filter((l) => l.msg === 'stream opened');
        return opened.length >= streams.length;
      }, 20_000);
      workers.add(opened[streams.length - 1]!.worker as number);
    }
    // Ephemeral publishes on fresh connections until both workers took some.
    const takenBy = new Set<number>();
    let n = 0;
    while (takenBy.size < 2) {
      if (n >= 20) throw new Error('20 ephemeral publishes, all to one worker');
      const body = JSON.stringify({ ephemeral: true, data: { n } });
      const r = await fetch(`${server.url}/v1/topics/${topic}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body,
      });
      expect(r.status).toBe(202);
      takenBy.add(Number(r.headers.get('rill-worker')));
      n++;
    }
    const ephemeralOf = (s: SseStream): unknown[] =>
      s.frames
        .filter((f) => f.data?.includes('"ephemeral":true'))
        .map((f) => (JSON.parse(f.data!) as { data: { n: number } }).data.n);
    await waitFor(() => streams.every((s) => ephemeralOf(s).length === n), 20_000);
    for (const s of streams) {
      expect(ephemeralOf(s)).toEqual(Array.from({ length: n }, (_, k) => k));
    }
    // A deletion through whichever worker: every stream hears of it.
    const del = await fetch(`${server.url}/v1/topics/${topic}`, {
      method: 'DELETE',
      headers: { connection: 'close' },
    });
    expect(del.status).toBe(204);
    await waitFor(
      () =>
        streams.every((s) =>
          s.frames.some((f) => f.event === 'reset' && f.data?.includes('deleted')),
        ),
      20_000,
    );
  }, 120_000);

  it('a SIGKILLed supervisor takes its workers down; a new rill serve on the same directory resumes every subscriber from the store', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const port = await freePort();
    const server = await startWorkers(backend, port);
    const topic = 'resume.t';
    const { subs } = await subscribeOnEveryWorker(server, [topic], 6, new Set());
    subscribers.push(...subs);
    const expected = new Map([[topic, new Map<number, number>()]]);
    const publishUpTo = async (to: number, from: number): Promise<void> => {
      for (let i = from; i < to; i += 25) {
        const r = await publishFresh(
          server.url,
          topic,
          Array.from({ length: 25 }, (_, k) => i + k),
        );
        for (const e of r.events) expected.get(topic)!.set(e.seq, e.i);
      }
    };
    await publishUpTo(200, 0);
    await Promise.all(subs.map((s) => s.until(200)));

    const pids = [...workerPids(server).values()];
    server.proc.kill('SIGKILL');
    await server.exited;
    // The workers notice the supervisor is gone and exit.
    await waitFor(() => pids.every((p) => !alive(p)), 60_000);

    const again = await startWorkers(backend, port);
    expect(again.url).toBe(server.url);
    await publishUpTo(400, 200);
    await Promise.all(subs.map((s) => s.until(400)));
    expect(totalsOf(subs, 400, expected)).toEqual(CLEAN);
    expect(subs.every((s) => s.reconnects > 0)).toBe(true);
  }, 180_000);

  it('SIGTERM drains every worker; the supervisor exits 0 once all stopped', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const server = await startWorkers(backend);
    const pids = [...workerPids(server).values()];
    server.proc.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    const lines = logLines(server);
    for (const id of [1, 2]) {
      expect(lines.some((l) => l.worker === id && l.msg === 'shutting down')).toBe(true);
      expect(lines.some((l) => l.worker === id && l.msg === 'stopped')).toBe(true);
    }
    expect(lines.some((l) => l.role === 'supervisor' && l.msg === 'every worker stopped')).toBe(
      true,
    );
    expect(pids.every((p) => !alive(p))).toBe(true);
  }, 60_000);

  it('workers that cannot start are not restarted: the supervisor exits with their code (2, configuration refused)', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    // Refused by each worker: a non-loopback address without authentication.
    const err = await spawnServer([
      '--host',
      '0.0.0.0',
      '--port',
      '0',
      '--workers',
      '2',
      ...backend.args,
    ]).catch((e: unknown) => e);
    expect(String(err)).toMatch(/server exited with 2 before listening/);
    expect(String(err)).toMatch(/Refusing to listen on 0\.0\.0\.0 without authentication/);
    expect(String(err)).toMatch(/worker failed to start/);
  }, 60_000);
});

/** A request on a connection of its own (`agent` false) or of `agent`: status, worker, body. */
function request(
  url: string,
  path: string,
  opts: { method?: string; agent?: http.Agent | false; signal?: AbortSignal } = {},
): Promise<{ status: number; worker: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${path}`,
      { method: opts.method ?? 'GET', agent: opts.agent ?? false, signal: opts.signal },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            worker: Number(res.headers['rill-worker']),
            text,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** `path` asked on fresh connections until every worker has answered it once: answers by worker. */
async function fromEveryWorker(
  url: string,
  path: string,
): Promise<Map<number, { status: number; text: string }>> {
  const by = new Map<number, { status: number; text: string }>();
  for (let i = 0; by.size < 2; i++) {
    if (i >= 20) throw new Error(`20 requests for ${path}, all to one worker`);
    const r = await request(url, path);
    by.set(r.worker, r);
  }
  return by;
}

describe('rill serve --workers 2: metrics, stats and connections over every worker', () => {
  it('any worker answers for both: summed metrics (promtool-clean), stats with every connection, and ends a connection the other worker holds', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const server = await startWorkers(backend);
    // SSE subscribers, each on a topic of its own, until both workers hold two (the header says
    // which worker serves each stream).
    const subs: { s: SseStream; topic: string; worker: number }[] = [];
    const on = (w: number): number => subs.filter((x) => x.worker === w).length;
    while (on(1) < 2 || on(2) < 2) {
      if (subs.length >= 30) throw new Error('30 streams, and a worker holds fewer than two');
      const topic = `wstats.${subs.length}`;
      const s = await openSse(`${server.url}/v1/topics/${topic}/stream`);
      cleanups.push(async () => void s.res.destroy());
      subs.push({ s, topic, worker: Number(s.headers['rill-worker']) });
    }
    // Three events to each topic, through whichever worker takes each publish.
    for (const { topic } of subs) await publishFresh(server.url, topic, [0, 1, 2]);
    await Promise.all(subs.map(({ s }) => s.until(() => s.events().length === 3)));
    const delivered = subs.length * 3;

    // /metrics from either worker: the node's sums, each process's own figures by worker.
    for (const [worker, res] of await fromEveryWorker(server.url, '/metrics')) {
      expect(res.status, `worker ${worker}`).toBe(200);
      const m = parseMetrics(res.text);
      expect(metric(m, 'rill_events_delivered_total', { transport: 'sse' })).toBe(delivered);
      expect(metric(m, 'rill_events_published_total', { transport: 'http' })).toBe(delivered);
      expect(metric(m, 'rill_connections_open', { transport: 'sse' })).toBe(subs.length);
      expect(metric(m, 'rill_worker_up', { worker: '1' })).toBe(1);
      expect(metric(m, 'rill_worker_up', { worker: '2' })).toBe(1);
      const starts = m.filter((s) => s.name === 'process_start_time_seconds');
      expect(starts.map((s) => s.labels.worker).sort()).toEqual(['1', '2']);
      expect(metric(m, 'rill_build_info', { engine: 'lmdb' })).toBe(1);
      const lint = await promtoolCheck(res.text);
      expect(lint.output).toBe('');
      expect(lint.code).toBe(0);
    }

    // /v1/stats from either worker: one node, both workers, every connection.
    for (const [worker, res] of await fromEveryWorker(server.url, '/v1/stats')) {
      const doc = JSON.parse(res.text) as StatsDocument;
      expect(doc.nodes, `worker ${worker}`).toHaveLength(1);
      expect(doc.node.missingWorkers).toEqual([]);
      expect(doc.node.workers!.map((w) => [w.worker, w.connections.sse])).toEqual([
        [1, on(1)],
        [2, on(2)],
      ]);
      expect(doc.node.connections.sse).toBe(subs.length);
      expect(doc.node.counters.eventsDelivered).toBe(delivered);
      expect(doc.totals.connections.total).toBe(subs.length);
      expect(doc.totals.counters.eventsDelivered).toBe(delivered);
      expect(doc.node.deliveryLatencyMs.p99).not.toBeNull();
    }

    // A kept-alive connection to each worker (every request on it goes to the same worker).
    const agents = new Map<number, http.Agent>();
    for (let i = 0; agents.size < 2; i++) {
      if (i >= 20) throw new Error('20 connections, all to one worker');
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      cleanups.push(async () => agent.destroy());
      const w = (await request(server.url, '/v1/stats', { agent })).worker;
      if (agents.has(w)) agent.destroy();
      else agents.set(w, agent);
    }

    // /v1/connections from either worker: every stream once, paged one by one across workers.
    for (const [worker, agent] of agents) {
      const rows: ConnectionRow[] = [];
      let after: number | null = 0;
      while (after !== null) {
        if (rows.length > subs.length) throw new Error('more rows than streams');
        const r = await request(server.url, `/v1/connections?limit=1&after=${after}`, { agent });
        expect(r.worker).toBe(worker);
        const page = JSON.parse(r.text) as ConnectionsPage;
        expect(page.total).toBe(subs.length);
        expect(page.missingWorkers).toEqual([]);
        rows.push(...page.connections);
        after = page.next;
      }
      expect(new Set(rows.map((c) => c.id)).size).toBe(subs.length);
      expect(rows.map((c) => c.patterns[0]).sort()).toEqual(subs.map((x) => x.topic).sort());
      for (const c of rows) {
        expect(c.worker).toBe(subs.find((x) => x.topic === c.patterns[0])!.worker);
      }
    }

    // DELETE through worker 1 of a stream worker 2 holds: that stream, and only it, ends.
    const agent = agents.get(1)!;
    const list = JSON.parse((await request(server.url, '/v1/connections', { agent })).text);
    const target = (list as ConnectionsPage).connections.find((c) => c.worker === 2)!;
    expect(target).toBeDefined();
    const victim = subs.find((x) => x.topic === target.patterns[0])!;
    expect(victim.worker).toBe(2);
    const del = await request(server.url, `/v1/connections/${target.id}`, {
      method: 'DELETE',
      agent,
    });
    expect([del.worker, del.status, JSON.parse(del.text)]).toEqual([1, 200, { disconnected: 1 }]);
    await victim.s.ended;
    const err = victim.s.frames.find((f) => f.event === 'error');
    expect(JSON.parse(err!.data!)).toMatchObject({ code: 'disconnected_by_admin' });
    for (const other of subs) if (other !== victim) expect(other.s.res.closed).toBe(false);
    const again = await request(server.url, `/v1/connections/${target.id}`, {
      method: 'DELETE',
      agent,
    });
    expect(again.status).toBe(404);
  }, 180_000);

  it('a worker that does not answer within a second is reported missing; the request does not wait for it', async () => {
    const backend = lmdbBackend();
    cleanups.push(backend.cleanup);
    const server = await startWorkers(backend);
    const stopped = workerPids(server).get(2)!;
    process.kill(stopped, 'SIGSTOP');
    try {
      // node:cluster hands a stopped worker one connection at most (it never takes it, so it gets
      // no other): of two requests at once on their own connections, one is answered by worker 1.
      const ask = async (path: string): Promise<{ text: string; ms: number }> => {
        const ac = new AbortController();
        const t0 = Date.now();
        const tries = [
          request(server.url, path, { signal: ac.signal }),
          request(server.url, path, { signal: ac.signal }),
        ];
        const r = await Promise.any(tries);
        const ms = Date.now() - t0;
        ac.abort();
        await Promise.allSettled(tries);
        expect(r.worker).toBe(1);
        return { text: r.text, ms };
      };
      const stats = await ask('/v1/stats');
      const doc = JSON.parse(stats.text) as StatsDocument;
      expect(doc.node.missingWorkers).toEqual([2]);
      expect(doc.node.workers!.map((w) => w.worker)).toEqual([1]);
      // Bounded by the 1 s wait (and a margin for a busy machine), not by the stopped worker.
      expect(stats.ms).toBeLessThan(5_000);
      const metrics = parseMetrics((await ask('/metrics')).text);
      expect(metric(metrics, 'rill_worker_up', { worker: '1' })).toBe(1);
      expect(metric(metrics, 'rill_worker_up', { worker: '2' })).toBe(0);
      const page = JSON.parse((await ask('/v1/connections')).text) as ConnectionsPage;
      expect(page.missingWorkers).toEqual([2]);
    } finally {
      process.kill(stopped, 'SIGCONT');
    }
    // Going again, it is back in the views.
    await waitFor(async () => {
      const d = JSON.parse((await request(server.url, '/v1/stats')).text) as StatsDocument;
      return d.node.missingWorkers?.length === 0 && d.node.workers?.length === 2;
    }, 20_000);
  }, 120_000);

  it('on redis, two rill serve --workers 2 sharing a prefix: /v1/stats shows two nodes, each with its two workers', async () => {
    const backend = redisBackend();
    cleanups.push(backend.cleanup);
    const a = await startWorkers(backend);
    const b = await startWorkers(backend);
    let doc: StatsDocument | undefined;
    await waitFor(async () => {
      doc = JSON.parse((await request(a.url, '/v1/stats')).text) as StatsDocument;
      return doc.nodes.length >= 2 && doc.nodes.every((n) => n.workers?.length === 2);
    }, 30_000);
    expect(doc!.cluster).toBe(true);
    expect(doc!.nodes).toHaveLength(2);
    for (const n of doc!.nodes) expect(n.workers!.map((w) => w.worker)).toEqual([1, 2]);
    expect(doc!.nodes.map((n) => n.id)).toContain(doc!.node.id);
    expect(doc!.totals.connections.total).toBe(
      doc!.nodes.reduce((sum, n) => sum + n.connections.total, 0),
    );
    // The other node's answer names the same two nodes.
    const other = JSON.parse((await request(b.url, '/v1/stats')).text) as StatsDocument;
    expect(other.nodes.map((n) => n.id).sort()).toEqual(doc!.nodes.map((n) => n.id).sort());
  }, 120_000);
});
