/**
 * `rill bench storm` at small scale against a real `rill serve --workers 2`: connections spread
 * over two generator processes and two loopback source addresses, heartbeats counted on every
 * connection, the server's RSS summed over its process tree, and a reconnect storm whose resumes
 * must be whole — and a storm the server cannot resume whole (every topic purged while the
 * connections are away), which the checker must report as gaps.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StormResult } from '../src/storm.js';
import { BIN, spawnServer, tempDir, waitFor, type ChildServer } from '@rill/testkit';

let server: ChildServer;
let dir: { path: string; remove: () => void };

beforeAll(async () => {
  dir = tempDir('rill-storm-');
  server = await spawnServer(
    ['--engine', 'lmdb', '--data-dir', dir.path, '--port', '0', '--workers', '2'],
    { RILL_SSE__HEARTBEAT: '1s' },
  );
  // The supervisor's line that every worker listens (a worker's own line may come first).
  await waitFor(() => server.stdout().includes('(2 workers)'), 30_000);
}, 60_000);

afterAll(async () => {
  if (server) {
    server.proc.kill('SIGTERM');
    await server.exited;
  }
  dir.remove();
});

function storm(args: string[]): Promise<{ code: number; result: StormResult; err: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [BIN, 'bench', 'storm', '--url', server.url, '--json', '-q', '--min-free-mib', '0', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    proc.once('error', reject);
    proc.once('exit', (code) => {
      try {
        resolve({ code: code ?? -1, result: JSON.parse(out) as StormResult, err });
      } catch {
        reject(new Error(`rill bench storm exited ${code} without JSON:\n${out}\n${err}`));
      }
    });
  });
}

const SMALL = ['-s', '300', '-p', '2', '--source-addresses', '2', '--topics', '30', '--gap', '3'];

describe('rill bench storm against rill serve --workers 2', () => {
  it('holds 300 connections from 2 processes and 2 source addresses with heartbeats, and resumes them all whole', async () => {
    const { code, result, err } = await storm([
      ...SMALL,
      '--hold',
      '3',
      '--server-pid',
      String(server.proc.pid),
    ]);
    expect(err).toBe('');
    expect(result.connected).toBe(300);
    expect(result.processes).toBe(2);
    expect(result.addresses).toBe(2);
    // Heartbeats every second, held 3 s after a 2 s settle: every connection got some.
    expect(result.hold.connectionsWithoutHeartbeat).toBe(0);
    expect(result.hold.heartbeatsMinPerConnection).toBeGreaterThanOrEqual(2);
    expect(result.hold.heartbeats).toBeGreaterThanOrEqual(600);
    // The supervisor and both workers.
    expect(result.server?.held.processes).toBe(3);
    expect(result.server?.held.rssKiB).toBeGreaterThan(result.server!.before.rssKiB / 2);
    const s = result.storm!;
    expect(s.resumed).toBe(300);
    expect(s.eventsPerConnection).toBe(8);
    expect(s.complete).toBe(300);
    expect(s.events).toBe(300 * 8);
    expect(s.gaps).toBe(0);
    expect(s.duplicates).toBe(0);
    expect(s.broken).toBe(0);
    expect(s.recoverySeconds).not.toBeNull();
    expect(result.ok).toBe(true);
    expect(code).toBe(0);
  }, 120_000);

  it('reports the gaps when the topics are purged while the connections are away', async () => {
    const { code, result } = await storm([...SMALL, '--hold', '1', '--purge-during-drop']);
    expect(result.connected).toBe(300);
    const s = result.storm!;
    // Each resume finds its cursor purged: a reset, then the events after the purge, so the
    // three purged events of the gap are missing at every connection.
    expect(s.resumed).toBe(300);
    expect(s.broken).toBe(300);
    expect(s.gaps).toBeGreaterThanOrEqual(300 * 2);
    expect(s.resets).toBe(300);
    expect(result.ok).toBe(false);
    expect(code).toBe(1);
  }, 120_000);

  it('refuses to run anywhere but loopback', async () => {
    const remote = await new Promise<string>((resolve) => {
      const proc = spawn(
        process.execPath,
        [BIN, 'bench', 'storm', '--url', 'http://10.0.0.1:8080', '-s', '1', '-q'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
      proc.once('exit', () => resolve(err));
    });
    expect(remote).toContain('127.x.x.x only');
  }, 30_000);
});
