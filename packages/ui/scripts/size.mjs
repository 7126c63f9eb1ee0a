// The dashboard's bundle budget: everything a first load of /ui/ fetches (index, scripts, styles),
// gzipped as a server or proxy would send it, must stay within 150 KB. Run after the build.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const dir = fileURLToPath(new URL('../../server/dist/ui/', import.meta.url));
const LIMIT = 150 * 1024;

let files;
try {
  files = ['index.html', ...readdirSync(join(dir, 'assets')).map((f) => join('assets', f))];
} catch {
  console.error(`No dashboard build in ${dir}: run npm run build first`);
  process.exit(1);
}
let total = 0;
for (const f of files.filter((f) => /\.(html|js|css)$/.test(f))) {
  const raw = readFileSync(join(dir, f));
  const gz = gzipSync(raw, { level: 9 }).length;
  total += gz;
  console.log(`${f}: ${raw.length} B, ${gz} B gzipped`);
}
console.log(`dashboard: ${total} B gzipped (budget ${LIMIT} B)`);
if (total > LIMIT) {
  console.error(`The dashboard is over its budget of ${LIMIT} B gzipped`);
  process.exit(1);
}
