/**
 * A `rill bench storm` worker process: holds its share of many idle SSE connections, counts the
 * heartbeats each one receives, drops them all on command and reconnects them with
 * `Last-Event-ID`, checking per connection that the events' counters arrive with no gap, no
 * duplicate and in order.
 *
 * Memory per connection is kept small on purpose (100,000 connections over a few processes): a
 * bare TCP socket with a hand-written GET, a de-chunker closure, and a slot in a few typed arrays;
 * no HTTP client, no per-connection object of its own.
 */
import net from 'node:net';
import { dechunker } from './scan.js';

/** The key of the counter in every payload the storm publishes: `{"sn":<n>}`. */
export const STORM_MARKER = '"sn":';

export interface StormWorkerSpec {
  /** Index of this worker among `processes`. */
  index: number;
  processes: number;
  /** Connections over all workers; this one holds those with `global % processes === index`. */
  total: number;
  host: string;
  port: number;
  /** Request path per topic (connection `global` follows topic `global % paths.length`). */
  paths: string[];
  /** Source addresses; connection `global` binds `addresses[global % addresses.length]`. */
  addresses: string[];
  headers: Record<string, string>;
  /** Connection attempts in flight at once while opening. */
  connectConcurrency: number;
  /** Connection attempts in flight at once during the reconnect storm. */
  stormConcurrency: number;
  /**
   * First local port of the explicit port plan (0: let the kernel pick). The kernel's own pick
   * for a socket bound to a source address searches the port range under a lock, which grew to
   * most of the generator's CPU past ~8,000 connections per address; a port chosen here is one
   * bind.
   */
  portBase: number;
}

/**
 * The local port of connection `global` in `round` (0: the first connection, 1: the reconnect):
 * consecutive per source address, the reconnect on other ports than the first connection, whose
 * ports wait in TIME_WAIT after the drop.
 */
export function localPort(
  global: number,
  round: number,
  addresses: number,
  total: number,
  base: number,
): number {
  if (base === 0) return 0;
  const perAddress = Math.ceil(total / addresses);
  const k = Math.floor(global / addresses);
  return base + ((round * perAddress + k) % (65_535 - base));
}

export type ToStormWorker =
  | { cmd: 'open'; spec: StormWorkerSpec }
  | { cmd: 'drop' }
  | { cmd: 'resume'; deadlineMs: number }
  | { cmd: 'expect'; total: number }
  | { cmd: 'collect' }
  | { cmd: 'stop' };

export interface StormProgress {
  type: 'progress';
  /** Connections open now (a 200 received, not closed). */
  open: number;
  failed: number;
  /** Closed by the server or the network outside a drop. */
  closed: number;
  heartbeats: number;
  events: number;
  /** Connections whose counter reached the `expect`ed total. */
  complete: number;
  /** Reconnect attempts that failed and were retried. */
  retries: number;
  error?: string;
}

export interface StormCollect {
  type: 'collect';
  connections: number;
  heartbeats: number;
  /** Fewest and most heartbeats one connection received. */
  heartbeatsMin: number;
  heartbeatsMax: number;
  /** Connections that received no heartbeat. */
  withoutHeartbeat: number;
  events: number;
  /** Events skipped: a counter that jumps by k + 1 counts k. */
  gaps: number;
  /** Counters not above the last one seen: duplicates or events out of order. */
  duplicates: number;
  /** Frames of event type `reset` (the server said a resume could not continue). */
  resets: number;
  /** Connections with a gap or duplicate. */
  broken: number;
  complete: number;
  retries: number;
  /** Connections that could not reconnect before the deadline. */
  notResumed: number;
}

export type FromStormWorker =
  | StormProgress
  | { type: 'opened'; open: number; failed: number; error?: string }
  | { type: 'dropped' }
  | { type: 'resumed'; open: number; notResumed: number; error?: string }
  | StormCollect;

const PROGRESS_MS = 500;
const HEAD_LIMIT = 16_384;
const FRAME_LIMIT = 65_536;
const MARKER_LEN = STORM_MARKER.length;

/** What one SSE frame (the text between blank lines) is, and the counter it carries. */
export function readFrame(frame: string): {
  heartbeat: boolean;
  id?: string;
  reset: boolean;
  n?: number;
} {
  if (frame.length === 0 || frame.charCodeAt(0) === 0x3a /* ':' */) {
    return { heartbeat: frame.length > 0, reset: false };
  }
  let id: string | undefined;
  const idAt = frame.startsWith('id: ') ? 0 : frame.indexOf('\nid: ') + 1;
  if (idAt === 0 ? frame.startsWith('id: ') : idAt > 0) {
    const end = frame.indexOf('\n', idAt);
    id = frame.slice(idAt + 4, end === -1 ? undefined : end);
  }
  const reset = frame.startsWith('event: reset') || frame.includes('\nevent: reset');
  const at = frame.indexOf(STORM_MARKER);
  const n = at === -1 || reset ? undefined : parseInt(frame.slice(at + MARKER_LEN), 10);
  return {
    heartbeat: false,
    ...(id === undefined ? {} : { id }),
    reset,
    ...(n === undefined || Number.isNaN(n) ? {} : { n }),
  };
}

