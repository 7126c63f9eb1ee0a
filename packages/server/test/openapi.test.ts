import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { validate } from '@readme/openapi-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type RillServer } from '../src/server.js';
import { publish, REPO, startServer } from '@rill/testkit';
import { authConfig } from '@rill/testkit/auth';

/**
 * The OpenAPI description (`GET /v1/openapi.json`, docs/openapi.json): generated from the route
 * schemas, valid, complete, true to what the routes answer, and the same schemas validate requests
 * with the catalogue's codes and messages.
 */

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: {
    schemas: Record<string, unknown>;
    securitySchemes: Record<string, { name?: string }>;
  };
};
type Operation = {
  summary?: string;
  tags?: string[];
  operationId?: string;
  security?: unknown[];
  responses: Record<string, { $ref?: string; content?: Record<string, { schema: unknown }> }>;
};

let server: RillServer;
let url: string;
let doc: Doc;
/** The requests the route schemas refused: `METHOD path` → the part refused. */
const refusedBySchema = new Map<string, string>();

beforeAll(async () => {
  server = await createServer(
    // Load shedding off: a busy test machine must not turn a publish into a 503 here.
    { engine: 'memory', port: 0, logLevel: 'silent', overload: { maxEventLoopDelay: 0 } },
    { logger: pino({ level: 'silent' }) },
  );
  server.app.addHook('onError', async (req, _reply, err) => {
    const part = (err as { validationContext?: string }).validationContext;
    if ((err as { validation?: unknown }).validation !== undefined && part !== undefined) {
      refusedBySchema.set(`${req.method} ${req.url}`, part);
    }
  });
  url = await server.listen();
  const res = await fetch(`${url}/v1/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  doc = (await res.json()) as Doc;
  expect((await publish(url, 'exists', { type: 't', data: { n: 1 } })).status).toBe(201);
});
afterAll(async () => server.close());

/** The routes of the app (method, Fastify path), from its route tree. */
function routesOf(s: RillServer): { method: string; url: string }[] {
  const out: { method: string; url: string }[] = [];
  const stack: string[] = [];
  for (const line of s.app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]+)\))?/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const path = (depth === 0 ? '' : stack[depth - 1]!) + m[2]!;
    stack[depth] = path;
    for (const method of (m[3] ?? '').split(',').map((x) => x.trim())) {
      if (method !== '' && method !== 'HEAD' && method !== 'OPTIONS')
        out.push({ method, url: path });
    }
  }
  return out;
}

describe('the OpenAPI description', () => {
  it('is the checked-in docs/openapi.json (npm run openapi writes it)', () => {
    const checkedIn = JSON.parse(readFileSync(join(REPO, 'docs/openapi.json'), 'utf8')) as Doc;
    expect(doc.openapi).toBe('3.1.0');
    expect(
      doc,
      'docs/openapi.json differs from what the server describes: run npm run openapi',
    ).toEqual(checkedIn);
  });

  it('is valid OpenAPI 3.1 to @readme/openapi-parser, which refuses a broken copy', async () => {
    const r = await validate(structuredClone(doc) as never);
    expect(r.valid ? [] : r.errors).toEqual([]);
    expect(r.valid).toBe(true);
    const broken = structuredClone(doc);
    broken.paths['/v1/topics/{topic}']!.get!.responses = {};
    (
      broken.paths['/v1/stream']!.get as unknown as { parameters: { in: string }[] }
    ).parameters[0]!.in = 'body';
    expect((await validate(broken as never)).valid).toBe(false);
  });

  it('describes every route of the server with a summary, tags, an id and its errors', () => {
    // The dashboard's files (served by @fastify/static) are not API: /ui stands for them.
    const routes = routesOf(server).filter((r) => r.url === '/ui' || !r.url.startsWith('/ui'));
    expect(routes.length).toBeGreaterThan(20);
    const ids = new Set<string>();
    for (const r of routes) {
      const path = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
      const op = doc.paths[path]?.[r.method.toLowerCase()];
      const what = `${r.method} ${r.url}`;
      expect(op, `${what} is not described`).toBeDefined();
      expect(op!.summary, what).toBeTruthy();
      expect(op!.tags?.length, what).toBeGreaterThan(0);
      expect(op!.operationId, what).toBeTruthy();
      ids.add(op!.operationId!);
      expect(op!.responses.default?.content?.['application/json']?.schema, what).toEqual({
        $ref: '#/components/schemas/Error',
      });
    }
    expect(ids.size).toBe(routes.length);
    // Streams are HTTP operations with their content types; their frames are in the AsyncAPI one.
    const stream = doc.paths['/v1/topics/{topic}/stream']!.get!;
    expect(Object.keys(stream.responses['200']!.content!)).toEqual([
      'text/event-stream',
      'application/x-ndjson',
    ]);
    expect(JSON.stringify(stream)).toContain('asyncapi.yaml');
  });

  it('names the credentials the server takes; open routes say so', () => {
    expect(Object.keys(doc.components.securitySchemes)).toEqual(['bearer', 'accessToken']);
    expect(doc.components.securitySchemes.accessToken!.name).toBe('access_token');
    for (const open of ['/healthz', '/readyz', '/', '/v1/openapi.json']) {
      expect(doc.paths[open]!.get!.security, open).toEqual([]);
    }
    expect(doc.paths['/v1/topics']!.get!.security).toBeUndefined();
  });
});

describe('answers are what the description says', () => {
  const ajv = new Ajv2020({ strict: false, allowUnionTypes: true });
  let compiled = false;

  /** Checks `body` against the documented JSON answer of `method path` with `status`. */
  function conforms(method: string, path: string, status: number, body: unknown): void {
    if (!compiled) {
      ajv.addSchema({ $id: 'openapi.json', components: doc.components });
      compiled = true;
    }
    const responses = doc.paths[path]![method]!.responses;
    const answer = responses[String(status)] ?? responses.default!;
    const schema = answer.$ref ?? answer.content?.['application/json']?.schema;
    expect(schema, `${method} ${path} ${status} is described`).toBeDefined();
    const check = ajv.compile(
      typeof schema === 'string'
        ? { $ref: `openapi.json${schema}` }
        : JSON.parse(
            JSON.stringify(schema).replaceAll('"#/components/', '"openapi.json#/components/'),
          ),
    );
    expect(check(body) ? [] : check.errors, `${method} ${path} ${status}`).toEqual([]);
  }

  async function call(
    method: string,
    path: string,
    init: RequestInit = {},
  ): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${url}${path}`, { method, ...init });
    return { status: res.status, body: res.status === 204 ? null : await res.json() };
  }
  const jsonBody = (b: unknown): RequestInit => ({
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(b),
  });

  it('for the JSON routes, successes and errors alike', async () => {
    const cases: [string, string, string, RequestInit?][] = [
      [
        'post',
        '/v1/topics/{topic}/events',
        '/v1/topics/exists/events',
        jsonBody([{ data: 2 }, { key: 'k', data: 3 }]),
      ],
      [
        'post',
        '/v1/topics/{topic}/events',
        '/v1/topics/exists/events',
        jsonBody({ ephemeral: true, data: 1 }),
      ],
      ['post', '/v1/topics/{topic}/events', '/v1/topics/exists/events', jsonBody({ nope: 1 })],
      ['get', '/v1/topics', '/v1/topics'],
      ['get', '/v1/topics', '/v1/topics?limit=x'],
      ['get', '/v1/topics/{topic}', '/v1/topics/exists'],
      ['get', '/v1/topics/{topic}', '/v1/topics/missing'],
      ['get', '/v1/topics/{topic}/events', '/v1/topics/exists/events?limit=2'],
      ['get', '/v1/topics/{topic}/events', '/v1/topics/missing/events?wait=0.01'],
      ['get', '/v1/events', '/v1/events?topics=exists,ex.*&from=earliest'],
      ['get', '/v1/topics/{topic}/presence', '/v1/topics/exists/presence'],
      ['get', '/v1/topics/{topic}/presence/count', '/v1/topics/exists/presence/count'],
      ['get', '/v1/topics/{topic}/retention', '/v1/topics/exists/retention'],
      [
        'put',
        '/v1/topics/{topic}/retention',
        '/v1/topics/exists/retention',
        jsonBody({ maxAge: '1h' }),
      ],
      ['post', '/v1/topics/{topic}/purge', '/v1/topics/exists/purge', jsonBody({ before: 1 })],
      ['get', '/v1/connections', '/v1/connections'],
      ['delete', '/v1/connections/{id}', '/v1/connections/nope'],
      ['get', '/healthz', '/healthz'],
      ['get', '/readyz', '/readyz'],
      ['get', '/', '/'],
      ['get', '/v1/ws', '/v1/ws'],
      ['delete', '/v1/topics/{topic}/retention', '/v1/topics/exists/retention'],
    ];
    for (const [method, path, real, init] of cases) {
      const r = await call(method.toUpperCase(), real, init);
      expect(r.status, `${method} ${real}`).toBeLessThan(500);
      conforms(method, path, r.status, r.body);
    }
  });
});

