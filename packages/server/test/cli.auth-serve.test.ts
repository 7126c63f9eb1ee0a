/**
 * `rill serve` with authentication, as operators run it (the built bin in a child process): with
 * a secret in the environment it binds a public address without `--insecure`; `SIGHUP` reloads the
 * configuration file, ending the streams of an API key removed from it (and a file that cannot be
 * used changes nothing); a token in the `access_token` query parameter never reaches the log.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, freePort, openSse, spawnServer, tempDir, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, bearer, sign, SECRET } from '@rill/testkit/auth';
import { WsClient, wsUrl } from '@rill/testkit/ws';
import { spawn } from 'node:child_process';

// The children inherit this environment: no stray RILL_* setting may decide an outcome.
for (const k of Object.keys(process.env)) if (k.startsWith('RILL_')) delete process.env[k];

const scratch = tempDir('rill-cli-auth-serve-');
afterAll(() => scratch.remove());

/** The JSON log lines a child wrote so far. */
function logLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('rill serve with authentication', () => {
  const { cleanups, track } = useCleanups();

  it('binds a public address without --insecure once a secret is configured; requests need a token', async () => {
    const port = await freePort();
    const srv = track(
      await spawnServer(['--engine', 'memory', '--host', '0.0.0.0', '--port', String(port)], {
        RILL_AUTH__JWT__SECRET: SECRET,
      }),
    );
    const url = `http://127.0.0.1:${port}`;
    expect((await fetch(`${url}/v1/topics`)).status).toBe(401);
    const token = await sign({ sub: 'alice', subscribe: ['>'] });
    expect((await fetch(`${url}/v1/topics`, { headers: bearer(token) })).status).toBe(200);
    expect(srv.stdout()).toContain('authentication on');
    expect(srv.stdout()).not.toContain('WITHOUT authentication');
  });

  it('without auth it still refuses, and says how to configure it', async () => {
    const port = await freePort();
    const proc = spawn(
      process.execPath,
      [BIN, 'serve', '--engine', 'memory', '--host', '0.0.0.0', '--port', String(port)],
      { cwd: scratch.path, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    expect(code).toBe(2);
    expect(stderr).toContain('--insecure');
    expect(stderr).toContain('RILL_AUTH__JWT__SECRET');
  });

  it('SIGHUP re-reads the config file: a removed API key ends its stream; an unusable file changes nothing', async () => {
    const gone = apiKey('mobile', { subscribe: ['orders'] });
    const kept = apiKey('backend', { subscribe: ['orders'], publish: ['orders'] });
    const config = join(scratch.path, 'rill.json');
    const write = (keys: unknown[]): void =>
      writeFileSync(config, JSON.stringify({ engine: 'memory', auth: { apiKeys: keys } }));
    write([gone.entry, kept.entry]);
    const srv = track(await spawnServer(['--config', config, '--port', '0'], {}));

    const stream = await openSse(`${srv.url}/v1/topics/orders/stream`, bearer(gone.key));
    cleanups.push(() => stream.close());
    expect(stream.status).toBe(200);

    // A file that cannot be used: logged, the keys in use stay.
    writeFileSync(config, '{"auth": {"apiKeys": [{"name": "x"}]}}');
    srv.proc.kill('SIGHUP');
    await waitFor(() =>
      logLines(srv.stdout()).some(
        (l) => l.msg === 'auth: reload failed; keeping the current settings',
      ),
    );
    const still = await fetch(`${srv.url}/v1/topics/orders/events`, { headers: bearer(gone.key) });
    expect(still.status).not.toBe(401);

    write([kept.entry]);
    srv.proc.kill('SIGHUP');
    await stream.ended;
    const last = stream.frames.at(-1)!;
    expect(last.event).toBe('error');
    expect(JSON.parse(last.data!)).toMatchObject({ code: 'unauthorized' });
    await waitFor(() =>
      logLines(srv.stdout()).some(
        (l) =>
          l.msg === 'authentication settings reloaded' &&
          JSON.stringify(l.revoked) === '["key:mobile"]',
      ),
    );
    const refused = await fetch(`${srv.url}/v1/topics/orders/events`, {
      headers: bearer(gone.key),
    });
    expect(refused.status).toBe(401);
    const pub = await fetch(`${srv.url}/v1/topics/orders/events`, {
      method: 'POST',
      headers: { ...bearer(kept.key), 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(pub.status).toBe(201);
    // SIGHUP did not stop the server.
    expect(srv.proc.exitCode).toBeNull();
  });

  it('a token in the access_token query parameter never appears in the log (debug level)', async () => {
    const srv = track(
      await spawnServer(['--engine', 'memory', '--port', '0', '--log-level', 'trace'], {
        RILL_AUTH__JWT__SECRET: SECRET,
        RILL_AUTH__ANONYMOUS__SUBSCRIBE: '["public.>"]',
      }),
    );
    const good = await sign({ sub: 'alice', subscribe: ['orders'] });
    const bad = await sign({ sub: 'eve', subscribe: ['>'] }, 60_000, {
      secret: 'another-secret-0123456789-abcdefghijklmnop',
    });
    const expired = await sign({ sub: 'bob', subscribe: ['>'] }, -5000);
    const s = await openSse(`${srv.url}/v1/topics/orders/stream?access_token=${good}`);
    cleanups.push(() => s.close());
    expect(s.status).toBe(200);
    for (const token of [bad, expired, good]) {
      for (const path of [
        `/v1/topics/orders/events?access_token=${token}&limit=5`,
        `/v1/stream?topics=secret&access_token=${token}`,
        `/v1/nowhere?access_token=${token}`,
        `/v1/events?access_token=${token}&topics=a&limit=x`,
      ]) {
        await (await fetch(`${srv.url}${path}`)).arrayBuffer();
      }
      const c = await WsClient.open(wsUrl(srv.url, `/v1/ws?access_token=${token}`));
      await (token === good ? c.request({ op: 'ping' }) : c.closed);
      c.terminate();
    }
    await waitFor(() => (srv.stdout().match(/access_token=\[redacted\]/g) ?? []).length >= 4);
    const log = srv.stdout();
    for (const token of [good, bad, expired]) {
      expect(log).not.toContain(token);
      // Not even a piece of it (the signature, the payload).
      for (const part of token.split('.')) expect(log).not.toContain(part);
    }
  });
});
