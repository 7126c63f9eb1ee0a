/**
 * `rill bench`'s engine: forks the subscriber workers, drives the publisher step by step, and
 * turns worker counts, latency histograms and /proc samples into a result.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { decodeHistogram, newHistogram, summarize, type LatencySummary } from './histogram.js';
import { ProcWatch, machineTicks } from './proc.js';
import type { PublishMode } from './publisher.js';
import { buildPool } from './pubpool.js';
import { paddingFor } from './scan.js';
import type { ConnSpec, FromWorker, Progress, SubMode, ToWorker, WorkerSpec } from './worker.js';

export type BenchTarget = 'rill' | 'generic' | 'socketio';
export type BenchTransport = 'sse' | 'ws' | 'ndjson';

export interface BenchOptions {
  target: BenchTarget;
  /** Rill or Socket.IO peer base URL. */
  url: string;
  /**
   * generic: subscribe URL template (http(s) for a stream, ws(s) for WebSocket) with `{topic}`
   * (the connection's own topic), `{shared}` (the shared topic) or `{topics}` (all of the
   * connection's topics, comma-separated).
   */
  subUrl?: string;
  /** generic and socketio: publish URL template with `{topic}` (the payload is POSTed as is). */
  pubUrl?: string;
  transport: BenchTransport;
  publish: PublishMode;
  subscribers: number;
  topics: number;
  /**
   * With a number: every connection also subscribes to one shared topic, published at this many
   * events/s in every step (and in the warm-up) besides the step's rate on the other topics.
   */
  sharedRate?: number;
  /** Publisher processes the step's rate and the topics are split over (1: in this process). */
  publishers: number;
  /** Offered rate per step, events/s; 0 = as fast as the publisher's concurrency allows. */
  rates: number[];
  /** Seconds per step; with no rates, how long the idle connections are held. */
  duration: number;
  batch: number;
  concurrency: number;
  payloadBytes: number;
  sample: number;
  workers: number;
  serverPids: number[];
  /** A step passes with zero loss and p99 under this (ms). */
  maxP99: number;
  /** Stop after two steps in a row that are not sound or have p99 over `stopP99`. */
  stopOnFail: boolean;
  stopP99: number;
  /** Seconds published at the first rate before the first step, not measured. */
  warmup: number;
  /** Longest wait after a step for deliveries to settle, ms. */
  drainMs: number;
  topicPrefix?: string;
  connectConcurrency: number;
  /**
   * A token (JWT or API key) every subscriber and publisher sends as `Authorization: Bearer`, for
   * a Rill with authentication on. Each connection is verified when it opens.
   */
  token?: string;
  /** Called about once a second with a one-line status. */
  onProgress?: (line: string) => void;
}

export interface StepResult {
  /** Offered events/s on the subscribers' own topics (0 = unthrottled). */
  rate: number;
  seconds: number;
  /** Events acknowledged, every topic. */
  published: number;
  /** Of which on the shared topic (with a shared topic). */
  sharedPublished?: number;
  publishErrors: number;
  publishFirstError?: string;
  publishedPerSec: number;
  expected: number;
  delivered: number;
  /** expected − delivered: events that never arrived (negative: duplicates). */
  loss: number;
  deliveredPerSec: number;
  latencyMs: LatencySummary;
  serverCpuSeconds?: number;
  serverCpuPercent?: number;
  serverPeakRssKiB?: number;
  /** Server CPU time per delivered event, µs: less noisy than latency on a shared machine. */
  serverCpuMicrosPerDelivery?: number;
  /** How busy the whole machine was (all cores, every process), %: how noisy the step was. */
  machineBusyPercent?: number;
  /** Zero loss, no publish error, and the publisher kept the offered rate. */
  sound: boolean;
  /** Sound, and p99 under the limit. */
  ok: boolean;
}

export interface BenchResult {
  target: BenchTarget;
  url: string;
  transport: BenchTransport;
  publish: PublishMode;
  subscribers: number;
  topics: number;
  /** Events/s on the shared topic every connection also subscribes to, if any. */
  sharedRate?: number;
  workers: number;
  publishers: number;
  payloadBytes: number;
  connected: number;
  connectFailed: number;
  connectError?: string;
  /** Connections that closed during the run. */
  dropped: number;
  connectSeconds: number;
  server?: {
    pids: number[];
    rssBeforeKiB: number;
    rssConnectedKiB: number;
    /** (RSS with every connection open − RSS before) / connections, after the hold. */
    rssPerConnectionKiB: number;
  };
  steps: StepResult[];
  /** The passing step with the most deliveries/s. */
  best?: { rate: number; deliveredPerSec: number; p99: number };
  /** The sound step (zero loss, rate kept, whatever the latency) with the most deliveries/s. */
  capacity?: { rate: number; deliveredPerSec: number; p99: number };
}

