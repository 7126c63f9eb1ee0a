/**
 * A real Prometheus (Debian's `prometheus` package) scrapes a Rill server: after a known workload
 * its query API returns the expected values. Fails, not skips, when Prometheus is missing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, startServer, systemBinary, tempDir, useCleanups, waitFor } from '@rill/testkit';
import { apiKey, authConfig } from '@rill/testkit/auth';

const { cleanups } = useCleanups();

/** Starts Prometheus scraping `target` (host:port) every second; resolves with its URL. */
async function startPrometheus(target: string, bearerToken?: string): Promise<string> {
  const bin = systemBinary('prometheus');
  const dir = tempDir('rill-prom-');
  cleanups.push(() => dir.remove());
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    '  - job_name: rill',
    ...(bearerToken === undefined
      ? []
      : ['    authorization:', '      type: Bearer', `      credentials: ${bearerToken}`]),
    '    static_configs:',
    `      - targets: ['${target}']`,
  ].join('\n');
  writeFileSync(join(dir.path, 'prometheus.yml'), config);
  const port = await freePort();
  const proc: ChildProcess = spawn(
    bin,
    [
      `--config.file=${join(dir.path, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir.path, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`prometheus exited: ${stderr}`);
      return fetch(`${url}/-/ready`).then(
        (r) => r.status === 200,
        () => false,
      );
    },
    30_000,
    100,
  );
  return url;
}

/** The value of an instant query returning one series, or null while it returns none. */
async function query(prom: string, q: string): Promise<number | null> {
  const res = await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as {
    status: string;
    data: { result: Array<{ value: [number, string] }> };
  };
  expect(body.status).toBe('success');
  const r = body.data.result;
  return r.length === 0 ? null : Number(r[0]!.value[1]);
}

describe('Prometheus scraping /metrics', () => {
  it('sees 1,000 published events as rill_events_published_total rising by 1,000', async () => {
    // With authentication on, as a production server would be: the scrape uses an admin key.
    const admin = apiKey('prometheus', { admin: true });
    const s = await startServer({ auth: authConfig({ apiKeys: [admin.entry] }) });
    cleanups.push(s.close);
    const target = new URL(s.url).host;
    const prom = await startPrometheus(target, admin.key);
    // The target is up (the scrape authenticated) before the workload starts.
    await waitFor(async () => (await query(prom, 'up{job="rill"}')) === 1, 30_000, 200);
    const base = await query(prom, 'sum(rill_events_published_total{job="rill"})');
    expect(base).toBe(0);

    // 1,000 events in 10 requests of 100.
    await publishRangeAs(s.url, admin.key);
    await waitFor(
      async () => (await query(prom, 'sum(rill_events_published_total{job="rill"})')) === 1000,
      30_000,
      200,
    );
    expect(
      await query(prom, 'sum(rill_publish_duration_seconds_count{job="rill",transport="http"})'),
    ).toBe(10);
    expect(await query(prom, 'sum(rill_engine_append_duration_seconds_count{job="rill"})')).toBe(
      10,
    );
    expect(await query(prom, 'rill_build_info{job="rill",engine="memory"}')).toBe(1);
  }, 90_000);
});

/** 1,000 events on `prom` with an API key, 100 per request. */
async function publishRangeAs(url: string, key: string): Promise<void> {
  for (let n = 0; n < 1000; n += 100) {
    const body = Array.from({ length: 100 }, (_, i) => ({ data: { n: n + i } }));
    const res = await fetch(`${url}/v1/topics/prom/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(201);
  }
}
