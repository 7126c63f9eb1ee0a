/**
 * The Dockerfile's recipe, run without Docker: its build stage is one script
 * (docs/deploy/docker/build.sh), which this test runs on a clean copy of the repository's files
 * (`git ls-files`: nothing built, no node_modules); then it starts the built server as the run
 * stage's ENTRYPOINT and CMD do, with its ENV, and runs its HEALTHCHECK command against it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, REPO, tempDir } from '@rill/testkit';

const exec = promisify(execFile);
const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
/** Instructions, continuation lines joined. */
const instructions = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .filter((l) => l.trim() !== '' && !l.startsWith('#'))
  .map((l) => {
    const m = /^(\w+)\s+(.*)$/.exec(l.trim())!;
    return { op: m[1]!.toUpperCase(), args: m[2]!.trim() };
  });
const stages = instructions.reduce<(typeof instructions)[]>((acc, i) => {
  if (i.op === 'FROM') acc.push([]);
  acc[acc.length - 1]!.push(i);
  return acc;
}, []);
const runStage = stages[stages.length - 1]!;
const one = (op: string): string | undefined => runStage.find((i) => i.op === op)?.args;

const dir = tempDir('rill-docker-');
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  dir.remove();
});

describe('Dockerfile', () => {
  it('is multi-stage, runs as a non-root user, checks /readyz and keeps the data on a volume', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages[0]![0]!.args).toMatch(/ AS build$/);
    expect(runStage.find((i) => i.op === 'COPY')?.args).toBe('--from=build /opt/rill /opt/rill');
    const user = one('USER');
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(one('HEALTHCHECK')).toContain('/readyz');
    expect(one('VOLUME')).toBe('["/data"]');
    expect(one('ENV')).toContain('RILL_DATA_DIR=/data');
    // The build stage's work is the script this test runs.
    expect(stages[0]!.filter((i) => i.op === 'RUN').map((i) => i.args)).toEqual([
      'sh docs/deploy/docker/build.sh /opt/rill',
    ]);
  });

  it('build.sh builds a clean copy of the repository; the result serves and passes the HEALTHCHECK', async () => {
    // The build context: the repository's files as committed, nothing built or installed.
    const src = join(dir.path, 'src');
    const { stdout: files } = await exec('git', ['ls-files', '-z'], { cwd: REPO });
    for (const f of files.split('\0').filter(Boolean)) {
      mkdirSync(join(src, dirname(f)), { recursive: true });
      cpSync(join(REPO, f), join(src, f));
    }
    const out = join(dir.path, 'opt-rill');
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !/^(npm_|RILL_)/i.test(k)),
    );
    // The npm cache makes the registry downloads local; the steps are the image's.
    const build = await exec('sh', ['docs/deploy/docker/build.sh', out], {
      cwd: src,
      env: { ...env, npm_config_prefer_offline: 'true' },
      maxBuffer: 64 * 1024 * 1024,
      timeout: 240_000,
    }).catch((e: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`build.sh failed:\n${e.message}\n${e.stdout}\n${e.stderr}`);
    });
    const version = (
      JSON.parse(readFileSync(join(REPO, 'packages/server/package.json'), 'utf8')) as {
        version: string;
      }
    ).version;
    expect(build.stdout.trim().split('\n').at(-1)).toBe(version);

    // The run stage: its ENV (loopback instead of 0.0.0.0 here, a free port, a temp /data),
    // WORKDIR, ENTRYPOINT and CMD, with /opt/rill where build.sh put it.
    const vars = Object.fromEntries(
      [...one('ENV')!.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]),
    );
    const data = join(dir.path, 'data');
    mkdirSync(data);
    const port = await freePort();
    const runEnv = {
      ...env,
      ...vars,
      RILL_HOST: '127.0.0.1',
      RILL_PORT: String(port),
      RILL_DATA_DIR: data,
    };
    const argv = [
      ...(JSON.parse(one('ENTRYPOINT')!) as string[]),
      ...(JSON.parse(one('CMD')!) as string[]),
    ].map((a) => a.replace('/opt/rill', out));
    expect(argv[0]).toBe('node');
    const server = spawn(process.execPath, argv.slice(1), {
      cwd: data,
      env: runEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(server);
    let log = '';
    server.stdout!.on('data', (d: Buffer) => (log += d.toString()));
    server.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`did not listen:\n${log}`)), 30_000);
      server.stdout!.on('data', () => {
        if (/"url":"http/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      server.once('exit', (code) => reject(new Error(`exited ${code}:\n${log}`)));
    });
    // The lmdb log is in the data directory.
    const res = await fetch(`http://127.0.0.1:${port}/v1/topics/docker/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"data":1}',
    });
    expect(res.status).toBe(201);
    expect(readFileSync(join(data, 'data.mdb')).length).toBeGreaterThan(0);

    // HEALTHCHECK CMD ["node", "-e", "…"] as Docker runs it, in the container's environment.
    const check = JSON.parse(one('HEALTHCHECK')!.replace(/^.*?CMD\s+/, '')) as string[];
    expect(check[0]).toBe('node');
    const healthy = await exec(process.execPath, check.slice(1), { env: runEnv }).then(
      () => 0,
      (e: { code?: number }) => e.code ?? -1,
    );
    expect(healthy).toBe(0);
    // And it fails once the server is gone.
    server.kill('SIGTERM');
    expect(await new Promise((r) => server.once('exit', r))).toBe(0);
    const after = await exec(process.execPath, check.slice(1), { env: runEnv }).then(
      () => 0,
      (e: { code?: number }) => e.code ?? -1,
    );
    expect(after).toBe(1);
  }, 280_000);
});
