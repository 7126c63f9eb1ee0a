/**
 * The published packages as a user gets them: `npm pack` of @rill/client, @rill/react and
 * @rill/server (each builds on prepack), installed from the tarballs into a fresh project outside
 * the repository (third-party dependencies from the registry, through the npm cache). There they
 * must import from Node ESM, require from CommonJS (@rill/client), type-check under TypeScript's
 * `nodenext` and `bundler` resolution, run the CLI as `npx @rill/server serve`, and build a React
 * app with Vite.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, tempDir } from '@rill/testkit';

const exec = promisify(execFile);
const PACKAGES = ['client', 'react', 'server'] as const;
const version = (pkg: string): string =>
  (
    JSON.parse(readFileSync(join(REPO, 'packages', pkg, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
/** The version the repository's own tree has, so npm finds it in its cache. */
const installed = (name: string): string =>
  (
    JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;

/** The environment without npm's and Rill's variables from the run that started the tests. */
const cleanEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(npm_|RILL_)/i.test(k)),
);

const dir = tempDir('rill-pack-');
const app = join(dir.path, 'app');
let packed: { name: string; filename: string; files: { path: string }[] }[] = [];
const children: ChildProcess[] = [];

async function run(
  cmd: string,
  args: string[],
  cwd = app,
): Promise<{ stdout: string; stderr: string }> {
  try {
    return await exec(cmd, args, {
      cwd,
      env: cleanEnv,
      maxBuffer: 64 * 1024 * 1024,
      timeout: 120_000,
    });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(
      `${cmd} ${args.join(' ')} failed:\n${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`,
      { cause: err },
    );
  }
}

function write(path: string, text: string): void {
  mkdirSync(join(app, path, '..'), { recursive: true });
  writeFileSync(join(app, path), text);
}

beforeAll(async () => {
  const { stdout } = await run(
    'npm',
    [
      'pack',
      '--json',
      '--pack-destination',
      dir.path,
      ...PACKAGES.flatMap((p) => ['-w', `@rill/${p}`]),
    ],
    REPO,
  );
  packed = JSON.parse(stdout) as typeof packed;
  mkdirSync(app);
  write('package.json', JSON.stringify({ name: 'app', private: true, type: 'module' }));
  await run('npm', [
    'install',
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    ...packed.map((p) => join(dir.path, p.filename)),
    ...['react', 'react-dom', '@types/react', '@types/react-dom', '@types/node'].map(
      (n) => `${n}@${installed(n)}`,
    ),
  ]);
}, 170_000);

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  dir.remove();
});

describe('npm pack', () => {
  it('ships each package built, with README, LICENSE and CHANGELOG', () => {
    expect(packed.map((p) => p.name)).toEqual(PACKAGES.map((p) => `@rill/${p}`));
    for (const p of packed) {
      const files = p.files.map((f) => f.path);
      expect(files, p.name).toEqual(
        expect.arrayContaining([
          'package.json',
          'README.md',
          'LICENSE',
          'CHANGELOG.md',
          'dist/index.js',
          'dist/index.d.ts',
        ]),
      );
      expect(
        files.filter((f) => /(^|\/)test\/|tsbuildinfo$/.test(f)),
        p.name,
      ).toEqual([]);
    }
    const client = packed[0]!.files.map((f) => f.path);
    expect(client).toEqual(
      expect.arrayContaining(['dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/cjs/package.json']),
    );
    expect(packed[2]!.files.map((f) => f.path)).toContain('bin/rill.js');
  });

  it('depends on the client by a range that the published client satisfies', () => {
    for (const p of ['react', 'server']) {
      const manifest = JSON.parse(
        readFileSync(join(app, 'node_modules/@rill', p, 'package.json'), 'utf8'),
      ) as { dependencies: Record<string, string> };
      expect(manifest.dependencies['@rill/client']).toBe(`^${version('client')}`);
    }
    // One copy of the client, the packed one, serves both.
    expect(readdirSync(join(app, 'node_modules/@rill'))).toEqual(['client', 'react', 'server']);
  });
});

