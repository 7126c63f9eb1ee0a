import { randomBytes } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';

/** A message the server sent (every one is a JSON object with `op`). */
export interface WsMsg {
  op: string;
  id?: string | number;
  sub?: string;
  cursor?: string;
  event?: { topic: string; seq: number; id: string; type?: string; data: unknown; time: number };
  error?: { code: string; message: string; retryable: boolean; closeCode: number; limit?: number };
  [k: string]: unknown;
}

export function wsUrl(httpUrl: string, path = '/v1/ws'): string {
  return httpUrl.replace(/^http/, 'ws') + path;
}

/**
 * A `ws` client that records everything: `until` waits for a condition on the messages so far
 * (failing after a timeout), `request` sends a request and waits for the reply with its id.
 */
export class WsClient {
  readonly messages: WsMsg[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  closeInfo: { code: number; reason: string } | null = null;
  pings = 0;
  private waiters = new Set<() => void>();
  private nextId = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.messages.push(JSON.parse(data.toString('utf8')) as WsMsg);
      this.wake();
    });
    ws.on('ping', () => {
      this.pings++;
      this.wake();
    });
    ws.on('error', () => undefined);
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      });
    });
  }

  static async open(
    url: string,
    options: WebSocket.ClientOptions & { protocols?: string | string[] } = {},
  ): Promise<WsClient> {
    const { protocols = 'rill.v1', ...rest } = options;
    const ws = new WebSocket(url, protocols, rest);
    const c = new WsClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`unexpected response ${res.statusCode}`)),
      );
    });
    return c;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** Resolves with the messages when `pred` holds; fails on timeout or close. */
  until(
    pred: (msgs: WsMsg[]) => boolean,
    timeoutMs = 10_000,
    what = 'condition',
  ): Promise<WsMsg[]> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred(this.messages)) {
          done();
          resolve(this.messages);
        } else if (this.closeInfo) {
          done();
          reject(
            new Error(
              `socket closed (${this.closeInfo.code}) before ${what}; ${this.messages.length} messages, last ${JSON.stringify(this.messages.slice(-3))}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; ${this.messages.length} messages, last ${JSON.stringify(this.messages.slice(-3))}`,
          ),
        );
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Waits for `n` pings from the server. */
  untilPings(n: number, timeoutMs = 10_000): Promise<WsMsg[]> {
    return this.until(() => this.pings >= n, timeoutMs, `${n} pings`);
  }

  /** Sends `msg` with a fresh id (unless it has one) and resolves with the reply carrying it. */
  async request(msg: Record<string, unknown>, timeoutMs = 10_000): Promise<WsMsg> {
    const id = msg.id ?? `r${this.nextId++}`;
    this.send({ ...msg, id });
    const msgs = await this.until(
      (m) => m.some((x) => x.id === id),
      timeoutMs,
      `reply to ${String(id)}`,
    );
    return msgs.find((x) => x.id === id)!;
  }

  events(sub?: string): Array<NonNullable<WsMsg['event']> & { cursor?: string; sub: string }> {
    return this.messages
      .filter((m) => m.op === 'event' && (sub === undefined || m.sub === sub))
      .map((m) => ({ ...m.event!, sub: m.sub!, ...(m.cursor ? { cursor: m.cursor } : {}) }));
  }

  /** The cursor to resume `sub` from: the last `cursor` (or single-topic event id) it was given. */
  resumeCursor(sub: string): string | undefined {
    let cur: string | undefined;
    for (const m of this.messages) {
      if (m.sub !== sub) continue;
      if (m.op === 'subscribed' || m.op === 'reset') cur = m.cursor;
      else if (m.op === 'event') cur = m.cursor ?? m.event!.id;
    }
    return cur;
  }

  close(): void {
    this.ws.close();
  }

  terminate(): void {
    this.ws.terminate();
  }
}

// ---- raw handshakes and frames ----

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  socket: net.Socket;
  /** Bytes received after the response head (frames, for a 101). */
  rest: Buffer;
  /** Resolves when the server closed the connection. */
  ended: Promise<void>;
}

/**
 * Sends a request head over a raw socket and reads the response head (and, for errors, the body
 * up to the server closing). `headers` replace the defaults of a valid handshake; `null` removes one.
 */