/**
 * Per-connection ordering check: updates `last` (the highest counter seen) and returns how the
 * counter `n` lands — the gap it opens, or a duplicate / out-of-order arrival.
 */
export function checkCounter(last: number, n: number): { last: number; gap: number; dup: boolean } {
  if (n <= last) return { last, gap: 0, dup: true };
  return { last: n, gap: n - last - 1, dup: false };
}

function run(): void {
  const send = (m: FromStormWorker): void => {
    process.send?.(m);
  };
  let spec: StormWorkerSpec;
  let n = 0;
  let sockets: Array<net.Socket | null> = [];
  let lastN = new Int32Array(0);
  let hb = new Uint32Array(0);
  let gaps = new Uint32Array(0);
  let dups = new Uint32Array(0);
  let lastId: Array<string | undefined> = [];
  let carry: string[] = [];
  let open = 0;
  let failed = 0;
  let closed = 0;
  let heartbeats = 0;
  let events = 0;
  let resets = 0;
  let retries = 0;
  let expectTotal = Number.POSITIVE_INFINITY;
  let complete = 0;
  let dropping = false;
  let firstError: string | undefined;
  let timer: NodeJS.Timeout | undefined;

  const globalOf = (i: number): number => spec.index + i * spec.processes;

  const feed = (i: number, text: string): void => {
    let buf = carry[i]! + text;
    let end: number;
    let from = 0;
    while ((end = buf.indexOf('\n\n', from)) !== -1) {
      const f = readFrame(buf.slice(from, end));
      from = end + 2;
      if (f.heartbeat) {
        hb[i]!++;
        heartbeats++;
        continue;
      }
      if (f.id !== undefined) lastId[i] = f.id;
      if (f.reset) resets++;
      if (f.n === undefined) continue;
      events++;
      const c = checkCounter(lastN[i]!, f.n);
      if (c.dup) dups[i]!++;
      else {
        gaps[i]! += c.gap;
        const before = lastN[i]!;
        lastN[i] = c.last;
        if (before < expectTotal && c.last >= expectTotal) complete++;
      }
    }
    buf = from === 0 ? buf : buf.slice(from);
    if (buf.length > FRAME_LIMIT) throw new Error('SSE frame too large');
    carry[i] = buf;
  };

  /** Opens connection i (with its Last-Event-ID once it has one); `done(ok)` once settled. */
  const connect = (
    i: number,
    done: (ok: boolean, why?: string) => void,
    round = 0,
    planned = true,
  ): void => {
    const g = globalOf(i);
    const path = spec.paths[g % spec.paths.length]!;
    const port = planned
      ? localPort(g, round, spec.addresses.length, spec.total, spec.portBase)
      : 0;
    const sock = net.connect({
      host: spec.host,
      port: spec.port,
      localAddress: spec.addresses[g % spec.addresses.length]!,
      ...(port === 0 ? {} : { localPort: port }),
    });
    sockets[i] = sock;
    carry[i] = '';
    let settled = false;
    let isOpen = false;
    let head: Buffer | null = Buffer.alloc(0);
    let body: ((b: Buffer) => void) | null = null;
    const settle = (ok: boolean, why?: string): void => {
      if (settled) return;
      settled = true;
      isOpen = ok;
      if (ok) open++;
      done(ok, why);
    };
    sock.on('connect', () => {
      let req = `GET ${path} HTTP/1.1\r\nHost: ${spec.host}:${spec.port}\r\n`;
      for (const [k, v] of Object.entries(spec.headers)) req += `${k}: ${v}\r\n`;
      const id = lastId[i];
      if (id !== undefined) req += `Last-Event-ID: ${id}\r\n`;
      sock.write(req + '\r\n');
    });
    sock.on('data', (chunk: Buffer) => {
      if (body !== null) {
        body(chunk);
        return;
      }
      head = Buffer.concat([head!, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) {
        if (head.length > HEAD_LIMIT) sock.destroy(new Error('response headers too large'));
        return;
      }
      const headText = head.subarray(0, end).toString('latin1');
      const status = headText.slice(0, headText.indexOf('\r\n'));
      const rest = head.subarray(end + 4);
      head = null;
      if (!/^HTTP\/1\.[01] 200 /.test(status)) {
        settle(false, `${status} from ${path}`);
        sock.destroy();
        return;
      }
      const text = (b: Buffer): void => feed(i, b.toString('latin1'));
      body = /\r\ntransfer-encoding:[^\r]*chunked/i.test(headText) ? dechunker(text) : text;
      settle(true);
      if (rest.length > 0) body(rest);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (dropping || settled) return;
      if (port !== 0 && err.code === 'EADDRINUSE') {
        // The planned port is taken (another program, or TIME_WAIT of an earlier run): this
        // connection lets the kernel pick.
        settled = true;
        connect(i, done, round, false);
        return;
      }
      settle(false, err.message);
    });
    sock.on('close', () => {
      if (sockets[i] === sock) sockets[i] = null;
      if (!settled) {
        settle(false, 'closed before the response');
        return;
      }
      if (!isOpen) return;
      isOpen = false;
      open--;
      if (!dropping) closed++;
    });
  };

  /** Opens `indices` with `concurrency` attempts in flight; resolves when all have settled. */
  const openAll = (
    indices: number[],
    concurrency: number,
    attempt: (i: number, done: (ok: boolean, why?: string) => void) => void,
  ): Promise<void> =>
    new Promise((resolve) => {
      let next = 0;
      let inFlight = 0;
      let finished = 0;
      if (indices.length === 0) resolve();
      const pump = (): void => {
        while (inFlight < concurrency && next < indices.length) {
          const i = indices[next++]!;
          inFlight++;
          attempt(i, () => {
            inFlight--;
            finished++;
            if (finished === indices.length) resolve();
            else setImmediate(pump);
          });
        }
      };
      pump();
    });

  const progress = (): StormProgress => ({
    type: 'progress',
    open,
    failed,
    closed,
    heartbeats,
    events,
    complete,
    retries,
    ...(firstError === undefined ? {} : { error: firstError }),
  });

  process.on('message', (m: ToStormWorker) => {
    if (m.cmd === 'open') {
      spec = m.spec;
      n = spec.index < spec.total ? Math.ceil((spec.total - spec.index) / spec.processes) : 0;
      sockets = new Array<net.Socket | null>(n).fill(null);
      lastN = new Int32Array(n);
      hb = new Uint32Array(n);
      gaps = new Uint32Array(n);
      dups = new Uint32Array(n);
      lastId = new Array<string | undefined>(n).fill(undefined);
      carry = new Array<string>(n).fill('');
      timer = setInterval(() => send(progress()), PROGRESS_MS);
      const all = Array.from({ length: n }, (_, i) => i);
      void openAll(all, spec.connectConcurrency, (i, done) =>
        connect(i, (ok, why) => {
          if (!ok) {
            failed++;
            firstError ??= why;
          }
          done(ok);
        }),
      ).then(() =>
        send({
          type: 'opened',
          open,
          failed,
          ...(firstError === undefined ? {} : { error: firstError }),
        }),
      );
    } else if (m.cmd === 'drop') {
      dropping = true;
      for (const s of sockets) s?.destroy();
      send({ type: 'dropped' });
    } else if (m.cmd === 'resume') {
      dropping = false;
      const deadline = Date.now() + m.deadlineMs;
      let notResumed = 0;
      let error: string | undefined;
      // Like a real client: a failed reconnect is retried after a short jittered backoff, until
      // the phase's deadline.
      const attempt = (i: number, done: (ok: boolean) => void, tries = 0): void => {
        connect(
          i,
          (ok, why) => {
            if (ok) {
              done(true);
              return;
            }
            retries++;
            error ??= why;
            if (Date.now() >= deadline) {
              notResumed++;
              done(false);
              return;
            }
            const wait = Math.min(2000, 100 * 2 ** Math.min(tries, 4)) * (0.5 + Math.random());
            setTimeout(() => attempt(i, done, tries + 1), wait);
          },
          1,
          tries === 0,
        );
      };
      const all = Array.from({ length: n }, (_, i) => i);
      void openAll(all, spec.stormConcurrency, attempt).then(() =>
        send({
          type: 'resumed',
          open,
          notResumed,
          ...(error === undefined ? {} : { error }),
        }),
      );
    } else if (m.cmd === 'expect') {
      expectTotal = m.total;
      complete = 0;
      for (let i = 0; i < n; i++) if (lastN[i]! >= expectTotal) complete++;
      send(progress());
    } else if (m.cmd === 'collect') {
      let min = n > 0 ? Number.POSITIVE_INFINITY : 0;
      let max = 0;
      let without = 0;
      let g = 0;
      let d = 0;
      let broken = 0;
      for (let i = 0; i < n; i++) {
        const h = hb[i]!;
        if (h < min) min = h;
        if (h > max) max = h;
        if (h === 0) without++;
        g += gaps[i]!;
        d += dups[i]!;
        if (gaps[i]! > 0 || dups[i]! > 0) broken++;
      }
      send({
        type: 'collect',
        connections: n,
        heartbeats,
        heartbeatsMin: min,
        heartbeatsMax: max,
        withoutHeartbeat: without,
        events,
        gaps: g,
        duplicates: d,
        resets,
        broken,
        complete,
        retries,
        notResumed: n - open,
      });
    } else if (m.cmd === 'stop') {
      if (timer) clearInterval(timer);
      dropping = true;
      for (const s of sockets) s?.destroy();
      process.disconnect();
      setTimeout(() => process.exit(0), 200).unref();
    }
  });
  process.on('disconnect', () => process.exit(0));
}

// Imported by the unit tests for readFrame/checkCounter; only a forked process runs the worker.
if (process.send !== undefined && process.argv[1]?.endsWith('stormworker.js')) run();
