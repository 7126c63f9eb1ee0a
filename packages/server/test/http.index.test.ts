/** `GET /`: a short JSON index of the API for scripts; the demo page at `/demo` with `--demo` only. */
import { afterEach, describe, expect, it } from 'vitest';
import { startServer } from '@rill/testkit';

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

describe('GET /', () => {
  it('without the demo lists the API endpoints as JSON', async () => {
    const s = await startServer();
    closers.push(s.close);
    const res = await fetch(`${s.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as { name: string; endpoints: Record<string, string> };
    expect(body.name).toBe('rill');
    expect(body.endpoints.publish).toBe('POST /v1/topics/{topic}/events');
    expect(body.endpoints.stream).toBe('GET /v1/topics/{topic}/stream');
    expect(body.endpoints.ready).toBe('GET /readyz');
    // Every listed endpoint exists: none of them answers 404.
    for (const e of Object.values(body.endpoints)) {
      const [method, path] = e.split(' ') as [string, string];
      const url = `${s.url}${path.replace('{topic|pattern},…', 'a').replace('{topic}', 'a')}`;
      const r = await fetch(url, {
        method,
        headers: { 'content-type': 'application/json' },
        ...(method === 'POST' ? { body: '{"data":1}' } : {}),
        signal: AbortSignal.timeout(5_000),
      }).catch((err: unknown) => err as Error);
      // Streams stay open: their headers are the answer.
      if (r instanceof Error) throw new Error(`${e}: ${r.message}`);
      expect(r.status, e).not.toBe(404);
      await r.body?.cancel();
    }
  });

  it('the demo page is at /demo with the demo, and only then', async () => {
    const without = await startServer();
    closers.push(without.close);
    expect((await fetch(`${without.url}/demo`)).status).toBe(404);
    const s = await startServer({ demo: true });
    closers.push(s.close);
    expect((await fetch(`${s.url}/`)).headers.get('content-type')).toMatch(/^application\/json/);
    const res = await fetch(`${s.url}/demo`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await res.text()).toContain('demo.random');
  });
});
