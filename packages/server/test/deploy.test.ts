/**
 * The deploy recipes of docs/deploy as shipped: the systemd unit checked by Debian's systemd
 * (`systemd-analyze verify`, and `security` for its sandbox), the Caddy configuration run by
 * Debian's caddy in front of two Rill nodes, and the compose file's settings read by Rill's own
 * configuration loader.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, REPO, systemBinary, tempDir, waitFor } from '@rill/testkit';
import { checkProxiedStreams, twoRedisNodes } from '@rill/testkit/proxy';
import { configFromEnv, resolveConfig } from '../src/config.js';

const exec = promisify(execFile);
const DEPLOY = join(REPO, 'docs/deploy');
const UNIT = join(DEPLOY, 'systemd/rill.service');

describe('systemd unit', () => {
  it('passes systemd-analyze verify', async () => {
    const r = await exec(systemBinary('systemd-analyze'), ['verify', UNIT]).catch(
      (e: Error & { stderr?: string }) => {
        throw new Error(`systemd-analyze verify failed:\n${e.stderr ?? e.message}`);
      },
    );
    // verify prints nothing for a unit without problems (warnings included).
    expect(r.stderr).toBe('');
  });

  it('is sandboxed: a dynamic user, its own state directory, a read-only system', async () => {
    const unit = readFileSync(UNIT, 'utf8');
    for (const line of [
      'DynamicUser=yes',
      'StateDirectory=rill',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'NoNewPrivileges=yes',
      'CapabilityBoundingSet=',
      'SystemCallFilter=@system-service',
    ]) {
      expect(unit).toMatch(new RegExp(`^${line}$`, 'm'));
    }
    const { stdout } = await exec(systemBinary('systemd-analyze'), [
      'security',
      '--offline=true',
      '--no-pager',
      UNIT,
    ]);
    const score = /Overall exposure level for rill\.service: (\d+\.\d+) (\w+)/.exec(stdout);
    expect(score, stdout).not.toBeNull();
    // systemd's scale: 0 (locked down) to 10 (exposed); below 2 is "OK" to it.
    expect(Number(score![1])).toBeLessThan(2);
  });

  it('starts Rill as the Dockerfile does, with the data in the state directory', () => {
    const unit = readFileSync(UNIT, 'utf8');
    expect(unit).toMatch(
      /^ExecStart=\/usr\/bin\/node \/opt\/rill\/node_modules\/@rill\/server\/bin\/rill\.js serve /m,
    );
    expect(unit).toMatch(/^Environment=.*RILL_DATA_DIR=%S\/rill\/data/m);
    expect(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).toContain(
      '"/opt/rill/node_modules/@rill/server/bin/rill.js"',
    );
  });
});

describe('compose file', () => {
  it('gives Rill settings its loader accepts, and Redis an fsynced append-only file', () => {
    const compose = parseYaml(readFileSync(join(DEPLOY, 'docker/compose.yaml'), 'utf8')) as {
      services: Record<string, { environment?: Record<string, string>; command?: string[] }>;
    };
    const env = { ...compose.services.rill!.environment! };
    // Compose fills ${VAR:?…} and ${VAR:-default} from the caller's environment.
    for (const [k, v] of Object.entries(env)) {
      env[k] = v.replace(/\$\{(\w+):([?-])([^}]*)\}/, (_, name: string, op: string, def: string) =>
        name === 'RILL_JWT_SECRET' ? 'x'.repeat(44) : op === '-' ? def : '',
      );
    }
    const config = resolveConfig(configFromEnv(env));
    expect(config.engine).toBe('redis');
    expect(config.redis.url).toBe('redis://redis:6379');
    expect(config.auth.jwt?.secret).toHaveLength(44);
    const redis = compose.services.redis!.command!.join(' ');
    expect(redis).toContain('--appendonly yes');
    expect(redis).toContain('--appendfsync always');
  });
});

/** The shipped Caddyfile pointed at `ports`, listening on a free loopback port, run by caddy. */
async function startCaddy(ports: number[]): Promise<{ url: string; stop: () => Promise<void> }> {
  const dir = tempDir('rill-caddy-');
  const port = await freePort();
  let conf = readFileSync(join(DEPLOY, 'Caddyfile'), 'utf8');
  conf = conf.replace(
    'reverse_proxy 127.0.0.1:8081 127.0.0.1:8082 {',
    `reverse_proxy ${ports.map((p) => `127.0.0.1:${p}`).join(' ')} {`,
  );
  // Any Host on that port, as `:8080` is; bound to loopback only.
  conf = conf.replace(/^:8080 \{/m, `http://:${port} {\n\tbind 127.0.0.1`);
  expect(conf).toContain(`127.0.0.1:${ports[0]}`);
  expect(conf).toContain(`http://:${port} {`);
  // No admin endpoint (a fixed port shared with anything else running caddy).
  writeFileSync(join(dir.path, 'Caddyfile'), `{\n\tadmin off\n}\n\n${conf}`);
  const proc: ChildProcess = spawn(
    systemBinary('caddy'),
    ['run', '--config', join(dir.path, 'Caddyfile'), '--adapter', 'caddyfile'],
    {
      env: { ...process.env, XDG_DATA_HOME: dir.path, XDG_CONFIG_HOME: dir.path, HOME: dir.path },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`caddy exited:\n${out}`);
    return fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
  }, 15_000).catch((err: Error) => {
    throw new Error(`caddy did not start: ${err.message}\n${out}`);
  });
  return {
    url,
    stop: async () => {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      dir.remove();
    },
  };
}

