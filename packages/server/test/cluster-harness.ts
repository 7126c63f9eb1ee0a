import http from 'node:http';
import WebSocket from 'ws';

/**
 * Clients for the cluster tests: subscribers on SSE, WebSocket and NDJSON that follow a list of
 * nodes (moving to the next when theirs dies and resuming from their cursor), a round-robin
 * publisher with idempotency keys, and the checker that counts what each subscriber got.
 */

export type Transport = 'sse' | 'ws' | 'ndjson';

/** What one subscriber received, in arrival order. */
export class Subscriber {
  /** seq → how many times it arrived. */
  readonly counts = new Map<number, number>();
  seqs: number[] = [];
  /** Payload `i` per seq, to check each seq carries the event its publisher was told about. */
  readonly payload = new Map<number, number>();
  lastSeq = 0;
  epoch: string | null = null;
  resets = 0;
  errors: string[] = [];
  reconnects = 0;
  nodeIndex: number;
  private closed = false;
  private current: { close: () => void } | undefined;
  private waiters: (() => void)[] = [];

  constructor(
    readonly id: number,
    readonly transport: Transport,
    readonly topic: string,
    readonly nodes: string[],
    startNode: number,
    /** Nodes known dead: skipped when moving on. */
    readonly dead: Set<number>,
  ) {
    this.nodeIndex = startNode;
  }

  /** Resolves once the first connection is open (the stream started). */
  start(): Promise<void> {
    return this.connect();
  }