describe('the route schemas validate requests', () => {
  const retention = '/v1/topics/exists/retention';
  const cases: { path: string; init?: RequestInit; part: string; code: string; message: string }[] =
    [
      {
        path: '/v1/topics?limit=0',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'limit must be an integer from 1 to 1000',
      },
      {
        path: '/v1/topics?prefix=a%20b',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'prefix must be at most 200 characters of [A-Za-z0-9_.~-]',
      },
      {
        path: '/v1/topics?pattern=a.%3E.b',
        part: 'querystring',
        code: 'invalid_pattern',
        message:
          'Invalid topic pattern "a.>.b": segments of [A-Za-z0-9_~-], "*" for one segment, ">" as the last segment for the rest',
      },
      {
        path: '/v1/topics/a..b',
        part: 'params',
        code: 'invalid_topic',
        message:
          'Invalid topic name "a..b": use 1-200 characters of [A-Za-z0-9_.~-] with non-empty segments separated by "."',
      },
      {
        path: '/v1/topics/exists/events?wait=60.5',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'wait must be 0 to 60 seconds',
      },
      {
        path: '/v1/stream',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'topics is required: a comma-separated list of topics or patterns',
      },
      {
        path: '/v1/topics/exists/stream?format=xml',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'format must be sse or ndjson',
      },
      {
        path: '/v1/topics/exists/stream?presence=maybe',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'presence must be true or false',
      },
      {
        path: '/v1/events?topics=exists&from=0',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'from must be now, earliest, or a seq (1 or more)',
      },
      {
        path: '/v1/events?topics=exists&since=soon',
        part: 'querystring',
        code: 'invalid_parameter',
        message:
          'since must be a seq, a time in ms, or an ISO 8601 time such as 2026-11-22T10:00:00Z',
      },
      {
        path: '/v1/connections?after=x',
        part: 'querystring',
        code: 'invalid_parameter',
        message: 'after must be the next of a connections page',
      },
      {
        path: retention,
        init: {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: '{"maxEvents":-1}',
        },
        part: 'body',
        code: 'invalid_parameter',
        message: '"maxEvents" must be a whole number >= 0',
      },
      {
        path: retention,
        init: {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: '{"nope":1}',
        },
        part: 'body',
        code: 'invalid_parameter',
        message: 'Unknown member "nope": allowed are maxEvents, maxAge, maxBytes',
      },
      {
        path: '/v1/topics/exists/purge',
        init: { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' },
        part: 'body',
        code: 'invalid_parameter',
        message: 'Give one of "before" (a seq) or "beforeTime"',
      },
    ];

  it.each(cases)('$path $init.body → $code', async (c) => {
    const res = await fetch(`${url}${c.path}`, c.init);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(res.status).toBe(400);
    expect(body.error).toMatchObject({ code: c.code, message: c.message });
    expect(refusedBySchema.get(`${c.init?.method ?? 'GET'} ${c.path}`)).toBe(c.part);
  });

  it('leaves the publish body to the one event validator (described, parsed once)', async () => {
    const res = await fetch(`${url}/v1/topics/exists/events?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"data":1,"extra":true}',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe(
      'Unknown event field "extra": allowed are type, key, data, trace, ephemeral',
    );
    expect(refusedBySchema.has('POST /v1/topics/exists/events?x=1')).toBe(false);
  });
});

describe('on a server with authentication', () => {
  it('is open to anyone and names the configured auth cookie', async () => {
    const s = await startServer({ auth: authConfig({ cookie: 'rill_token' }) });
    try {
      expect((await fetch(`${s.url}/v1/topics`)).status).toBe(401);
      const res = await fetch(`${s.url}/v1/openapi.json`);
      expect(res.status).toBe(200);
      const d = (await res.json()) as Doc;
      expect(d.components.securitySchemes.cookie).toMatchObject({
        in: 'cookie',
        name: 'rill_token',
      });
      expect(d.paths).toEqual(doc.paths);
    } finally {
      await s.close();
    }
  });
});
