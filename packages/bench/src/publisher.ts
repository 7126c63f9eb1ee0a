/**
 * Publishers at a fixed offered rate (events/s), or as fast as `concurrency` allows (`rate` 0).
 * Every payload carries its send time for the latency histogram (see scan.ts).
 */
import http from 'node:http';
import { WebSocket } from 'ws';
import { benchPayload } from './scan.js';

export type PublishMode =
  /** Rill: one event per `POST /v1/topics/{topic}/events`. */
  | 'http'
  /** Rill: `batch` events per POST as NDJSON. */
  | 'batch'
  /** Rill: `publish` ops over one WebSocket (`rill.v1`), acknowledged. */
  | 'ws'
  /** Any peer: the bare payload POSTed to a URL template with `{topic}`. */
  | 'raw';

export interface PublisherOptions {
  mode: PublishMode;
  /** Rill base URL (http, batch, ws) or a URL template with `{topic}` (raw). */
  url: string;
  topics: string[];
  batch: number;
  /** Requests (or unacknowledged WebSocket publishes) in flight at most. */
  concurrency: number;
  padding: string;
  /** Sent as `Authorization: Bearer` on every publish request and the WebSocket handshake. */
  token?: string;
}

export interface PublishStats {
  /** Events acknowledged per topic index. */
  perTopic: number[];
  acked: number;
  errors: number;
  firstError?: string;
  /** Requests issued (HTTP) or messages sent (WS). */
  requests: number;
}

const TICK_MS = 2;

export class Publisher {
  readonly stats: PublishStats;
  private readonly agent: http.Agent;
  private ws: WebSocket | null = null;
  private inFlight = 0;
  private counter = 0;
  private topicIndex = 0;
  private readonly wsPending = new Map<number, { topic: number; n: number }>();
  private wsId = 0;
  private drainWaiters: Array<() => void> = [];

  constructor(private readonly o: PublisherOptions) {
    this.stats = { perTopic: o.topics.map(() => 0), acked: 0, errors: 0, requests: 0 };
    this.agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  }

  async open(): Promise<void> {
    if (this.o.mode !== 'ws') return;
    const url = this.o.url.replace(/^http/, 'ws').replace(/\/$/, '') + '/v1/ws';
    const ws = new WebSocket(url, ['rill.v1'], {
      perMessageDeflate: false,
      ...(this.o.token === undefined
        ? {}
        : { headers: { authorization: `Bearer ${this.o.token}` } }),
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { op: string; id?: number; error?: unknown };
      if (typeof m.id !== 'number') return;
      const p = this.wsPending.get(m.id);
      if (!p) return;
      this.wsPending.delete(m.id);
      if (m.op === 'ack') {
        this.stats.acked += p.n;
        this.stats.perTopic[p.topic]! += p.n;
      } else this.failed(JSON.stringify(m.error));
      this.done();
    });
    ws.on('close', () => {
      for (const p of this.wsPending.values()) this.failed(`WebSocket closed with ${p.n} unacked`);
      this.wsPending.clear();
    });
    this.ws = ws;
  }

  /**
   * Publishes at `rate` events/s for `seconds` (as fast as possible with rate 0), then waits for
   * every request in flight. Resolves with the events issued and the seconds it took to issue
   * them: more than `seconds` only when `concurrency` requests in flight held the schedule back.
   */
  async run(rate: number, seconds: number): Promise<{ issued: number; issueSeconds: number }> {
    const start = performance.now();
    const perReq = this.o.mode === 'batch' ? this.o.batch : 1;
    let issued = 0;
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const elapsed = (performance.now() - start) / 1000;
        const over = elapsed >= seconds;
        if (over && (rate === 0 || issued + perReq > rate * seconds)) {
          resolve();
          return;
        }
        // At the end, what the last tick still owed goes out too: the step offers rate × seconds.
        const due =
          rate === 0 ? Number.POSITIVE_INFINITY : Math.floor(Math.min(elapsed, seconds) * rate);
        while (issued + perReq <= due && this.inFlight < this.o.concurrency) {
          this.issue(perReq);
          issued += perReq;
        }
        if (rate === 0 && this.inFlight >= this.o.concurrency) {
          this.drainWaiters.push(tick);
          return;
        }
        setTimeout(tick, TICK_MS);
      };
      tick();
    });
    const issueSeconds = (performance.now() - start) / 1000;
    while (this.inFlight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
    return { issued, issueSeconds };
  }

  close(): void {
    this.agent.destroy();
    this.ws?.close();
  }

  private done(): void {
    this.inFlight--;
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  private failed(why: string): void {
    this.stats.errors++;
    this.stats.firstError ??= why;
  }

  private issue(n: number): void {
    const t = this.topicIndex;
    this.topicIndex = (t + 1) % this.o.topics.length;
    const topic = this.o.topics[t]!;
    this.inFlight++;
    this.stats.requests++;
    if (this.o.mode === 'ws') {
      const id = ++this.wsId;
      this.wsPending.set(id, { topic: t, n: 1 });
      const data = benchPayload(++this.counter, this.o.padding);
      this.ws!.send(`{"op":"publish","id":${id},"topic":"${topic}","data":${data}}`);
      return;
    }
    let url: string;
    let body: string;
    let type: string;
    if (this.o.mode === 'raw') {
      url = this.o.url.replaceAll('{topic}', encodeURIComponent(topic));
      body = benchPayload(++this.counter, this.o.padding);
      type = 'application/json';
    } else {
      url = `${this.o.url.replace(/\/$/, '')}/v1/topics/${topic}/events`;
      if (this.o.mode === 'http') {
        body = `{"data":${benchPayload(++this.counter, this.o.padding)}}`;
        type = 'application/json';
      } else {
        body = '';
        for (let i = 0; i < n; i++)
          body += `{"data":${benchPayload(++this.counter, this.o.padding)}}\n`;
        type = 'application/x-ndjson';
      }
    }
    const req = http.request(
      url,
      {
        method: 'POST',
        agent: this.agent,
        headers: {
          'content-type': type,
          'content-length': Buffer.byteLength(body),
          ...(this.o.token === undefined ? {} : { authorization: `Bearer ${this.o.token}` }),
        },
      },
      (res) => {
        const status = res.statusCode ?? 0;
        res.resume();
        res.on('end', () => {
          if (status >= 200 && status < 300) {
            this.stats.acked += n;
            this.stats.perTopic[t]! += n;
          } else this.failed(`HTTP ${status} from ${url}`);
          this.done();
        });
      },
    );
    req.on('error', (err) => {
      this.failed(err.message);
      this.done();
    });
    req.end(body);
  }
}
