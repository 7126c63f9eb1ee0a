import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http2, { type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import { SseParser, tempDir, type SseFrame } from './helpers.js';

/** A certificate and its key as PEM files in a temp directory. */
export interface CertFiles {
  cert: string;
  key: string;
  /** SHA-256 fingerprint, as `X509Certificate#fingerprint256` and `getPeerCertificate` give it. */
  fingerprint: string;
  remove: () => void;
}

/**
 * A fresh self-signed P-256 certificate for `localhost` and `127.0.0.1` (valid one day), made by
 * the system's openssl into a temp directory. `name` prefixes the file names, so one directory can
 * hold several (`dir` given: the caller removes it).
 */
export function selfSignedCert(dir?: string, name = 'server'): CertFiles {
  const own = dir === undefined ? tempDir('rill-tls-') : null;
  const path = dir ?? own!.path;
  const cert = join(path, `${name}.crt`);
  const key = join(path, `${name}.key`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const fingerprint = new X509Certificate(readFileSync(cert)).fingerprint256;
  return { cert, key, fingerprint, remove: () => own?.remove() };
}

/** The fingerprint of the certificate a TLS server at `url` serves now (a new connection). */
export function servedFingerprint(url: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: u.hostname,
        port: Number(u.port),
        rejectUnauthorized: false,
        servername: 'localhost',
      },
      () => {
        const fp = socket.getPeerCertificate().fingerprint256;
        socket.destroy();
        resolve(fp);
      },
    );
    socket.once('error', reject);
  });
}

/** An HTTP/2 session to `url` that accepts the self-signed certificate. */
export function h2Connect(url: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { rejectUnauthorized: false });
    session.once('connect', () => {
      session.off('error', reject);
      session.on('error', () => undefined);
      resolve(session);
    });
    session.once('error', reject);
  });
}

export interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request over an HTTP/2 session, its whole answer read. */
export function h2Request(
  session: ClientHttp2Session,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ':method': method,
      ':path': path,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    });
    let status = 0;
    let got: IncomingHttpHeaders = {};
    let text = '';
    req.setEncoding('utf8');
    req.on('response', (h) => {
      status = Number(h[':status']);
      got = h;
    });
    req.on('data', (d: string) => (text += d));
    req.on('end', () => resolve({ status, headers: got, body: text }));
    req.on('error', reject);
    req.end(
      body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    );
  });
}

/** An SSE stream read as it arrives (over HTTP/2 or HTTP/1.1 over TLS). */
export interface TlsSseStream {
  status: () => number;
  headers: () => Record<string, unknown>;
  frames: SseFrame[];
  /** Event frames (not notices or errors), parsed. */
  events: () => Array<{ topic: string; seq: number; id: string; data: unknown }>;
  body: () => string;
  /** Resolves when `pred` holds for the frames so far; fails on timeout or when the stream ends. */
  until: (pred: (frames: SseFrame[]) => boolean, timeoutMs?: number) => Promise<SseFrame[]>;
  ended: Promise<void>;
  close: () => void;
}

/** The shared part: a text feed becomes frames, with waiters woken on every chunk and at end. */
function sseReader(): {
  stream: Omit<TlsSseStream, 'status' | 'headers' | 'close' | 'ended'>;
  push: (text: string) => void;
  end: () => void;
} {
  const parser = new SseParser();
  const frames: SseFrame[] = [];
  let raw = '';
  let done = false;
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...waiters]) w();
  };
  return {
    push(text) {
      raw += text;
      frames.push(...parser.push(text));
      wake();
    },
    end() {
      done = true;
      wake();
    },
    stream: {
      frames,
      body: () => raw,
      events: () =>
        frames
          .filter((f) => f.event === undefined)
          .map((f) => JSON.parse(f.data!) as ReturnType<TlsSseStream['events']>[number]),
      until: (pred, timeoutMs = 15_000) =>
        new Promise((resolve, reject) => {
          const check = (): void => {
            if (pred(frames)) finish(() => resolve(frames));
            else if (done) {
              finish(() => reject(new Error(`stream ended; got ${frames.length} frames`)));
            }
          };
          const timer = setTimeout(
            () =>
              finish(() =>
                reject(new Error(`timed out after ${timeoutMs} ms with ${frames.length} frames`)),
              ),
            timeoutMs,
          );
          const finish = (then: () => void): void => {
            clearTimeout(timer);
            waiters.delete(check);
            then();
          };
          waiters.add(check);
          check();
        }),
    },
  };
}

/** Opens an SSE stream on an HTTP/2 session; resolves once the response headers arrived. */
export function openH2Sse(
  session: ClientHttp2Session,
  path: string,
  headers: Record<string, string> = {},
): Promise<TlsSseStream & { req: http2.ClientHttp2Stream }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, accept: 'text/event-stream', ...headers });
    const { stream, push, end } = sseReader();
    let status = 0;
    let got: Record<string, unknown> = {};
    req.setEncoding('utf8');
    req.on('data', push);
    const ended = new Promise<void>((r) =>
      req.once('close', () => {
        end();
        r();
      }),
    );
    req.on('error', () => undefined);
    req.once('response', (h) => {
      status = Number(h[':status']);
      got = h;
      resolve({
        ...stream,
        req,
        status: () => status,
        headers: () => got,
        ended,
        close: () => req.close(http2.constants.NGHTTP2_CANCEL),
      });
    });
    req.once('error', reject);
  });
}

/** Opens an SSE stream over HTTP/1.1 with TLS (node:https offers no ALPN: the server falls back). */
export function openHttpsSse(url: string): Promise<TlsSseStream> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      url,
      {
        headers: { accept: 'text/event-stream' },
        rejectUnauthorized: false,
        agent: false,
      },
      (res) => {
        const { stream, push, end } = sseReader();
        res.setEncoding('utf8');
        res.on('data', push);
        const ended = new Promise<void>((r) =>
          res.once('close', () => {
            end();
            r();
          }),
        );
        resolve({
          ...stream,
          status: () => res.statusCode ?? 0,
          headers: () => res.headers,
          ended,
          close: () => req.destroy(),
        });
      },
    );
    req.on('error', reject);
  });
}