  /** Resolves when `lastSeq` reached `seq`. */
  until(seq: number): Promise<void> {
    if (this.lastSeq >= seq) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.lastSeq >= seq) {
          this.waiters.splice(this.waiters.indexOf(check), 1);
          resolve();
        }
      };
      this.waiters.push(check);
    });
  }

  close(): void {
    this.closed = true;
    this.current?.close();
  }

  private cursor(): string | undefined {
    return this.epoch === null ? undefined : `${this.topic}:${this.epoch}:${this.lastSeq}`;
  }

  private onEvent(seq: number, epoch: string, i: number): void {
    this.counts.set(seq, (this.counts.get(seq) ?? 0) + 1);
    this.seqs.push(seq);
    this.payload.set(seq, i);
    if (seq > this.lastSeq) this.lastSeq = seq;
    this.epoch = epoch;
    for (const w of [...this.waiters]) w();
  }

  private onEnd(): void {
    if (this.closed) return;
    this.reconnects++;
    // The node died: move to the next live one and resume from the cursor.
    let next = this.nodeIndex;
    do next = (next + 1) % this.nodes.length;
    while (this.dead.has(next) && next !== this.nodeIndex);
    this.nodeIndex = next;
    const retry = (): void => {
      if (this.closed) return;
      this.connect().catch(() => {
        setTimeout(retry, 100).unref();
      });
    };
    retry();
  }

  private connect(): Promise<void> {
    const base = this.nodes[this.nodeIndex]!;
    if (this.transport === 'ws') return this.connectWs(base);
    return this.connectHttp(base);
  }

  private connectHttp(base: string): Promise<void> {
    const cursor = this.cursor();
    const ndjson = this.transport === 'ndjson';
    const q = new URLSearchParams({ format: ndjson ? 'ndjson' : 'sse' });
    if (cursor === undefined) q.set('from', 'earliest');
    else if (ndjson) q.set('cursor', cursor);
    const headers: Record<string, string> = {};
    if (cursor !== undefined && !ndjson) headers['last-event-id'] = cursor;
    return new Promise((resolve, reject) => {
      const req = http.get(`${base}/v1/topics/${this.topic}/stream?${q}`, { headers }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`status ${res.statusCode}`));
          return;
        }
        this.current = { close: () => req.destroy() };
        resolve();
        res.setEncoding('utf8');
        let partial = '';
        let frameEvent: string | undefined;
        res.on('data', (chunk: string) => {
          const lines = (partial + chunk).split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) {
            if (ndjson) this.ndjsonLine(line);
            else frameEvent = this.sseLine(line, frameEvent);
          }
        });
        res.on('close', () => this.onEnd());
        res.on('error', () => undefined);
      });
      // After the response started, a reset connection ends in 'close' above; before, it rejects.
      req.on('error', reject);
    });
  }

  /** SSE lines: `event:` names a control frame; `data:` carries the event JSON. */
  private sseLine(line: string, frameEvent: string | undefined): string | undefined {
    if (line.startsWith('event: ')) return line.slice(7);
    if (line.startsWith('data: ')) {
      if (frameEvent === 'reset') this.resets++;
      else if (frameEvent === 'error') this.errors.push(line.slice(6));
      else this.eventJson(line.slice(6));
      return frameEvent;
    }
    if (line === '') return undefined;
    return frameEvent;
  }

  private ndjsonLine(line: string): void {
    if (line === '') return;
    if (line.startsWith('{"reset"')) this.resets++;
    else if (line.startsWith('{"error"')) this.errors.push(line);
    else this.eventJson(line);
  }

  private eventJson(json: string): void {
    const ev = JSON.parse(json) as { seq: number; id: string; data: { i: number } };
    const epoch = ev.id.split(':')[1]!;
    this.onEvent(ev.seq, epoch, ev.data.i);
  }

  private connectWs(base: string): Promise<void> {
    const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/ws`, 'rill.v1');
    const cursor = this.cursor();
    return new Promise((resolve, reject) => {
      let opened = false;
      ws.on('open', () => {
        opened = true;
        this.current = { close: () => ws.terminate() };
        ws.send(
          JSON.stringify(
            cursor === undefined
              ? { op: 'subscribe', id: 1, topics: [this.topic], from: 'earliest' }
              : { op: 'subscribe', id: 1, topics: [this.topic], cursor },
          ),
        );
      });
      ws.on('message', (raw: Buffer) => {
        const m = JSON.parse(raw.toString()) as {
          op: string;
          event?: { seq: number; id: string; data: { i: number } };
        };
        if (m.op === 'subscribed') resolve();
        else if (m.op === 'event' && m.event) {
          this.onEvent(m.event.seq, m.event.id.split(':')[1]!, m.event.data.i);
        } else if (m.op === 'reset') this.resets++;
        else if (m.op === 'error') this.errors.push(raw.toString());
      });
      ws.on('error', (err) => {
        if (!opened) reject(err);
      });
      ws.on('close', () => {
        if (opened) this.onEnd();
      });
    });
  }
}

/** Lost, duplicated and out-of-order deliveries of one subscriber against `expected` seqs 1..n. */
export function check(
  sub: Subscriber,
  total: number,
  expectedPayload: Map<number, number>,
): { lost: number; duplicated: number; reordered: number; wrong: number } {
  let lost = 0;
  let duplicated = 0;
  for (let seq = 1; seq <= total; seq++) {
    const c = sub.counts.get(seq) ?? 0;
    if (c === 0) lost++;
    else duplicated += c - 1;
  }
  let reordered = 0;
  let prev = 0;
  for (const s of sub.seqs) {
    if (s <= prev) reordered++;
    else prev = s;
  }
  let wrong = 0;
  for (const [seq, i] of sub.payload) if (expectedPayload.get(seq) !== i) wrong++;
  return { lost, duplicated, reordered, wrong };
}

/** One publish request: events `i` of one topic with keys `e<i>`, acknowledged with their seqs. */
export async function publishBatch(
  url: string,
  topic: string,
  items: number[],
): Promise<{ i: number; seq: number; duplicate: boolean }[]> {
  const res = await fetch(`${url}/v1/topics/${topic}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(items.map((i) => ({ key: `e${i}`, data: { i } }))),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as { events?: { seq: number; duplicate: boolean }[] };
  if (res.status !== 201 || !body.events) throw new Error(`publish: status ${res.status}`);
  return body.events.map((e, k) => ({ i: items[k]!, seq: e.seq, duplicate: e.duplicate }));
}
