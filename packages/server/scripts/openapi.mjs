// Writes docs/openapi.json: the OpenAPI description a server with the default configuration serves
// at GET /v1/openapi.json (generated from the route schemas; see packages/server/src/api/openapi.ts).
// Run it through `npm run openapi` (which builds first) whenever a route or its schema changes;
// packages/server/test/openapi.test.ts fails while the copy differs from what the server serves.
import { writeFileSync } from 'node:fs';
import { pino } from 'pino';
import { createServer } from '../dist/index.js';

const out = new URL('../../../docs/openapi.json', import.meta.url);
const server = await createServer(
  { engine: 'memory', port: 0, logLevel: 'silent' },
  { logger: pino({ level: 'silent' }) },
);
try {
  await server.app.ready();
  writeFileSync(out, `${JSON.stringify(server.app.swagger(), null, 2)}\n`);
  console.log(`wrote ${out.pathname}`);
} finally {
  await server.close();
}
