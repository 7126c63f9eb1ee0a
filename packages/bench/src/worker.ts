/**
 * A bench worker process: holds a share of the subscriber connections, counts what they receive
 * with {@link MarkerScanner} and reports to the parent over IPC. Several run side by side because
 * one process may hold at most ~20,000 open files here, and so the generator uses every core the
 * parent leaves free.
 */
import net from 'node:net';
import { WebSocket } from 'ws';
import { encodeHistogram, newHistogram } from './histogram.js';
import { MarkerScanner, dechunker } from './scan.js';

/** How a worker's connections subscribe and what they receive. */
export type SubMode =
  /** A streaming GET (SSE or NDJSON): ready when a 200 arrives. */
  | 'http'
  /** A WebSocket; with `hello`, the first message sent, ready on the first reply. */
  | 'ws'
  /** Socket.IO over its WebSocket transport (Engine.IO v4). */
  | 'socketio';

export interface ConnSpec {
  url: string;
  /** First WebSocket message (a subscribe request). */
  hello?: string;
}

export interface WorkerSpec {
  mode: SubMode;
  conns: ConnSpec[];
  headers: Record<string, string>;
  /** WebSocket subprotocol to offer, if any. */
  protocol?: string;
  sample: number;
  /** Connection attempts in flight at once. */
  connectConcurrency: number;
}

export type ToWorker = { cmd: 'start'; spec: WorkerSpec } | { cmd: 'collect' } | { cmd: 'stop' };

export interface Progress {
  type: 'progress';
  connected: number;
  failed: number;
  closed: number;
  delivered: number;
  /** First failure's message, for the report. */
  error?: string;
}

export type FromWorker =
  | Progress
  | { type: 'ready'; connected: number; failed: number; error?: string }
  | { type: 'collect'; delivered: number; histogram: string };

const PROGRESS_MS = 250;

