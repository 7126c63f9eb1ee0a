/**
 * Stand-ins for the network in the client's unit tests (which may not open sockets): a `fetch`
 * the test answers, a WebSocket the test drives, JWT-shaped tokens. The integration tests run the
 * same behaviour against real sockets.
 */
import type { RillEvent } from '../src/index.js';

const b64url = (s: string): string => Buffer.from(s).toString('base64url');

/** A JWT-shaped token (unsigned: the client never verifies) with these claims. */
export function fakeJwt(claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}.c2ln`;
}

/** One request the fake `fetch` received. */
export interface Call {
  url: URL;
  method: string;
  headers: Headers;
  body: string | undefined;
}

/** A `fetch` whose answers the test gives, one function per call in order. */
export function scriptedFetch(): {
  fetch: typeof fetch;
  calls: Call[];
  answer: (fn: (call: Call) => Response | Promise<Response>) => void;
} {
  const calls: Call[] = [];
  const answers: Array<(call: Call) => Response | Promise<Response>> = [];
  const waiting: Array<(call: Call) => void> = [];
  const fake = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const call: Call = {
      url: new URL(String(input)),
      method: init?.method ?? 'GET',
      headers: new Headers(init?.headers),
      body: typeof init?.body === 'string' ? init.body : undefined,
    };
    calls.push(call);
    const fn = answers.shift();
    if (fn) return fn(call);
    // No answer given yet: hang like a slow server until the request is aborted.
    return new Promise<Response>((_, reject) => {
      init?.signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
      waiting.push(() => {});
    });
  };
  return { fetch: fake as typeof fetch, calls, answer: (fn) => answers.push(fn) };
}

/** A JSON answer. */
export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json' },
  });
}

/** An error answer as the server sends it. */
export function errorAnswer(status: number, code: string, retryable = false): Response {
  return json(status, { error: { code, message: `${code} (test)`, retryable } });
}

/** An SSE answer whose body the test writes. */
export function sseAnswer(): { response: Response; write: (s: string) => void; end: () => void } {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => (ctl = c) });
  const enc = new TextEncoder();
  return {
    response: new Response(body, { headers: { 'content-type': 'text/event-stream' } }),
    write: (s) => ctl.enqueue(enc.encode(s)),
    end: () => ctl.close(),
  };
}

/** Event `seq` of topic `topic` (epoch `e1`). */
export function event(topic: string, seq: number): RillEvent {
  return { topic, seq, id: `${topic}:e1:${seq}`, time: 1_795_000_000_000 + seq, data: { n: seq } };
}

/** The SSE frame of an event. */
export function sseEvent(ev: RillEvent): string {
  return `id: ${ev.id}\ndata: ${JSON.stringify(ev)}\n\n`;
}

/** A WebSocket the test drives: it records what the client sends and plays the server. */
export class FakeWebSocket {
  static sockets: FakeWebSocket[] = [];
  readyState = 0;
  readonly sent: Array<Record<string, unknown>> = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((c: { code: number; reason: string }) => void) | null = null;
  onerror: (() => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocol?: string | string[],
  ) {
    FakeWebSocket.sockets.push(this);
  }

  send(text: string): void {
    const m = JSON.parse(text) as Record<string, unknown>;
    // A live server answers pings (they are not recorded).
    if (m.op === 'ping') queueMicrotask(() => this.reply({ op: 'pong', id: m.id }));
    else this.sent.push(m);
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The server accepted the upgrade. */
  accept(): void {
    this.readyState = 1;
    this.onopen?.();
  }

  /** A message from the server. */
  reply(m: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(m) });
  }

  /** The server closed the socket. */
  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The ops the client sent, in order. */
  ops(): string[] {
    return this.sent.map((m) => String(m.op));
  }
}
