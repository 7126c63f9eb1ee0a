#!/usr/bin/env node
// Runs the example apps on one Rill server (same origin: no CORS needed).
//
//   npm run example:random   → http://127.0.0.1:8080/examples/random/
//   npm run example:ticker   → http://127.0.0.1:8080/examples/ticker/
//   npm run example:chat     → http://127.0.0.1:8080/examples/chat/
//
// `node examples/serve.mjs [random|ticker|chat|all] [--port 8080]` after `npm run build`.
import { randomBytes, randomInt } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { SignJWT } from 'jose';
import { createServer } from '@rill/server';

const HERE = fileURLToPath(new URL('.', import.meta.url));
export const EXAMPLES = {
  random: { entry: 'random/main.ts', title: 'Rill: random numbers' },
  ticker: { entry: 'ticker/main.tsx', title: 'Rill: live ticker' },
  chat: { entry: 'chat/main.tsx', title: 'Rill: who is typing' },
};
export const SYMBOLS = ['AAPL', 'MSFT', 'NVDA', 'TSLA', 'BTC-USD', 'ETH-USD'];

function page(title, name) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; padding: 0 1rem; color: #222; }
  .status { font-size: 12px; color: #777; } .up { color: #0a7d32; } .down { color: #c62828; }
  table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .6rem; text-align: right; border-bottom: 1px solid #eee; }
  td:first-child, th:first-child { text-align: left; } .big { font-size: 5rem; font-variant-numeric: tabular-nums; }
  .here { color: #0a7d32; } .typing { min-height: 1.5em; color: #777; font-style: italic; } ul.msgs { list-style: none; padding: 0; }
</style></head>
<body><div id="root"></div><script type="module" src="/examples/${name}/app.js"></script></body></html>`;
}

/** Bundles one example's page script (React JSX through esbuild; no Vite plugin needed). */
async function bundle(entry, dev) {
  const out = await build({
    entryPoints: [HERE + entry],
    bundle: true,
    format: 'esm',
    write: false,
    minify: !dev,
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': JSON.stringify(dev ? 'development' : 'production') },
    logLevel: 'silent',
  });
  return out.outputFiles[0].text;
}

/**
 * Starts a Rill server with the example pages and their feeds. Returns its URL and a `close`.
 * @param {{ names?: string[], port?: number, feeds?: boolean, dev?: boolean, tickMs?: number }} o
 */
export async function startExamples(o = {}) {
  const names = o.names ?? Object.keys(EXAMPLES);
  // Anyone may read and write (no sign-in in these demos), but the chat asks for a token naming
  // its user: presence lists subscribers by their token's `sub`, with its `rill.info`.
  const secret = randomBytes(32).toString('hex');
  const server = await createServer({
    engine: 'memory',
    port: o.port ?? 8080,
    logLevel: 'warn',
    auth: { jwt: { secret }, anonymous: { subscribe: ['>'], publish: ['>'] } },
  });
  if (names.includes('chat')) {
    // What an application's backend does once it knows who the user is: a short-lived token.
    server.app.get('/examples/chat/token', async (req, reply) => {
      const name = String(req.query.name ?? '').slice(0, 32);
      if (!/^[\w-]+$/.test(name)) return reply.code(400).send('name: letters, digits, - and _');
      const token = await new SignJWT({
        rill: {
          subscribe: ['chat.>', 'typing.>'],
          publish: ['chat.>', 'typing.>'],
          info: { name },
        },
      })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(name)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(Buffer.from(secret));
      return reply.type('text/plain; charset=utf-8').send(token);
    });
  }
  for (const name of names) {
    const ex = EXAMPLES[name];
    if (!ex) throw new Error(`unknown example ${name}: one of ${Object.keys(EXAMPLES).join(', ')}`);
    const js = await bundle(ex.entry, o.dev ?? false);
    server.app.get(`/examples/${name}/`, async (_req, reply) =>
      reply.type('text/html; charset=utf-8').send(page(ex.title, name)),
    );
    server.app.get(`/examples/${name}/app.js`, async (_req, reply) =>
      reply.type('text/javascript; charset=utf-8').send(js),
    );
  }
  const timers = [];
  if (o.feeds ?? true) {
    const tick = o.tickMs ?? 100;
    if (names.includes('random')) {
      // The seed's stream: a random integer 0–99 every 100 ms.
      timers.push(
        setInterval(() => {
          server.engine.append('demo.random', [{ data: String(randomInt(100)) }]).catch(() => {});
        }, tick),
      );
    }
    if (names.includes('ticker')) {
      const prices = new Map(SYMBOLS.map((s, i) => [s, [190, 420, 130, 250, 97000, 3400][i]]));
      timers.push(
        setInterval(() => {
          const sym = SYMBOLS[randomInt(SYMBOLS.length)];
          const p = prices.get(sym) * (1 + (randomInt(2001) - 1000) / 200000);
          prices.set(sym, p);
          const data = JSON.stringify({ symbol: sym, price: Math.round(p * 100) / 100 });
          server.engine.append(`prices.${sym}`, [{ type: 'tick', data }]).catch(() => {});
        }, tick * 2.5),
      );
    }
  }
  const url = await server.listen();
  return {
    url,
    server,
    close: async () => {
      for (const t of timers) clearInterval(t);
      await server.close();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const pi = args.indexOf('--port');
  const port = pi === -1 ? Number(process.env.PORT ?? 8080) : Number(args[pi + 1]);
  const which = args.find((a, i) => !a.startsWith('--') && (pi === -1 || i !== pi + 1)) ?? 'all';
  const names = which === 'all' ? Object.keys(EXAMPLES) : [which];
  const ex = await startExamples({ names, port });
  for (const n of names) process.stdout.write(`${EXAMPLES[n].title}: ${ex.url}/examples/${n}/\n`);
  const stop = () => void ex.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
