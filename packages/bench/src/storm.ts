/**
 * `rill bench storm`: many idle SSE connections on one machine, then a reconnect storm.
 *
 * Opens N SSE connections spread over K forked worker processes and M loopback source addresses,
 * holds them while the server's heartbeats flow (counted per connection), samples the RSS and PSS
 * of the whole server process tree (a supervisor and its workers) from /proc, then — against
 * Rill — publishes one event per topic, drops every connection at once, publishes a gap to every
 * topic, and reconnects them all with `Last-Event-ID` while more events are published, checking
 * per connection that every event arrives once and in order.
 */
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { availableMiB, sampleTree, tcpSockstat, type TreeSample } from './proc.js';
import type {
  FromStormWorker,
  StormCollect,
  StormProgress,
  StormWorkerSpec,
  ToStormWorker,
} from './stormworker.js';

export interface StormOptions {
  /** `rill`: Rill's SSE route, with the storm; `generic`: `subUrl`, idle hold only. */
  target: 'rill' | 'generic';
  url: string;
  /** generic: the SSE URL with `{topic}`. */
  subUrl?: string;
  subscribers: number;
  /** Generator worker processes. */
  processes: number;
  /** Loopback source addresses the connections are spread over. */
  addresses: string[];
  topics: number;
  /** Seconds the idle connections are held while heartbeats flow. */
  hold: number;
  /** Run the reconnect storm after the hold (Rill only). */
  storm: boolean;
  /** Events published to every topic while the connections are away, and again during the storm. */
  gap: number;
  /**
   * Purge every topic while the connections are away, so their resumes cannot be whole: a check
   * that the checker reports gaps.
   */
  purgeDuringDrop: boolean;
  connectConcurrency: number;
  stormConcurrency: number;
  /** First local port of the generator's own port plan; 0: the kernel picks (slow past ~8,000 per address). */
  portBase: number;
  /** Root pids of the server (e.g. the supervisor of `rill serve --workers`); trees are summed. */
  serverPids: number[];
  /** Longest time for each phase (connect, warm-up, drop, reconnect, recovery), seconds. */
  phaseTimeout: number;
  /** Abort when the machine's available memory falls below this, MiB. */
  minFreeMiB: number;
  topicPrefix?: string;
  token?: string;
  onProgress?: (line: string) => void;
}

export interface MemorySample {
  rssKiB: number;
  pssKiB: number;
  processes: number;
}

