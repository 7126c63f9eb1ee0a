/**
 * A fake application backend for Rill's backend hooks (and other signed requests Rill makes): a
 * real node:http server on loopback that records every request, checks its `rill-signature`
 * against the secrets it was given, and answers what the test's `decide` says — a decision, a
 * status, a hang (for timeouts) or a destroyed connection.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifySignature } from '../../server/src/model/signature.js';

export interface HookCall {
  /** The `rill-hook` header. */
  hook: string;
  /** The path requested. */
  path: string;
  body: Record<string, unknown>;
  raw: string;
  headers: http.IncomingHttpHeaders;
  /** Whether `rill-signature` matched one of the secrets within the tolerance. */
  signed: boolean;
}

/** What to answer: a JSON decision (200), a status and body, a hang, or a cut connection. */
export type HookAnswer =
  | { allow: boolean; reason?: string; info?: unknown; subscribe?: string[]; publish?: string[] }
  | { status: number; body?: string }
  | 'hang'
  | 'destroy';

export class HookBackend {
  readonly calls: HookCall[] = [];
  private readonly hung = new Set<http.ServerResponse>();
  private waiters: Array<() => void> = [];

  private constructor(
    private readonly server: http.Server,
    readonly url: string,
    /** Decides each call; change it between steps of a test. */
    public decide: (call: HookCall) => HookAnswer,
  ) {}

  static async start(
    secrets: string | string[],
    decide: (call: HookCall) => HookAnswer = () => ({ allow: true }),
  ): Promise<HookBackend> {
    const server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const backend = new HookBackend(server, `http://127.0.0.1:${port}`, decide);
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const sig = req.headers['rill-signature'];
        const call: HookCall = {
          hook: String(req.headers['rill-hook'] ?? ''),
          path: req.url ?? '',
          body: JSON.parse(raw) as Record<string, unknown>,
          raw,
          headers: req.headers,
          signed: verifySignature(typeof sig === 'string' ? sig : undefined, raw, secrets).ok,
        };
        backend.calls.push(call);
        for (const w of [...backend.waiters]) w();
        const answer = backend.decide(call);
        if (answer === 'hang') {
          backend.hung.add(res);
          res.on('close', () => backend.hung.delete(res));
          return;
        }
        if (answer === 'destroy') {
          req.socket.destroy();
          return;
        }
        if ('status' in answer) {
          res.writeHead(answer.status, { 'content-type': 'application/json' });
          res.end(answer.body ?? '');
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
      });
    });
    return backend;
  }

  /** The calls of one hook. */
  of(hook: string): HookCall[] {
    return this.calls.filter((c) => c.hook === hook);
  }

  /** Resolves once `pred` holds for the calls so far; fails after `timeoutMs`. */
  until(pred: (calls: HookCall[]) => boolean, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!pred(this.calls)) return;
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`hook backend: condition not met; ${this.calls.length} calls`));
      }, timeoutMs);
      this.waiters.push(check);
      check();
    });
  }

  async close(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