describe('installed from the tarballs', () => {
  it('imports from Node ESM: a server and a client talk', async () => {
    write(
      'esm.mjs',
      `import { createServer } from '@rill/server';
import { createClient } from '@rill/client';
import { createClient as sseClient } from '@rill/client/sse';
import { RillProvider, useStream } from '@rill/react';
const server = await createServer({ engine: 'memory', port: 0, logLevel: 'silent' });
const url = await server.listen();
const client = createClient({ url });
const r = await client.publish('pack.esm', { n: 1 });
const sub = sseClient({ url }).subscribe('pack.esm', { from: 'earliest' });
for await (const ev of sub) { console.log(JSON.stringify({ seq: r.seq, data: ev.data, react: typeof RillProvider + typeof useStream })); break; }
client.close();
await server.close();
`,
    );
    const { stdout } = await run(process.execPath, ['esm.mjs']);
    expect(JSON.parse(stdout)).toEqual({ seq: 1, data: { n: 1 }, react: 'functionfunction' });
  });

  it('runs the CLI as npx @rill/server, and require()s the client from CommonJS against it', async () => {
    const { stdout: v } = await run('npx', ['--no', '--', '@rill/server', '--version']);
    expect(v.trim()).toBe(version('server'));
    // `--no`: never fetch a package; the installed one must be what runs.
    const serve = spawn(
      'npx',
      ['--no', '@rill/server', 'serve', '--engine', 'memory', '--port', '0'],
      {
        cwd: app,
        env: cleanEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(serve);
    let out = '';
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no URL in:\n${out}`)), 30_000);
      serve.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /"url":"(http[^"]+)"/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      serve.once('exit', (code) => reject(new Error(`serve exited ${code}:\n${out}`)));
    });
    write(
      'cjs.cjs',
      `const { createClient, RillError } = require('@rill/client');
const sse = require('@rill/client/sse');
const url = process.argv[2];
(async () => {
  const client = createClient({ url });
  const r = await client.publish('pack.cjs', { n: 2 }, { type: 'cjs' });
  const res = await fetch(url + '/v1/topics/pack.cjs/events');
  const page = await res.json();
  console.log(JSON.stringify({ seq: r.seq, data: page.events[0].data, sse: typeof sse.createClient, error: new RillError('x', 'y') instanceof Error }));
  client.close();
})();
`,
    );
    const { stdout } = await run(process.execPath, ['cjs.cjs', url]);
    expect(JSON.parse(stdout)).toEqual({ seq: 1, data: { n: 2 }, sse: 'function', error: true });
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
  });

  it('type-checks under TypeScript nodenext (ESM and CommonJS files) and bundler resolution', async () => {
    const tsc = join(REPO, 'node_modules/typescript/bin/tsc');
    write(
      'nodenext/tsconfig.json',
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          // Dependencies' own declarations are not this test's business (checking them all takes
          // half a minute); the @ts-expect-error lines below fail if a package's types were \`any\`.
          skipLibCheck: true,
          lib: ['es2023', 'dom'],
          types: ['node'],
        },
        include: ['*.mts', '*.cts'],
      }),
    );
    write(
      'nodenext/esm.mts',
      `import { createServer, type RillServer } from '@rill/server';
import { createClient, type RillEvent } from '@rill/client';
import { createClient as sse } from '@rill/client/sse';
import { useStream } from '@rill/react';
const s: Promise<RillServer> = createServer({ engine: 'memory', port: 0 });
const c = createClient({ url: 'http://127.0.0.1:8080' });
const e: RillEvent<number> | undefined = undefined;
// @ts-expect-error: a publish needs a topic
void c.publish();
// @ts-expect-error: no such engine
void createServer({ engine: 'floppy' });
// @ts-expect-error: a topic is a string
export const bad = () => useStream(42);
export { s, c, e, sse, useStream };
`,
    );
    write(
      'nodenext/cjs.cts',
      `import { createClient, RillError } from '@rill/client';
import { createClient as sse } from '@rill/client/sse';
const c = createClient({ url: 'http://127.0.0.1:8080' });
const sub = c.subscribe<{ n: number }>('a', { from: 'earliest' });
export const cursor: string | undefined = sub.cursor;
c.subscribe<{ n: number }>('b', {
  onEvent: (ev) => {
    // @ts-expect-error: the data is typed, n is a number
    const s: string = ev.data.n;
    void s;
  },
});
export { RillError, sse };
`,
    );

    write(
      'src/main.tsx',
      `import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { RillProvider, useStream } from '@rill/react';
import { createClient } from '@rill/client/sse';

function Last() {
  const { last, status } = useStream<number>('demo.random', { maxEvents: 10 });
  // @ts-expect-error: the data is a number
  const text: string = last?.data ?? '';
  return <p>{status}: {last?.data}{text}</p>;
}
const client = createClient({ url: location.origin });
void client;
createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <RillProvider options={{ url: location.origin }}><Last /></RillProvider>
  </StrictMode>,
);
`,
    );
    write(
      'tsconfig.json',
      JSON.stringify({
        compilerOptions: {
          module: 'esnext',
          moduleResolution: 'bundler',
          target: 'es2022',
          jsx: 'react-jsx',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          lib: ['es2023', 'dom', 'dom.iterable'],
          types: [],
        },
        include: ['src'],
      }),
    );
    await Promise.all([
      run(process.execPath, [tsc, '-p', 'nodenext']),
      run(process.execPath, [tsc, '-p', '.']),
    ]);
  });

  it('builds a React app with Vite against the packed @rill/react and @rill/client', async () => {
    write(
      'index.html',
      '<!doctype html><html><body><div id="root"></div><script type="module" src="/src/main.tsx"></script></body></html>\n',
    );
    if (!readdirSync(app).includes('src'))
      throw new Error('the type-check test writes src/main.tsx');
    await run(process.execPath, [
      join(REPO, 'node_modules/vite/bin/vite.js'),
      'build',
      '--logLevel',
      'warn',
    ]);
    const assets = readdirSync(join(app, 'dist/assets')).filter((f) => f.endsWith('.js'));
    expect(assets).toHaveLength(1);
    const js = readFileSync(join(app, 'dist/assets', assets[0]!), 'utf8');
    // The hook and the client are in the bundle: the stream URL the SSE transport builds.
    expect(js).toContain('/v1/stream');
    expect(js).toContain('demo.random');
  });
});
