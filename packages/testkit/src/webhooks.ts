import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import { verifySignature } from '../../server/src/index.js';

/** What the receiver does with one request. */
export type Answer = number | 'hang';

export interface ReceivedRequest {
  webhook: string | undefined;
  delivery: string | undefined;
  attempt: number;
  /** The `rill-signature` header checked against the raw body with the receiver's secrets. */
  verified: boolean;
  answer: Answer;
  events: WebhookEvent[];
}

export interface WebhookEvent {
  id: string;
  topic: string;
  seq: number;
  type?: string;
  data: unknown;
}

/**
 * A webhook receiver over loopback (node:http): verifies each request's signature with
 * {@link verifySignature} from `@rill/server`'s public entry, answers as `plan` says (one answer
 * per request, then 200), and keeps what it was sent. `accepted` lists the events of the requests it
 * answered with a 2xx, in arrival order: what an application would have processed.
 */
export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];
  readonly accepted: WebhookEvent[] = [];
  /** Answers for the next requests, in order (a status code or 'hang'); 200 when empty. */
  plan: Answer[] = [];
  /** The answer once the plan is used up. */
  otherwise: Answer = 200;
  private readonly hung = new Set<http.ServerResponse>();

  private constructor(
    private readonly server: http.Server,
    readonly secrets: string[],
  ) {}

  static async start(secrets: string[]): Promise<WebhookReceiver> {
    const server = http.createServer();
    const r = new WebhookReceiver(server, secrets);
    server.on('request', (req, res) => r.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const answer = this.plan.length > 0 ? this.plan.shift()! : this.otherwise;
      let events: WebhookEvent[];
      try {
        events = (JSON.parse(raw.toString('utf8')) as { events: WebhookEvent[] }).events;
      } catch {
        events = [];
      }
      const sig = req.headers['rill-signature'];
      this.requests.push({
        webhook: req.headers['rill-webhook'] as string | undefined,
        delivery: req.headers['rill-delivery'] as string | undefined,
        attempt: Number(req.headers['rill-attempt']),
        verified: verifySignature(typeof sig === 'string' ? sig : undefined, raw, this.secrets).ok,
        answer,
        events,
      });
      if (answer === 'hang') {
        this.hung.add(res);
        res.on('close', () => this.hung.delete(res));
        return;
      }
      if (answer >= 200 && answer < 300) this.accepted.push(...events);
      res.writeHead(answer, { 'content-type': 'text/plain' }).end('answer\n');
    });
  }

  /** The distinct event ids accepted. */
  acceptedIds(): Set<string> {
    return new Set(this.accepted.map((e) => e.id));
  }

  async close(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * The checker: every request was signed right; after dedupe by id the accepted events are exactly
 * `expected` (topic → seqs); and per topic they arrived in order with nothing skipped: each event
 * is either the next seq or one already accepted (a redelivery).
 */
export function checkDeliveries(
  receiver: WebhookReceiver,
  expected: ReadonlyMap<string, readonly number[]>,
): void {
  expect(receiver.requests.length).toBeGreaterThan(0);
  expect(receiver.requests.filter((r) => !r.verified)).toEqual([]);
  const highest = new Map<string, number>();
  const got = new Map<string, Set<number>>();
  for (const e of receiver.accepted) {
    const seqs = expected.get(e.topic);
    if (seqs === undefined) throw new Error(`got an event of ${e.topic}, which it should not`);
    const top = highest.get(e.topic) ?? seqs[0]! - 1;
    if (e.seq > top + 1) {
      throw new Error(`${e.topic}: got seq ${e.seq} after ${top}: ${top + 1} was skipped`);
    }
    highest.set(e.topic, Math.max(top, e.seq));
    let s = got.get(e.topic);
    if (!s) got.set(e.topic, (s = new Set()));
    s.add(e.seq);
  }
  const sorted = new Map([...got].map(([t, s]) => [t, [...s].sort((a, b) => a - b)]));
  expect(Object.fromEntries(sorted)).toEqual(Object.fromEntries(expected));
}