function run(): void {
  const send = (m: FromWorker): void => {
    process.send?.(m);
  };
  let hist = newHistogram();
  const record = (us: number): void => hist.recordValue(us);
  const scanners: MarkerScanner[] = [];
  const closers: Array<() => void> = [];
  let connected = 0;
  let failed = 0;
  let closed = 0;
  let firstError: string | undefined;
  let collectedUpTo = 0;
  let timer: NodeJS.Timeout | undefined;

  const delivered = (): number => {
    let n = 0;
    for (const s of scanners) n += s.count;
    return n;
  };
  const fail = (why: string): void => {
    failed++;
    firstError ??= why;
  };

  function open(spec: WorkerSpec, c: ConnSpec, done: () => void): void {
    const scanner = new MarkerScanner(spec.sample, record);
    let settled = false;
    const ready = (ok: boolean, why?: string): void => {
      if (settled) return;
      settled = true;
      if (ok) {
        connected++;
        scanners.push(scanner);
      } else fail(why ?? 'failed');
      done();
    };
    const lost = (): void => {
      if (settled) closed++;
      else ready(false, 'closed before ready');
    };
    if (spec.mode === 'http') {
      // A bare TCP socket and a hand-written GET instead of http.get: the HTTP client's parser
      // and stream per connection cost as much CPU as the server being measured. Only the status
      // line and Transfer-Encoding are read; a chunked body goes through a small de-chunker, so
      // a server that splits an event over two chunks (Pushpin does) cannot cut a timestamp.
      const u = new URL(c.url);
      const sock = net.connect(Number(u.port || 80), u.hostname);
      closers.push(() => sock.destroy());
      let head: Buffer | null = Buffer.alloc(0);
      let body: (b: Buffer) => void = (b) => scanner.push(b);
      sock.setNoDelay(true);
      sock.on('connect', () => {
        let req = `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n`;
        for (const [k, v] of Object.entries(spec.headers)) req += `${k}: ${v}\r\n`;
        sock.write(req + '\r\n');
      });
      sock.on('data', (chunk: Buffer) => {
        if (head === null) {
          body(chunk);
          return;
        }
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) {
          if (head.length > 16384) sock.destroy(new Error('response headers too large'));
          return;
        }
        const headText = head.subarray(0, end).toString('latin1');
        const status = headText.slice(0, headText.indexOf('\r\n'));
        const rest = head.subarray(end + 4);
        head = null;
        if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(headText)) {
          body = dechunker((b) => scanner.push(b));
        }
        if (!/^HTTP\/1\.[01] 200 /.test(status)) {
          ready(false, `${status} from ${c.url}`);
          sock.destroy();
          return;
        }
        ready(true);
        if (rest.length > 0) body(rest);
      });
      sock.on('close', lost);
      sock.on('error', (err) => ready(false, err.message));
      return;
    }
    const ws = new WebSocket(c.url, spec.protocol ? [spec.protocol] : [], {
      perMessageDeflate: false,
      headers: spec.headers,
      // The generator only counts markers; validating every message's UTF-8 would make it the
      // bottleneck of a WebSocket fan-out instead of the server.
      skipUTF8Validation: true,
    });
    closers.push(() => ws.terminate());
    ws.on('error', (err) => ready(false, err.message));
    ws.on('close', lost);
    if (spec.mode === 'ws') {
      ws.on('open', () => {
        if (c.hello === undefined) ready(true);
        else ws.send(c.hello);
      });
      ws.on('message', (data: Buffer) => {
        if (!settled) {
          // The reply to the subscribe request: `subscribed`, or an error.
          const text = data.toString();
          if (text.includes('"error"')) ready(false, text.slice(0, 200));
          else ready(true);
        }
        scanner.push(data);
      });
      return;
    }
    // Socket.IO (Engine.IO v4 packet types): 0 open, 2 ping, 3 pong, 4 message; then Socket.IO's
    // 0 connect and 2 event. Hand-written so the bench needs no Socket.IO client of its own.
    ws.on('message', (data: Buffer) => {
      const t = data[0];
      if (t === 0x34 /* '4' message */) {
        if (data[1] === 0x32 /* '2' event */) scanner.push(data);
        else if (data[1] === 0x30 /* '0' connected */) ready(true);
        else if (data[1] === 0x34 /* '4' connect error */) ready(false, data.toString());
      } else if (t === 0x30 /* '0' open */) ws.send('40');
      else if (t === 0x32 /* '2' ping */) ws.send('3');
    });
  }

  process.on('message', (m: ToWorker) => {
    if (m.cmd === 'start') {
      const spec = m.spec;
      let next = 0;
      let inFlight = 0;
      let finished = 0;
      const pump = (): void => {
        while (inFlight < spec.connectConcurrency && next < spec.conns.length) {
          const c = spec.conns[next++]!;
          inFlight++;
          open(spec, c, () => {
            inFlight--;
            finished++;
            if (finished === spec.conns.length) {
              send({
                type: 'ready',
                connected,
                failed,
                ...(firstError === undefined ? {} : { error: firstError }),
              });
            } else setImmediate(pump);
          });
        }
      };
      if (spec.conns.length === 0) send({ type: 'ready', connected: 0, failed: 0 });
      pump();
      timer = setInterval(() => {
        send({
          type: 'progress',
          connected,
          failed,
          closed,
          delivered: delivered(),
          ...(firstError === undefined ? {} : { error: firstError }),
        });
      }, PROGRESS_MS);
    } else if (m.cmd === 'collect') {
      const total = delivered();
      const h = hist;
      hist = newHistogram();
      send({ type: 'collect', delivered: total - collectedUpTo, histogram: encodeHistogram(h) });
      collectedUpTo = total;
    } else if (m.cmd === 'stop') {
      if (timer) clearInterval(timer);
      for (const c of closers) c();
      process.disconnect();
      setTimeout(() => process.exit(0), 200).unref();
    }
  });
  process.on('disconnect', () => process.exit(0));
}

run();
