// Minified + gzipped size of the client's entry points, as an app bundler would ship them.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const LIMIT = 8 * 1024;
let failed = false;
for (const entry of ['sse.js', 'index.js']) {
  const out = await build({
    entryPoints: [dist + entry],
    bundle: true,
    minify: true,
    format: 'esm',
    write: false,
    platform: 'browser',
  });
  const min = out.outputFiles[0].contents;
  const gz = gzipSync(min, { level: 9 }).length;
  const name = entry === 'sse.js' ? '@rill/client/sse' : '@rill/client';
  console.log(`${name}: ${min.length} B minified, ${gz} B gzipped`);
  if (entry === 'sse.js' && gz > LIMIT) {
    console.error(`${name} is over ${LIMIT} B gzipped`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
