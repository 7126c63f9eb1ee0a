/**
 * `rill tail` and `rill publish` with `--token` or `RILL_TOKEN` (the built bin, a child process)
 * against a test server that checks tokens as Rill does (`@rill/testkit/auth-server`): the token
 * goes where the SDK carries it (a header; the `auth` op on a WebSocket), and it never appears in
 * what the commands print, refusals and expiry included.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BIN, useCleanups, waitFor } from '@rill/testkit';
import { AuthTestServer } from '@rill/testkit/auth-server';

interface Run {
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | string>;
  kill: () => void;
}

/** Runs the bin with `RILL_TOKEN` unset unless `env` sets it. */
function rill(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const base: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete base.RILL_TOKEN;
  const proc = spawn(process.execPath, [BIN, ...args], {
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((r) =>
    proc.once('exit', (code, signal) => r(code ?? signal ?? -1)),
  );
  return { stdout: () => out, stderr: () => err, exited, kill: () => proc.kill('SIGINT') };
}

describe('rill tail / rill publish with a token', () => {
  const { cleanups } = useCleanups();

  async function server(): Promise<AuthTestServer> {
    const s = new AuthTestServer();
    await s.listen();
    cleanups.push(() => s.close());
    return s;
  }

  function track(r: Run): Run {
    cleanups.push(async () => {
      r.kill();
      await r.exited;
    });
    return r;
  }

  for (const [transport, how] of [
    ['sse', 'flag'],
    ['ws', 'env'],
    ['poll', 'flag'],
  ] as const) {
    it(`tail --transport ${transport}, token from ${how === 'flag' ? '--token' : 'RILL_TOKEN'}: carried as the SDK does, never printed`, async () => {
      const srv = await server();
      const token = srv.sign('alice', 3_600_000);
      srv.append('orders', 3);
      const args = [
        'tail',
        'orders',
        '--from',
        'earliest',
        '--transport',
        transport,
        '--url',
        srv.url,
      ];
      const t = track(
        how === 'flag' ? rill([...args, '--token', token]) : rill(args, { RILL_TOKEN: token }),
      );
      await waitFor(() => t.stdout().split('\n').filter(Boolean).length === 3);
      t.kill();
      expect(await t.exited).toBe(0);
      const checks = srv.seen.filter((s) => s.route !== 'ws-subscribe');
      expect(checks.map((s) => [s.via, s.result, s.token === token])).toEqual([
        [transport === 'ws' ? 'op' : 'header', 'ok', true],
        ...(transport === 'poll' ? checks.slice(1).map(() => ['header', 'ok', true]) : []),
      ]);
      expect(t.stdout() + t.stderr()).not.toContain(token);
    });
  }

  it('publish takes RILL_TOKEN or --token (the flag wins) and never prints it', async () => {
    const srv = await server();
    const good = srv.sign('alice', 3_600_000);
    const p = rill(['publish', 'orders', '{"n":1}', '--url', srv.url], { RILL_TOKEN: good });
    expect(await p.exited).toBe(0);
    expect(JSON.parse(p.stdout())).toMatchObject({ topic: 'orders', seq: 1 });
    const other = srv.sign('alice', 3_600_000);
    const q = rill(['publish', 'orders', '{"n":2}', '--url', srv.url, '--token', other], {
      RILL_TOKEN: good,
    });
    expect(await q.exited).toBe(0);
    expect(srv.seen.map((s) => [s.route, s.via, s.token])).toEqual([
      ['publish', 'header', good],
      ['publish', 'header', other],
    ]);
    for (const r of [p, q]) expect(r.stdout() + r.stderr()).not.toMatch(/eyJ/);
  });

  it('a refused or expired token: exit 1 with the code, the token not in the message', async () => {
    const srv = await server();
    const bad = srv.sign('alice', 3_600_000, undefined, Buffer.alloc(32, 7));
    const p = rill(['publish', 'orders', '{"n":1}', '--url', srv.url, '--token', bad]);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(/^rill: rejected: unauthorized: /);
    const t = rill(['tail', 'orders', '--url', srv.url, '--token', bad]);
    expect(await t.exited).toBe(1);
    expect(t.stderr()).toMatch(/^rill: unauthorized: /m);
    // A token given on the command line is fixed: its expiry ends tail with the error.
    const fixed = srv.sign('alice', 3_600_000);
    srv.append('orders', 1);
    const e = track(
      rill(['tail', 'orders', '--from', 'earliest', '--url', srv.url], { RILL_TOKEN: fixed }),
    );
    await waitFor(() => e.stdout().includes('"seq":1'));
    srv.expireAll();
    expect(await e.exited).toBe(1);
    expect(e.stderr()).toMatch(/^rill: token_expired: /m);
    for (const r of [p, t, e]) {
      expect(r.stdout() + r.stderr()).not.toContain(bad);
      expect(r.stdout() + r.stderr()).not.toContain(fixed);
    }
  });
});