export interface StormResult {
  target: 'rill' | 'generic';
  url: string;
  subscribers: number;
  processes: number;
  addresses: number;
  topics: number;
  connected: number;
  connectFailed: number;
  connectError?: string;
  connectSeconds: number;
  connectsPerSec: number;
  hold: {
    seconds: number;
    heartbeats: number;
    heartbeatsMinPerConnection: number;
    heartbeatsMaxPerConnection: number;
    connectionsWithoutHeartbeat: number;
    /** Connections the server or the network closed while held. */
    dropped: number;
  };
  server?: {
    before: MemorySample;
    connected: MemorySample;
    held: MemorySample;
    afterStorm?: MemorySample;
    /** Per held connection, KiB: (held − before) / N and held / N, for RSS and PSS. */
    perConnectionKiB: { rssDelta: number; rssTotal: number; pssDelta: number; pssTotal: number };
  };
  /** The kernel's TCP figures while held (both ends of every loopback connection). */
  kernel?: { tcpInUse: number; tcpMemKiB: number };
  generator: { rssKiB: number; perConnectionKiB: number };
  storm?: {
    gapPerTopic: number;
    /** Events every connection must end with: 1 before the drop, 2 × gap, 1 after. */
    eventsPerConnection: number;
    reconnectSeconds: number;
    resumesPerSec: number;
    /** From the reconnect burst until every connection has every event (null: never). */
    recoverySeconds: number | null;
    resumed: number;
    notResumed: number;
    retries: number;
    firstError?: string;
    complete: number;
    events: number;
    gaps: number;
    duplicates: number;
    resets: number;
    /** Connections with a gap or duplicate. */
    broken: number;
  };
  /** Why the storm stopped short (a phase deadline, a publish refused), if it did. */
  stormError?: string;
  /** Every connection held with heartbeats, and (with the storm) every one resumed whole. */
  ok: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const round2 = (n: number): number => Math.round(n * 100) / 100;

interface Handle {
  proc: ChildProcess;
  progress: StormProgress;
  next(type: FromStormWorker['type']): Promise<FromStormWorker>;
}

function startWorker(): Handle {
  const proc = fork(fileURLToPath(new URL('./stormworker.js', import.meta.url)), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiting = new Map<string, Array<(m: FromStormWorker) => void>>();
  const failures: Array<(e: Error) => void> = [];
  const h: Handle = {
    proc,
    progress: {
      type: 'progress',
      open: 0,
      failed: 0,
      closed: 0,
      heartbeats: 0,
      events: 0,
      complete: 0,
      retries: 0,
    },
    next(type) {
      return new Promise((resolve, reject) => {
        const list = waiting.get(type) ?? [];
        list.push(resolve);
        waiting.set(type, list);
        failures.push(reject);
      });
    },
  };
  proc.on('message', (m: FromStormWorker) => {
    if (m.type === 'progress') h.progress = m;
    waiting.get(m.type)?.shift()?.(m);
  });
  proc.once('exit', (code) => {
    for (const f of failures) f(new Error(`storm worker exited with ${code}`));
  });
  return h;
}

function memory(s: TreeSample): MemorySample {
  return { rssKiB: s.rssKiB, pssKiB: s.pssKiB, processes: s.pids.length };
}

/**
 * `127.0.0.2`, `127.0.0.3`, … : `n` loopback source addresses (Linux routes 127/8 to lo).
 * 127.0.0.1 is left out: other programs' connections take their ports from it.
 */
export function loopbackAddresses(n: number): string[] {
  if (n < 1 || n > 250) throw new Error('source addresses: 1 to 250');
  return Array.from({ length: n }, (_, i) => `127.0.0.${i + 2}`);
}

/** Runs the idle hold and the reconnect storm; throws when a phase misses its deadline. */
export async function runStorm(o: StormOptions): Promise<StormResult> {
  // A generic target is wherever its subscribe URL points.
  const base = new URL(o.target === 'generic' ? o.subUrl!.replaceAll('{topic}', 't') : o.url);
  const host = base.hostname;
  const port = Number(base.port || 80);
  if (!/^127\.\d+\.\d+\.\d+$/.test(host)) throw new Error('the storm targets 127.x.x.x only');
  for (const a of o.addresses) {
    if (!/^127\.\d+\.\d+\.\d+$/.test(a)) throw new Error(`source address ${a} is not 127.x.x.x`);
  }
  if (o.storm && o.target !== 'rill') throw new Error('the reconnect storm needs --target rill');
  const prefix = o.topicPrefix || `storm-${randomBytes(4).toString('hex')}`;
  const topics = Array.from({ length: o.topics }, (_, i) => `${prefix}.${i}`);
  const paths = topics.map((t) => {
    if (o.target === 'rill') return `/v1/topics/${encodeURIComponent(t)}/stream`;
    const u = new URL(o.subUrl!.replaceAll('{topic}', encodeURIComponent(t)));
    return `${u.pathname}${u.search}`;
  });
  const headers: Record<string, string> = { accept: 'text/event-stream' };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  const progress = o.onProgress;
  const deadlineMs = o.phaseTimeout * 1000;

  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  /**
   * POSTs, and like a real client retries a 503 or 429 (load shedding: refused before anything is
   * stored) after its Retry-After, until the phase deadline.
   */
  const post = async (path: string, body: string, type: string): Promise<void> => {
    const end = performance.now() + deadlineMs;
    for (;;) {
      const retryMs = await postOnce(path, body, type);
      if (retryMs === 0) return;
      if (performance.now() + retryMs > end)
        throw new Error(`POST ${path}: still refused at the deadline`);
      await sleep(retryMs);
    }
  };
  /** 0 when accepted, the wait before a retry when shed; throws on any other answer. */
  const postOnce = (path: string, body: string, type: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        {
          host,
          port,
          path,
          method: 'POST',
          agent,
          headers: {
            'content-type': type,
            'content-length': Buffer.byteLength(body),
            ...(o.token === undefined ? {} : { authorization: `Bearer ${o.token}` }),
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (status < 300) resolve(0);
            else if (status === 503 || status === 429) {
              const after = Number(res.headers['retry-after']);
              resolve(Number.isFinite(after) && after > 0 ? Math.min(after, 5) * 1000 : 200);
            } else reject(new Error(`HTTP ${status} from POST ${path}`));
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  /** Publishes counters first…first+count−1 to every topic, one NDJSON request per topic. */
  const publishAll = async (first: number, count: number): Promise<void> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(32, topics.length) }, async () => {
        while (next < topics.length) {
          const t = topics[next++]!;
          let body = '';
          for (let k = first; k < first + count; k++) body += `{"data":{"sn":${k}}}\n`;
          await post(`/v1/topics/${encodeURIComponent(t)}/events`, body, 'application/x-ndjson');
        }
      }),
    );
  };

  const server = o.serverPids.length > 0 ? () => sampleTree(o.serverPids) : undefined;
  const before = server?.();
  const workers = Array.from({ length: o.processes }, () => startWorker());
  const totals = (): StormProgress => {
    const t: StormProgress = {
      type: 'progress',
      open: 0,
      failed: 0,
      closed: 0,
      heartbeats: 0,
      events: 0,
      complete: 0,
      retries: 0,
    };
    for (const w of workers) {
      const p = w.progress;
      t.open += p.open;
      t.failed += p.failed;
      t.closed += p.closed;
      t.heartbeats += p.heartbeats;
      t.events += p.events;
      t.complete += p.complete;
      t.retries += p.retries;
      t.error ??= p.error;
    }
    return t;
  };
  let status = 'connecting';
  let aborted: string | undefined;
  const ticker = setInterval(() => {
    const free = availableMiB();
    if (free < o.minFreeMiB) aborted ??= `available memory ${free} MiB < ${o.minFreeMiB} MiB`;
    if (!progress) return;
    const p = totals();
    const s = server?.();
    progress(
      `${status} | open ${p.open}/${o.subscribers}${p.failed ? ` failed ${p.failed}` : ''}${p.closed ? ` dropped ${p.closed}` : ''} | heartbeats ${p.heartbeats} | events ${p.events}${p.retries ? ` | retries ${p.retries}` : ''}${s ? ` | server rss ${(s.rssKiB / 1024).toFixed(0)} MiB` : ''} | free ${free} MiB`,
    );
  }, 1000);
  ticker.unref();

  /** Resolves with `p`, or throws at the phase deadline or on a memory abort. */
  const within = async <T>(what: string, p: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    let guard: NodeJS.Timeout | undefined;
    const fail = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${what}: not done within ${o.phaseTimeout}s`)),
        deadlineMs,
      );
      guard = setInterval(() => {
        if (aborted) reject(new Error(`${what}: aborted, ${aborted}`));
      }, 200);
    });
    try {
      return await Promise.race([p, fail]);
    } finally {
      clearTimeout(timer);
      clearInterval(guard);
    }
  };
  const until = (what: string, pred: () => boolean): Promise<void> =>
    within(
      what,
      (async () => {
        while (!pred()) await sleep(100);
      })(),
    );
  /** Waits `ms`, or throws on a memory abort. */
  const pause = async (ms: number): Promise<void> => {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      if (aborted) throw new Error(`aborted, ${aborted}`);
      await sleep(Math.min(200, end - performance.now()));
    }
  };
  /** Asks every worker, waits for each one's fresh progress report, then checks `pred`. */
  const fresh = async (): Promise<void> => {
    await Promise.all(workers.map((w) => w.next('progress')));
  };

  try {
    const t0 = performance.now();
    const opened = await within(
      'connect',
      Promise.all(
        workers.map((w, index) => {
          const spec: StormWorkerSpec = {
            index,
            processes: o.processes,
            total: o.subscribers,
            host,
            port,
            paths,
            addresses: o.addresses,
            headers,
            connectConcurrency: o.connectConcurrency,
            stormConcurrency: o.stormConcurrency,
            portBase: o.portBase,
          };
          const done = w.next('opened');
          w.proc.send({ cmd: 'open', spec } satisfies ToStormWorker);
          return done as Promise<Extract<FromStormWorker, { type: 'opened' }>>;
        }),
      ),
    );
    const connectSeconds = (performance.now() - t0) / 1000;
    const connected = opened.reduce((n, r) => n + r.open, 0);
    const connectFailed = opened.reduce((n, r) => n + r.failed, 0);
    const connectError = opened.find((r) => r.error)?.error;

    // Let the server settle after the burst (garbage collection, lazily grown buffers).
    status = 'settling';
    if (connected === 0) throw new Error(`no connection opened (${connectError ?? 'no error'})`);
    await pause(2000);
    const connectedSample = server?.();
    status = `holding ${o.hold}s`;
    await pause(o.hold * 1000);
    await fresh();
    const heldProgress = totals();
    const heldSample = server?.();
    const kernel = tcpSockstat();
    const gen = sampleTree([process.pid]);
    const held = await Promise.all(
      workers.map((w) => {
        const c = w.next('collect');
        w.proc.send({ cmd: 'collect' } satisfies ToStormWorker);
        return c as Promise<StormCollect>;
      }),
    );
    const hbMin = Math.min(...held.filter((c) => c.connections > 0).map((c) => c.heartbeatsMin));
    const hbMax = Math.max(0, ...held.map((c) => c.heartbeatsMax));
    const without = held.reduce((n, c) => n + c.withoutHeartbeat, 0);
    const result: StormResult = {
      target: o.target,
      url: o.target === 'generic' ? o.subUrl! : o.url,
      subscribers: o.subscribers,
      processes: o.processes,
      addresses: o.addresses.length,
      topics: o.topics,
      connected,
      connectFailed,
      ...(connectError === undefined ? {} : { connectError }),
      connectSeconds: round2(connectSeconds),
      connectsPerSec: Math.round(connected / connectSeconds),
      hold: {
        seconds: o.hold,
        heartbeats: heldProgress.heartbeats,
        heartbeatsMinPerConnection: Number.isFinite(hbMin) ? hbMin : 0,
        heartbeatsMaxPerConnection: hbMax,
        connectionsWithoutHeartbeat: without,
        dropped: heldProgress.closed,
      },
      ...(before && connectedSample && heldSample
        ? {
            server: {
              before: memory(before),
              connected: memory(connectedSample),
              held: memory(heldSample),
              perConnectionKiB: {
                rssDelta: round2((heldSample.rssKiB - before.rssKiB) / Math.max(1, connected)),
                rssTotal: round2(heldSample.rssKiB / Math.max(1, connected)),
                pssDelta: round2((heldSample.pssKiB - before.pssKiB) / Math.max(1, connected)),
                pssTotal: round2(heldSample.pssKiB / Math.max(1, connected)),
              },
            },
          }
        : {}),
      ...(kernel ? { kernel: { tcpInUse: kernel.inuse, tcpMemKiB: kernel.memKiB } } : {}),
      generator: {
        rssKiB: gen.rssKiB,
        perConnectionKiB: round2(gen.rssKiB / Math.max(1, connected)),
      },
      ok: connected === o.subscribers && without === 0 && heldProgress.closed === 0 && !aborted,
    };
    if (!o.storm) return result;
    try {
      await stormPhase(result, connected);
    } catch (err) {
      // The hold's figures stand; the storm's failure is part of the result.
      result.stormError = (err as Error).message;
      result.ok = false;
    }
    return result;
  } finally {
    clearInterval(ticker);
    agent.destroy();
    for (const w of workers) {
      if (w.proc.connected) w.proc.send({ cmd: 'stop' } satisfies ToStormWorker);
    }
  }

  async function stormPhase(result: StormResult, connected: number): Promise<void> {
    // The storm. Every connection first gets counter 1 (and with it an id to resume from).
    const G = o.gap;
    const total = 2 * G + 2;
    const expect = async (n: number): Promise<void> => {
      for (const w of workers) w.proc.send({ cmd: 'expect', total: n } satisfies ToStormWorker);
      await fresh();
    };
    status = 'warm-up event';
    await expect(1);
    await within('publish', publishAll(1, 1));
    await until('warm-up delivery', () => totals().complete >= connected);

    status = 'dropping';
    await within(
      'drop',
      Promise.all(
        workers.map((w) => {
          const d = w.next('dropped');
          w.proc.send({ cmd: 'drop' } satisfies ToStormWorker);
          return d;
        }),
      ),
    );
    await fresh();
    await until('drop', () => totals().open === 0);
    status = `publishing the gap (${G} per topic)`;
    await within('publish', publishAll(2, G));
    if (o.purgeDuringDrop) {
      const cut = Date.now() + 1;
      await sleep(5);
      await within(
        'purge',
        Promise.all(
          topics.map((t) =>
            post(
              `/v1/topics/${encodeURIComponent(t)}/purge`,
              JSON.stringify({ beforeTime: cut }),
              'application/json',
            ),
          ),
        ),
      );
    }
    await expect(total);

    status = 'reconnect storm';
    const s0 = performance.now();
    const resumedP = Promise.all(
      workers.map((w) => {
        const r = w.next('resumed');
        w.proc.send({ cmd: 'resume', deadlineMs } satisfies ToStormWorker);
        return r as Promise<Extract<FromStormWorker, { type: 'resumed' }>>;
      }),
    );
    // Events keep coming while everyone reconnects: one per topic per round, G rounds.
    const during = (async () => {
      for (let k = 0; k < G; k++) await publishAll(G + 2 + k, 1);
    })();
    const resumed = await within('reconnect', resumedP);
    const reconnectSeconds = (performance.now() - s0) / 1000;
    await within('publish', during);
    // A last event after everyone is back: a connection that missed the gap sees it as one.
    await within('publish', publishAll(total, 1));
    status = 'recovery';
    const open = resumed.reduce((n, r) => n + r.open, 0);
    let recoverySeconds: number | null = null;
    try {
      await until('recovery', () => totals().complete >= open);
      recoverySeconds = (performance.now() - s0) / 1000;
    } catch (err) {
      if (aborted) throw err;
    }
    // Late duplicates would land after the last event: give them a moment to show.
    await sleep(500);
    const afterStorm = server?.();
    const end = await Promise.all(
      workers.map((w) => {
        const c = w.next('collect');
        w.proc.send({ cmd: 'collect' } satisfies ToStormWorker);
        return c as Promise<StormCollect>;
      }),
    );
    const sum = (f: (c: StormCollect) => number): number => end.reduce((n, c) => n + f(c), 0);
    const firstError = resumed.find((r) => r.error)?.error;
    result.storm = {
      gapPerTopic: G,
      eventsPerConnection: total,
      reconnectSeconds: round2(reconnectSeconds),
      resumesPerSec: Math.round(open / reconnectSeconds),
      recoverySeconds: recoverySeconds === null ? null : round2(recoverySeconds),
      resumed: open,
      notResumed: sum((c) => c.notResumed),
      retries: sum((c) => c.retries),
      ...(firstError === undefined ? {} : { firstError }),
      complete: sum((c) => c.complete),
      events: sum((c) => c.events),
      gaps: sum((c) => c.gaps),
      duplicates: sum((c) => c.duplicates),
      resets: sum((c) => c.resets),
      broken: sum((c) => c.broken),
    };
    if (result.server && afterStorm) result.server.afterStorm = memory(afterStorm);
    result.ok =
      result.ok &&
      open === connected &&
      recoverySeconds !== null &&
      result.storm.gaps === 0 &&
      result.storm.duplicates === 0 &&
      result.storm.complete === connected;
  }
}

/** The human-readable report. */
export function formatStorm(r: StormResult): string {
  const mib = (k: number): string => `${(k / 1024).toFixed(1)} MiB`;
  const lines = [
    `target ${r.target} ${r.url} | ${r.subscribers} idle SSE connections on ${r.topics} topic(s) from ${r.processes} process(es) and ${r.addresses} source address(es)`,
    `connected ${r.connected}/${r.subscribers} in ${r.connectSeconds}s (${r.connectsPerSec}/s)${r.connectFailed ? `, ${r.connectFailed} failed (${r.connectError ?? ''})` : ''}`,
    `held ${r.hold.seconds}s: ${r.hold.heartbeats} heartbeats, ${r.hold.heartbeatsMinPerConnection}–${r.hold.heartbeatsMaxPerConnection} per connection, ${r.hold.connectionsWithoutHeartbeat} connection(s) without one, ${r.hold.dropped} dropped`,
  ];
  if (r.server) {
    const s = r.server;
    lines.push(
      `server (${s.held.processes} processes) RSS ${mib(s.before.rssKiB)} before, ${mib(s.held.rssKiB)} held: ${s.perConnectionKiB.rssDelta} KiB per connection (after − before), ${s.perConnectionKiB.rssTotal} KiB (after / N)`,
      `server PSS ${mib(s.before.pssKiB)} before, ${mib(s.held.pssKiB)} held: ${s.perConnectionKiB.pssDelta} KiB per connection (after − before), ${s.perConnectionKiB.pssTotal} KiB (after / N)`,
    );
    if (s.afterStorm) lines.push(`server RSS after the storm ${mib(s.afterStorm.rssKiB)}`);
  }
  if (r.kernel) {
    lines.push(
      `kernel: ${r.kernel.tcpInUse} TCP sockets in use, ${mib(r.kernel.tcpMemKiB)} of TCP buffers (both ends)`,
    );
  }
  lines.push(
    `generator RSS ${mib(r.generator.rssKiB)} (${r.generator.perConnectionKiB} KiB per connection)`,
  );
  if (r.storm) {
    const s = r.storm;
    lines.push(
      `storm: ${s.resumed}/${r.connected} resumed in ${s.reconnectSeconds}s (${s.resumesPerSec}/s, ${s.retries} retried attempt(s)${s.firstError ? `, first: ${s.firstError}` : ''}); every event at every connection after ${s.recoverySeconds === null ? 'never' : `${s.recoverySeconds}s`}`,
      `storm check: ${s.complete}/${r.connected} complete (${s.eventsPerConnection} events each), gaps ${s.gaps}, duplicates/reordered ${s.duplicates}, resets ${s.resets}, broken connections ${s.broken}`,
    );
  }
  if (r.stormError) lines.push(`storm stopped: ${r.stormError}`);
  lines.push(r.ok ? 'ok' : 'FAIL');
  return lines.join('\n') + '\n';
}