interface WorkerHandle {
  proc: ChildProcess;
  conns: number;
  progress: Progress;
  ready: Promise<{ connected: number; failed: number; error?: string }>;
  collect(): Promise<{ delivered: number; histogram: string }>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * The subscriber connection for a topic (and the shared topic, when there is one: both on the same
 * connection), per target and transport.
 */
export function connFor(
  o: BenchOptions,
  topic: string,
  shared?: string,
): { mode: SubMode; conn: ConnSpec } {
  const base = o.url.replace(/\/$/, '');
  const wsBase = base.replace(/^http/, 'ws');
  const all = shared === undefined ? [topic] : [topic, shared];
  const list = all.map(encodeURIComponent).join(',');
  if (o.target === 'socketio') {
    // The peer joins each comma-separated room of its `topic` handshake query.
    return {
      mode: 'socketio',
      conn: { url: `${wsBase}/socket.io/?EIO=4&transport=websocket&topic=${list}` },
    };
  }
  if (o.target === 'generic') {
    if (!o.subUrl) throw new Error('--sub-url is required with --target generic');
    const t = o.subUrl;
    if (shared !== undefined && !t.includes('{topics}') && !t.includes('{shared}')) {
      throw new Error('--sub-url needs {topics} or {shared} with a shared topic');
    }
    const url = t
      .replaceAll('{topics}', list)
      .replaceAll('{topic}', encodeURIComponent(topic))
      .replaceAll('{shared}', encodeURIComponent(shared ?? ''));
    return { mode: /^wss?:/.test(url) ? 'ws' : 'http', conn: { url } };
  }
  if (o.transport === 'ws') {
    return {
      mode: 'ws',
      conn: {
        url: `${wsBase}/v1/ws`,
        hello: JSON.stringify({ op: 'subscribe', id: 1, topics: all }),
      },
    };
  }
  const q = o.transport === 'ndjson' ? 'format=ndjson' : '';
  if (shared === undefined) {
    return {
      mode: 'http',
      conn: { url: `${base}/v1/topics/${encodeURIComponent(topic)}/stream${q ? `?${q}` : ''}` },
    };
  }
  return { mode: 'http', conn: { url: `${base}/v1/stream?topics=${list}${q ? `&${q}` : ''}` } };
}

function startWorker(spec: WorkerSpec): WorkerHandle {
  const proc = fork(fileURLToPath(new URL('./worker.js', import.meta.url)), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let onReady: (r: { connected: number; failed: number; error?: string }) => void;
  const ready = new Promise<{ connected: number; failed: number; error?: string }>(
    (resolve, reject) => {
      onReady = resolve;
      proc.once('exit', (code) => reject(new Error(`bench worker exited with ${code}`)));
    },
  );
  ready.catch(() => undefined);
  const collectors: Array<(m: { delivered: number; histogram: string }) => void> = [];
  const h: WorkerHandle = {
    proc,
    conns: spec.conns.length,
    progress: { type: 'progress', connected: 0, failed: 0, closed: 0, delivered: 0 },
    ready,
    collect() {
      return new Promise((resolve) => {
        collectors.push(resolve);
        proc.send({ cmd: 'collect' } satisfies ToWorker);
      });
    },
  };
  proc.on('message', (m: FromWorker) => {
    if (m.type === 'progress') h.progress = m;
    else if (m.type === 'ready') onReady(m);
    else if (m.type === 'collect') collectors.shift()?.(m);
  });
  proc.send({ cmd: 'start', spec } satisfies ToWorker);
  return h;
}

function fmtRate(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(0);
}

/** Runs one bench: connect, step through the rates, report. */
export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const prefix = o.topicPrefix || `bench-${randomBytes(4).toString('hex')}`;
  const topics = Array.from({ length: o.topics }, (_, i) => `${prefix}.${i}`);
  const shared = o.sharedRate === undefined ? undefined : `${prefix}.shared`;
  // Subscribers per topic, indexed like the publishers' per-topic counts: the shared topic last.
  const subsOnTopic = topics.map(() => 0);
  if (shared !== undefined) subsOnTopic.push(o.subscribers);
  const shares: ConnSpec[][] = Array.from({ length: o.workers }, () => []);
  let mode: SubMode = 'http';
  for (let i = 0; i < o.subscribers; i++) {
    const t = i % topics.length;
    subsOnTopic[t]!++;
    const c = connFor(o, topics[t]!, shared);
    mode = c.mode;
    shares[i % o.workers]!.push(c.conn);
  }
  const headers: Record<string, string> =
    o.transport === 'ndjson' ? { accept: 'application/x-ndjson' } : { accept: 'text/event-stream' };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;

  const watch = new ProcWatch(o.serverPids);
  const before = watch.poll();
  const progress = o.onProgress;
  const t0 = performance.now();
  const workers = shares
    .filter((s) => s.length > 0)
    .map((conns) =>
      startWorker({
        mode,
        conns,
        headers,
        ...(o.target === 'rill' && mode === 'ws' ? { protocol: 'rill.v1' } : {}),
        sample: o.sample,
        connectConcurrency: o.connectConcurrency,
      }),
    );
  const stopWorkers = (): void => {
    for (const w of workers) {
      if (w.proc.connected) w.proc.send({ cmd: 'stop' } satisfies ToWorker);
    }
  };
  const totals = (): Progress => {
    const p: Progress = { type: 'progress', connected: 0, failed: 0, closed: 0, delivered: 0 };
    for (const w of workers) {
      p.connected += w.progress.connected;
      p.failed += w.progress.failed;
      p.closed += w.progress.closed;
      p.delivered += w.progress.delivered;
      p.error ??= w.progress.error;
    }
    return p;
  };

  let status = 'connecting';
  const ticker = setInterval(() => {
    if (!progress) return;
    const p = totals();
    const s = watch.poll();
    const srv = s ? ` | server rss ${(s.rssKiB / 1024).toFixed(0)} MiB` : '';
    progress(
      `${status} | conn ${p.connected}/${o.subscribers}${p.failed ? ` failed ${p.failed}` : ''}${p.closed ? ` dropped ${p.closed}` : ''} | delivered ${p.delivered}${srv}`,
    );
  }, 1000);
  ticker.unref();

  const publisher = buildPool(
    {
      mode: o.target === 'rill' ? o.publish : 'raw',
      url: o.target === 'rill' ? o.url : o.pubUrl || `${o.url.replace(/\/$/, '')}/pub/{topic}`,
      batch: o.batch,
      concurrency: o.concurrency,
      padding: paddingFor(o.payloadBytes),
      ...(o.token === undefined ? {} : { token: o.token }),
    },
    topics,
    o.publishers,
    shared === undefined ? undefined : { topic: shared, rate: o.sharedRate! },
  );

  try {
    const ready = await Promise.all(workers.map((w) => w.ready));
    const connectSeconds = (performance.now() - t0) / 1000;
    const connected = ready.reduce((n, r) => n + r.connected, 0);
    const connectFailed = ready.reduce((n, r) => n + r.failed, 0);
    const connectError = ready.find((r) => r.error)?.error;

    await publisher.open();
    // Let the server settle after the connection burst before measuring anything.
    await sleep(o.rates.length === 0 ? o.duration * 1000 : 500);
    const connectedSample = watch.poll();

    const expectedSoFar = (): number =>
      publisher.perTopic().reduce((n, p, t) => n + p * subsOnTopic[t]!, 0);
    /** Waits for every delivery owed so far (worker counts come every 250 ms), or a stall. */
    const settle = async (): Promise<void> => {
      const want = expectedSoFar();
      const drainStart = performance.now();
      let last = -1;
      let lastChange = drainStart;
      for (;;) {
        await sleep(100);
        const got = totals().delivered;
        const now = performance.now();
        if (got !== last) {
          last = got;
          lastChange = now;
        }
        if (got >= want && now - drainStart > 300) break;
        if (now - lastChange > Math.min(1500, o.drainMs) || now - drainStart > o.drainMs) break;
      }
    };

    const steps: StepResult[] = [];
    if (o.warmup > 0 && o.rates.length > 0) {
      // JIT, lazy allocations and the connection burst's aftermath would land on the first step.
      status = `warm-up ${o.warmup}s`;
      await publisher.run(o.rates[0]!, o.warmup);
      await settle();
    }
    let failures = 0;
    for (let i = 0; i < o.rates.length; i++) {
      const rate = o.rates[i]!;
      status = `step ${i + 1}/${o.rates.length} rate ${rate === 0 ? 'max' : fmtRate(rate)}/s`;
      for (const w of workers) await w.collect();
      const perTopicBefore = publisher.perTopic();
      const errorsBefore = publisher.errors;
      const cpu0 = watch.mark();
      const m0 = machineTicks();
      const start = performance.now();
      // Rates are over the issuing time: a server slow to answer shows in latency, and in the
      // rate only when the publisher's concurrency could not keep the schedule.
      const { issueSeconds: pubSeconds } = await publisher.run(rate, o.duration);
      let expected = 0;
      let published = 0;
      const perTopicAfter = publisher.perTopic();
      perTopicAfter.forEach((n, t) => {
        const d = n - perTopicBefore[t]!;
        published += d;
        expected += d * subsOnTopic[t]!;
      });
      const sharedPublished =
        shared === undefined ? 0 : perTopicAfter[topics.length]! - perTopicBefore[topics.length]!;
      await settle();
      const cpu1 = watch.poll();
      const m1 = machineTicks();
      const hist = newHistogram();
      let delivered = 0;
      for (const w of workers) {
        const c = await w.collect();
        delivered += c.delivered;
        hist.add(decodeHistogram(c.histogram));
      }
      const latency = summarize(hist);
      const errors = publisher.errors - errorsBefore;
      const publishedPerSec = published / pubSeconds;
      const offered = rate + (o.sharedRate ?? 0);
      const sound =
        expected === delivered && errors === 0 && (rate === 0 || publishedPerSec >= offered * 0.95);
      const step: StepResult = {
        rate,
        seconds: Math.round(pubSeconds * 100) / 100,
        published,
        ...(shared === undefined ? {} : { sharedPublished }),
        publishErrors: errors,
        ...(errors > 0 && publisher.firstError ? { publishFirstError: publisher.firstError } : {}),
        publishedPerSec: Math.round(publishedPerSec),
        expected,
        delivered,
        loss: expected - delivered,
        deliveredPerSec: Math.round(delivered / pubSeconds),
        latencyMs: latency,
        ...(m0 && m1 && m1.total > m0.total
          ? { machineBusyPercent: Math.round(((m1.busy - m0.busy) / (m1.total - m0.total)) * 100) }
          : {}),
        ...(cpu0 && cpu1 && delivered > 0
          ? {
              serverCpuMicrosPerDelivery:
                Math.round(((cpu1.cpuSeconds - cpu0.cpuSeconds) / delivered) * 1e6 * 100) / 100,
            }
          : {}),
        ...(cpu0 && cpu1
          ? {
              serverCpuSeconds: Math.round((cpu1.cpuSeconds - cpu0.cpuSeconds) * 100) / 100,
              serverCpuPercent: Math.round(
                ((cpu1.cpuSeconds - cpu0.cpuSeconds) / ((performance.now() - start) / 1000)) * 100,
              ),
              serverPeakRssKiB: watch.peakRssKiB,
            }
          : {}),
        sound,
        ok: sound && (o.subscribers === 0 || latency.p99 < o.maxP99),
      };
      steps.push(step);
      progress?.(
        `step ${i + 1}: offered ${rate === 0 ? 'max' : fmtRate(rate)}/s published ${fmtRate(publishedPerSec)}/s delivered ${fmtRate(step.deliveredPerSec)}/s loss ${step.loss} p99 ${latency.p99} ms ${step.ok ? 'ok' : 'FAIL'}`,
      );
      // Two hard failures in a row end the ladder (one alone may be a noisy neighbour's doing): a
      // lost event, a publish error, the offered rate not kept, or p99 past `stopP99`. A p99 over
      // `maxP99` alone does not stop it, so a busy machine still shows the zero-loss capacity.
      failures = step.sound && step.latencyMs.p99 < o.stopP99 ? 0 : failures + 1;
      if (failures >= 2 && o.stopOnFail) break;
    }

    let best: BenchResult['best'];
    let capacity: BenchResult['capacity'];
    for (const s of steps) {
      const it = { rate: s.rate, deliveredPerSec: s.deliveredPerSec, p99: s.latencyMs.p99 };
      if (s.ok && (!best || s.deliveredPerSec > best.deliveredPerSec)) best = it;
      if (s.sound && (!capacity || s.deliveredPerSec > capacity.deliveredPerSec)) capacity = it;
    }
    const rssBefore = before?.rssKiB ?? 0;
    const rssConnected = connectedSample?.rssKiB ?? 0;
    return {
      target: o.target,
      url: o.url,
      transport: o.transport,
      publish: o.target === 'rill' ? o.publish : 'raw',
      subscribers: o.subscribers,
      topics: o.topics,
      ...(o.sharedRate === undefined ? {} : { sharedRate: o.sharedRate }),
      workers: workers.length,
      publishers: o.publishers,
      payloadBytes: o.payloadBytes,
      connected,
      connectFailed,
      ...(connectError === undefined ? {} : { connectError }),
      dropped: totals().closed,
      connectSeconds: Math.round(connectSeconds * 100) / 100,
      ...(before && connectedSample
        ? {
            server: {
              pids: o.serverPids,
              rssBeforeKiB: rssBefore,
              rssConnectedKiB: rssConnected,
              rssPerConnectionKiB:
                connected > 0
                  ? Math.round(((rssConnected - rssBefore) / connected) * 100) / 100
                  : 0,
            },
          }
        : {}),
      steps,
      ...(best ? { best } : {}),
      ...(capacity ? { capacity } : {}),
    };
  } finally {
    clearInterval(ticker);
    watch.stop();
    publisher.close();
    stopWorkers();
  }
}