export function rawRequest(
  httpUrl: string,
  options: {
    path?: string;
    method?: string;
    headers?: Record<string, string | null>;
    extraLines?: string[];
  } = {},
): Promise<RawResponse> {
  const u = new URL(httpUrl);
  const base: Record<string, string | null> = {
    Host: u.host,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Protocol': 'rill.v1',
  };
  const headers = { ...base, ...options.headers };
  const lines = [`${options.method ?? 'GET'} ${options.path ?? '/v1/ws'} HTTP/1.1`];
  for (const [k, v] of Object.entries(headers)) if (v !== null) lines.push(`${k}: ${v}`);
  lines.push(...(options.extraLines ?? []));
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname);
    let buf = Buffer.alloc(0);
    let head: { status: number; headers: Record<string, string>; end: number } | null = null;
    let resolved = false;
    const ended = new Promise<void>((r) => socket.once('close', () => r()));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete response; got ${JSON.stringify(buf.toString('latin1'))}`));
    }, 10_000);
    const finish = (): void => {
      if (resolved || !head) return;
      resolved = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      // Frames after a 101 are read by a FrameReader; after an error, only the close matters.
      if (head.status === 101) socket.pause();
      else socket.resume();
      const rest = buf.subarray(head.end);
      resolve({
        status: head.status,
        headers: head.headers,
        body: head.status === 101 ? '' : rest.toString('utf8'),
        socket,
        rest: head.status === 101 ? Buffer.from(rest) : Buffer.alloc(0),
        ended,
      });
    };
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (!head) {
        const i = buf.indexOf('\r\n\r\n');
        if (i === -1) return;
        const [statusLine, ...hl] = buf.subarray(0, i).toString('latin1').split('\r\n');
        const h: Record<string, string> = {};
        for (const l of hl) {
          const c = l.indexOf(':');
          h[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
        }
        head = { status: Number(statusLine!.split(' ')[1]), headers: h, end: i + 4 };
      }
      if (head.status === 101) {
        finish();
        return;
      }
      const len = Number(head.headers['content-length'] ?? NaN);
      if (!Number.isNaN(len) && buf.length - head.end >= len) finish();
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      if (head) finish();
      else {
        clearTimeout(timer);
        if (!resolved) reject(new Error('closed before a response'));
      }
    });
    socket.write(lines.join('\r\n') + '\r\n\r\n');
  });
}

/** Builds one client frame. */
export function frame(
  opcode: number,
  payload: Buffer | string,
  options: { fin?: boolean; mask?: boolean; rsv?: number; length?: number } = {},
): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const fin = options.fin ?? true;
  const mask = options.mask ?? true;
  const len = options.length ?? data.length;
  const b0 = (fin ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode;
  let header: Buffer;
  if (len < 126) {
    header = Buffer.from([b0, (mask ? 0x80 : 0) | len]);
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[0] = b0;
    header[1] = (mask ? 0x80 : 0) | 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = b0;
    header[1] = (mask ? 0x80 : 0) | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  if (!mask) return Buffer.concat([header, data]);
  const key = randomBytes(4);
  const masked = Buffer.from(data);
  for (let i = 0; i < masked.length; i++) masked[i] = masked[i]! ^ key[i % 4]!;
  return Buffer.concat([header, key, masked]);
}

export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** Parses the (unmasked) frames a server sends over a raw socket. */
export class FrameReader {
  readonly frames: ServerFrame[] = [];
  private buf = Buffer.alloc(0);
  private waiters = new Set<() => void>();
  ended = false;

  constructor(
    readonly socket: net.Socket,
    initial: Buffer,
  ) {
    this.push(initial);
    socket.on('data', (d: Buffer) => this.push(d));
    socket.once('close', () => {
      this.ended = true;
      for (const w of [...this.waiters]) w();
    });
    socket.resume();
  }

  private push(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) break;
      const b1 = this.buf[1]! & 0x7f;
      let off = 2;
      let len = b1;
      if (b1 === 126) {
        if (this.buf.length < 4) break;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (b1 === 127) {
        if (this.buf.length < 10) break;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + len) break;
      this.frames.push({
        fin: (this.buf[0]! & 0x80) !== 0,
        opcode: this.buf[0]! & 0x0f,
        payload: Buffer.from(this.buf.subarray(off, off + len)),
      });
      this.buf = this.buf.subarray(off + len);
    }
    for (const w of [...this.waiters]) w();
  }

  until(pred: (frames: ServerFrame[]) => boolean, timeoutMs = 10_000): Promise<ServerFrame[]> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred(this.frames)) {
          done();
          resolve(this.frames);
        } else if (this.ended) {
          done();
          reject(new Error(`socket ended; frames ${JSON.stringify(this.summary())}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out; frames ${JSON.stringify(this.summary())}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** The close code of the server's close frame (waits for it). */
  async closeCode(timeoutMs = 10_000): Promise<number> {
    const frames = await this.until((f) => f.some((x) => x.opcode === 8), timeoutMs);
    const close = frames.find((x) => x.opcode === 8)!;
    return close.payload.length >= 2 ? close.payload.readUInt16BE(0) : 1005;
  }

  texts(): WsMsg[] {
    return this.frames
      .filter((f) => f.opcode === 1)
      .map((f) => JSON.parse(f.payload.toString()) as WsMsg);
  }

  private summary(): Array<{ opcode: number; len: number }> {
    return this.frames.map((f) => ({ opcode: f.opcode, len: f.payload.length }));
  }
}

/** Completes a handshake over a raw socket and returns a frame reader on it. */
export async function rawWebSocket(
  httpUrl: string,
): Promise<{ socket: net.Socket; reader: FrameReader }> {
  const r = await rawRequest(httpUrl);
  if (r.status !== 101) throw new Error(`handshake failed: ${r.status} ${r.body}`);
  return { socket: r.socket, reader: new FrameReader(r.socket, r.rest) };
}
