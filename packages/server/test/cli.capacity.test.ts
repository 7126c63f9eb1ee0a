/**
 * `rill serve` near its open-files limit (run under `prlimit --nofile=300:300`): streams past the
 * connection budget are refused with `503 too_many_connections`, health checks and publishes are
 * still served, and the log says so once instead of connections vanishing silently.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { spawnLogged, within, type LogLine, type LoggedServer } from './cli-ops-helpers.js';
import { systemBinary, tempDir, useCleanups } from '@rill/testkit';

const { cleanups } = useCleanups();

const FILE_LIMIT = 300;

async function serveLimited(): Promise<{ s: LoggedServer; url: string; budget: LogLine }> {
  const dir = tempDir('rill-capacity-');
  cleanups.push(() => dir.remove());
  const s = spawnLogged(['--data-dir', dir.path, '--port', '0'], {}, [
    systemBinary('prlimit'),
    `--nofile=${FILE_LIMIT}:${FILE_LIMIT}`,
    '--',
  ]);
  cleanups.push(() => s.kill());
  const url = await s.listening;
  const budget = await s.waitLog((l) => typeof l.maxStreams === 'number');
  return { s, url, budget };
}

interface Raw {
  socket: net.Socket;
  /** Resolves with the first bytes the server sent, or null if it closed without a word. */
  first: Promise<string | null>;
}

function raw(url: string, request: string | null): Raw {
  const u = new URL(url);
  const socket = net.connect(Number(u.port), u.hostname);
  cleanups.push(() => void socket.destroy());
  socket.on('error', () => undefined);
  if (request !== null) socket.once('connect', () => socket.write(request));
  const first = new Promise<string | null>((resolve) => {
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      // The whole head, and the body when it has a length.
      const end = got.indexOf('\r\n\r\n');
      if (end === -1) return;
      const len = /content-length: (\d+)/i.exec(got.slice(0, end));
      if (!len || got.length >= end + 4 + Number(len[1])) resolve(got);
    });
    socket.once('close', () => resolve(got === '' ? null : got));
  });
  return { socket, first };
}

const stream = (topic: string): string =>
  `GET /v1/topics/${topic}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`;

const isBudgetLine = (l: LogLine): boolean =>
  l.level === 40 && /connection budget/.test(l.msg ?? '');

describe('the connection budget', () => {
  it('refuses streams past it with 503 too_many_connections and keeps serving health checks and publishes', async () => {
    const { s, url, budget } = await serveLimited();
    const maxStreams = budget.maxStreams as number;
    expect(maxStreams).toBeGreaterThan(100);
    expect(maxStreams).toBeLessThan(FILE_LIMIT);

    const open: Raw[] = [];
    let refusal: string | null = null;
    for (let i = 0; i < FILE_LIMIT; i++) {
      const r = raw(url, stream('cap'));
      const head = await within(r.first, 10_000, `stream ${i} to be answered`);
      expect(head).not.toBeNull();
      if (head!.startsWith('HTTP/1.1 200')) {
        open.push(r);
        continue;
      }
      refusal = head;
      break;
    }
    expect(open.length).toBe(maxStreams);
    expect(refusal).toMatch(/^HTTP\/1\.1 503 /);
    expect(refusal!.toLowerCase()).toContain('connection: close');
    expect(refusal!.toLowerCase()).toContain('retry-after: 1');
    const body = JSON.parse(refusal!.slice(refusal!.indexOf('{'))) as { error: { code: string } };
    expect(body.error.code).toBe('too_many_connections');

    // A WebSocket handshake is refused the same way.
    const ws = raw(
      url,
      'GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    const wsHead = await within(ws.first, 10_000, 'the WebSocket handshake to be answered');
    expect(wsHead).toMatch(/^HTTP\/1\.1 503 /);
    expect(wsHead).toContain('too_many_connections');

    // Health checks and publishes still get through, and the open streams still work.
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    const pub = await fetch(`${url}/v1/topics/cap/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: '{"data":"still here"}',
    });
    expect(pub.status).toBe(201);
    const last = open[open.length - 1]!;
    let seen = '';
    last.socket.on('data', (d: Buffer) => (seen += d.toString()));
    await within(
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (seen.includes('still here')) resolve();
          else last.socket.once('data', check);
        };
        check();
      }),
      10_000,
      'the event to reach an open stream',
    );

    // One warning for it all, not one line per refusal and none per connection.
    expect(s.lines().filter(isBudgetLine)).toHaveLength(1);
    expect(s.lines().filter(isBudgetLine)[0]!.msg).toMatch(/refused 1 stream/);
  });

  it('closes connections past the limit at once, logs it once, and serves again when some go', async () => {
    const { s, url, budget } = await serveLimited();
    const maxConnections = budget.maxConnections as number;
    // Idle connections that never send a request, more than the server may hold.
    const held = Array.from({ length: maxConnections + 10 }, () => raw(url, null));
    const line = await s.waitLog(
      (l) => isBudgetLine(l) && /closed \d+ new connection/.test(l.msg ?? ''),
    );
    expect(line.maxConnections).toBe(maxConnections);
    // Those past the limit were closed unanswered, the others are kept.
    const closed = await within(
      Promise.all(held.slice(maxConnections).map((r) => r.first)),
      10_000,
      'the connections past the limit to be closed',
    );
    expect(closed.every((c) => c === null)).toBe(true);
    expect(s.lines().filter(isBudgetLine)).toHaveLength(1);

    for (const r of held.splice(0, 20)) r.socket.destroy();
    const end = Date.now() + 10_000;
    for (;;) {
      const r = await fetch(`${url}/readyz`, { headers: { connection: 'close' } }).catch(
        () => null,
      );
      if (r?.status === 200) break;
      if (Date.now() > end) throw new Error('not serving again after connections went away');
      await new Promise((res) => setTimeout(res, 50));
    }
  });
});