describe('two Rill nodes (redis engine) behind Caddy with the documented Caddyfile', () => {
  const stops: (() => unknown)[] = [];

  afterAll(async () => {
    for (const s of stops.reverse()) await s();
  });

  it('has the upstreams, port and body limit of the nginx configuration', () => {
    const caddy = readFileSync(join(DEPLOY, 'Caddyfile'), 'utf8');
    const nginx = readFileSync(join(DEPLOY, 'nginx-rill.conf'), 'utf8');
    const upstreams = [...nginx.matchAll(/^\s*server (127\.0\.0\.1:\d+)/gm)].map((m) => m[1]);
    expect(upstreams).toEqual(['127.0.0.1:8081', '127.0.0.1:8082']);
    expect(caddy).toMatch(new RegExp(`^\\s*reverse_proxy ${upstreams.join(' ')} \\{$`, 'm'));
    expect(nginx).toMatch(/^\s*listen 8080;$/m);
    expect(caddy).toMatch(/^:8080 \{$/m);
    expect(nginx).toMatch(/client_max_body_size 8m;/);
    expect(caddy).toMatch(/max_size 8MB/);
  });

  it('streams SSE and NDJSON unbuffered, carries WebSocket upgrades and the Host, and fails over', async () => {
    const { nodes, ports, stop } = await twoRedisNodes('rillcaddy');
    stops.push(stop);
    const caddy = await startCaddy(ports);
    stops.push(caddy.stop);
    await checkProxiedStreams(caddy.url, 'proxied', stops);

    // The Host goes through as sent: a listed name is served, another is refused by Rill.
    const host = (name: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const u = new URL(caddy.url);
        request(
          { host: u.hostname, port: u.port, path: '/v1/topics', headers: { host: name } },
          (res) => {
            res.resume();
            resolve(res.statusCode!);
          },
        )
          .on('error', reject)
          .end();
      });
    expect(await host(`rill.test:${new URL(caddy.url).port}`)).toBe(200);
    expect(await host('elsewhere.test')).toBe(421);

    // One node dies: at most the request that found it dead fails (502, as through nginx), and
    // the next ones go to the other node.
    nodes[0]!.proc.kill('SIGKILL');
    await nodes[0]!.exited;
    const statuses: number[] = [];
    for (let n = 3; n <= 8; n++) {
      const r = await fetch(`${caddy.url}/v1/topics/proxied/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data: { n } }),
      });
      await r.arrayBuffer();
      statuses.push(r.status);
    }
    expect(statuses.filter((s) => s !== 201).length, String(statuses)).toBeLessThanOrEqual(1);
    expect(statuses.slice(-4)).toEqual([201, 201, 201, 201]);
  });
});
