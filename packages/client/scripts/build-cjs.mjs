// The CommonJS build of @rill/client (`require('@rill/client')`): the same sources compiled by tsc
// as CommonJS into dist/cjs/, whose package.json makes Node and TypeScript read its .js and .d.ts
// files as CommonJS. The ESM build (dist/*.js) is what `import` gets.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const out = fileURLToPath(new URL('../dist/cjs/', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.cjs.json'], { cwd: pkg, stdio: 'inherit' });
mkdirSync(out, { recursive: true });
writeFileSync(`${out}package.json`, `${JSON.stringify({ type: 'commonjs' })}\n`);
