/**
 * The unit tier's guard: in a `*.unit.test.ts` file, sockets, servers, child processes and
 * Chromium are refused, so a test that needs them cannot hide in the fast tier.
 */
import childProcess, { exec, execFileSync, fork, spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { launchChromium } from '../src/chromium.js';

const REFUSED = /refused: unit tests \(\*\.unit\.test\.ts\) open no socket/;

describe('unit tier guard', () => {
  it('refuses outgoing connections: net, http and fetch', async () => {
    expect(() => net.connect(9, '127.0.0.1')).toThrow(REFUSED);
    expect(() => http.get('http://127.0.0.1:9/')).toThrow(REFUSED);
    const failed = await fetch('http://127.0.0.1:4321/').then(
      () => undefined,
      (e: Error) => e,
    );
    expect(failed?.cause).toBeInstanceOf(Error);
    expect(String((failed?.cause as Error).message)).toMatch(REFUSED);
  });

  it('refuses listening servers', () => {
    expect(() => net.createServer().listen(0, '127.0.0.1')).toThrow(REFUSED);
    expect(() => http.createServer().listen(0)).toThrow(REFUSED);
  });

  it('refuses child processes, through named imports and the module object', () => {
    expect(() => spawn(process.execPath, ['-e', ''])).toThrow(REFUSED);
    expect(() => fork('-e')).toThrow(REFUSED);
    expect(() => exec('true')).toThrow(REFUSED);
    expect(() => childProcess.execFile('true')).toThrow(REFUSED);
    expect(() => spawnSync('true')).toThrow(REFUSED);
    expect(() => execFileSync('true')).toThrow(REFUSED);
    expect(() => childProcess.execSync('true')).toThrow(REFUSED);
  });

  it('refuses Chromium (browser tier only)', async () => {
    await expect(launchChromium()).rejects.toThrow(/from the unit tier/);
  });
});
