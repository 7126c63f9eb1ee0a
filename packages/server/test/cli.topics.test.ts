/**
 * `rill topics`: the real CLI (the built bin, a child process) against a real server. list, info,
 * delete, purge and retention print a table or `--json`, do what the admin routes do (checked
 * through the HTTP API), and exit 0 when done, 1 when the server refuses or cannot be reached, 2
 * for a mistake in the command line (nothing sent then).
 */
import { describe, expect, it } from 'vitest';
import {
  BIN,
  freePort,
  history,
  publishRange,
  startServer,
  useCleanups,
  waitFor,
} from '@rill/testkit';
import { authConfig, sign } from '@rill/testkit/auth';
import { rill, killAtCleanup, type Run } from './cli-ops-helpers.js';

// Each command is a process that loads the whole CLI: seconds apiece on a busy machine.
describe('rill topics', { timeout: 600_000 }, () => {
  const { cleanups } = useCleanups();

  async function server(config = {}): Promise<string> {
    const s = await startServer(config);
    cleanups.push(s.close);
    return s.url;
  }

  const track = (r: Run): Run => killAtCleanup(cleanups, r);

  /** Runs `rill topics …` to its end: exit code, stdout, stderr. */
  async function topics(
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ): Promise<{ code: number | string; out: string; err: string }> {
    const r = track(rill(['topics', ...args], '', { RILL_TOKEN: '', ...env }));
    const code = await r.exited;
    return { code, out: r.stdout(), err: r.stderr() };
  }

  async function head(url: string, topic: string): Promise<{ firstSeq: number; lastSeq: number }> {
    const res = await fetch(`${url}/v1/topics/${topic}`);
    expect(res.status).toBe(200);
    return (await res.json()) as { firstSeq: number; lastSeq: number };
  }

  it('list prints a table or JSON, filtered by --pattern or --prefix, cut at --limit', async () => {
    const url = await server();
    await publishRange(url, 'cli.top.a', 1, 3);
    await publishRange(url, 'cli.top.b', 1, 1);
    await publishRange(url, 'other', 1, 2);

    const all = await topics(['list', '--url', url]);
    expect(all.code).toBe(0);
    const lines = all.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TOPIC\s+EVENTS\s+FIRST\s+LAST\s+RATE\/S\s+LAST EVENT$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 4))).toEqual([
      ['cli.top.a', '3', '1', '3'],
      ['cli.top.b', '1', '1', '1'],
      ['other', '2', '1', '2'],
    ]);

    const json = await topics(['list', '--url', url, '--pattern', 'cli.top.*', '--json']);
    expect(json.code).toBe(0);
    const listed = JSON.parse(json.out) as Array<{ topic: string; lastSeq: number }>;
    expect(listed.map((t) => [t.topic, t.lastSeq])).toEqual([
      ['cli.top.a', 3],
      ['cli.top.b', 1],
    ]);

    for (let i = 0; i < 3; i++) await publishRange(url, `many.t${i}`, 1, 1);
    const two = await topics(['list', '--url', url, '--prefix', 'many.', '--limit', '2', '--json']);
    expect((JSON.parse(two.out) as Array<{ topic: string }>).map((t) => t.topic)).toEqual([
      'many.t0',
      'many.t1',
    ]);
  });

  it('info, retention, purge and delete do what the admin routes do', async () => {
    const url = await server();
    await publishRange(url, 'cli.adm', 1, 10);

    const info = await topics(['info', 'cli.adm', '--url', url]);
    expect(info.code).toBe(0);
    expect(info.out).toMatch(/^topic\s+cli\.adm$/m);
    expect(info.out).toMatch(/^events\s+10$/m);
    expect(info.out).toMatch(/^last seq\s+10$/m);

    const set = await topics([
      'retention',
      'cli.adm',
      '--url',
      url,
      '--max-events',
      '4',
      '--max-age',
      '1h',
    ]);
    expect(set.code).toBe(0);
    expect(set.out).toMatch(/^max events\s+4 \(this topic's override\)$/m);
    expect(set.out).toMatch(/^max age\s+1h \(this topic's override\)$/m);
    // The override is applied: the next append trims the log to four events.
    await publishRange(url, 'cli.adm', 1, 1);
    await waitFor(async () => (await head(url, 'cli.adm')).firstSeq === 8);
    // info shows the override too (the token, none here, may see it).
    const withOverride = JSON.parse(
      (await topics(['info', 'cli.adm', '--url', url, '--json'])).out,
    ) as { firstSeq: number; retention: unknown };
    expect(withOverride.firstSeq).toBe(8);
    expect(withOverride.retention).toEqual({
      maxEvents: 4,
      maxAgeMs: 3_600_000,
      maxBytes: 0,
      override: { maxEvents: 4, maxAgeMs: 3_600_000 },
    });

    const cleared = await topics(['retention', 'cli.adm', '--url', url, '--clear', '--json']);
    expect(cleared.code).toBe(0);
    expect(JSON.parse(cleared.out)).toMatchObject({ override: null });

    const purged = await topics(['purge', 'cli.adm', '--url', url, '--before', '10']);
    expect(purged.code).toBe(0);
    expect(purged.out).toMatch(/^purged cli\.adm: 2 events left \(seq 10–11, epoch \S+\)$/m);
    expect(await history(url, 'cli.adm')).toEqual([10, 11]);

    // --before-time: everything before a time after the last event.
    const later = new Date(Date.now() + 1000).toISOString();
    const byTime = await topics([
      'purge',
      'cli.adm',
      '--url',
      url,
      '--before-time',
      later,
      '--json',
    ]);
    expect(byTime.code).toBe(0);
    expect(await history(url, 'cli.adm')).toEqual([]);

    const deleted = await topics(['delete', 'cli.adm', '--url', url, '--yes']);
    expect(deleted.code).toBe(0);
    expect(deleted.out).toBe('deleted cli.adm\n');
    expect((await fetch(`${url}/v1/topics/cli.adm`)).status).toBe(404);

    const again = await topics(['delete', 'cli.adm', '--url', url, '--yes']);
    expect(again.code).toBe(1);
    expect(again.err).toBe('rill: topic_not_found: No topic cli.adm\n');
  });

  it('delete asks on a terminal and deletes only when the name is typed back', async () => {
    const url = await server();
    await publishRange(url, 'cli.ask', 1, 2);
    const onTty = (): Run => {
      const cmd = [process.execPath, BIN, 'topics', 'delete', 'cli.ask', '--url', url]
        .map((a) => `'${a}'`)
        .join(' ');
      return track(rill([], undefined, {}, ['/usr/bin/script', '-qfec', cmd, '/dev/null']));
    };
    const no = onTty();
    await waitFor(() => /Type its name to confirm:/.test(no.stdout()), 20_000);
    no.proc.stdin!.write('y\r');
    expect(await no.exited).toBe(2);
    expect(no.stdout()).toContain('rill: not confirmed: nothing deleted');
    expect((await fetch(`${url}/v1/topics/cli.ask`)).status).toBe(200);

    const yes = onTty();
    await waitFor(() => /Type its name to confirm:/.test(yes.stdout()), 20_000);
    yes.proc.stdin!.write('cli.ask\r');
    expect(await yes.exited).toBe(0);
    expect(yes.stdout()).toContain('deleted cli.ask');
    expect((await fetch(`${url}/v1/topics/cli.ask`)).status).toBe(404);
  });

  it('mistakes in the command line exit 2 and change nothing', async () => {
    const url = await server();
    await publishRange(url, 'cli.use', 1, 3);
    const cases: Array<[string[], string]> = [
      [
        ['delete', 'cli.use'],
        'rill: refusing to delete cli.use without --yes (stdin is not a terminal)\n',
      ],
      [['purge', 'cli.use'], 'rill: give one of --before <seq> or --before-time <time>\n'],
      [
        ['purge', 'cli.use', '--before', 'x'],
        'rill: --before must be a whole number of at least 1 (got "x")\n',
      ],
      [
        ['retention', 'cli.use', '--clear', '--max-events', '1'],
        'rill: --clear takes no --max-events, --max-age or --max-bytes\n',
      ],
      [
        ['retention', 'cli.use', '--max-age', '1x'],
        'rill: --max-age: "1x": expected a duration such as "15s", "500ms", "7d" or a number\n',
      ],
      [
        ['info', 'no topic'],
        'rill: "no topic" is not a topic name (1–200 of A-Z a-z 0-9 _ . ~ -, dot-separated)\n',
      ],
    ];
    for (const [args, err] of cases) {
      const r = await topics([...args, '--url', url]);
      expect([args, r.code, r.err]).toEqual([args, 2, err]);
    }
    expect(await history(url, 'cli.use')).toEqual([1, 2, 3]);
    const r = await fetch(`${url}/v1/topics/cli.use/retention`);
    expect(await r.json()).toMatchObject({ override: null });
  });

  it('needs the admin permission where the route does, and names an unreachable server', async () => {
    const url = await server({ auth: authConfig() });
    const admin = await sign({ sub: 'root', admin: true });
    const reader = await sign({ sub: 'ann', subscribe: ['cli.>'], publish: ['cli.>'] });
    await fetch(`${url}/v1/topics/cli.auth/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
      body: JSON.stringify({ data: 1 }),
    });

    const refused = await topics(['delete', 'cli.auth', '--url', url, '--yes'], {
      RILL_TOKEN: reader,
    });
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(
      /^rill: forbidden: .*admin permission \(--token or RILL_TOKEN: a token or API key with the admin permission\)\n$/,
    );
    // A reader sees the topic's info (with the configured limits, the override being admin-only).
    const info = await topics(['info', 'cli.auth', '--url', url, '--json'], { RILL_TOKEN: reader });
    expect(info.code).toBe(0);
    expect(JSON.parse(info.out)).toMatchObject({ topic: 'cli.auth', lastSeq: 1 });
    const anonymous = await topics(['list', '--url', url]);
    expect(anonymous.code).toBe(1);
    expect(anonymous.err).toMatch(/^rill: unauthorized: /);

    const done = await topics(['delete', 'cli.auth', '--url', url, '--yes', '--token', admin]);
    expect(done.code).toBe(0);
    expect(done.out + done.err).not.toContain(admin);

    const dead = `http://127.0.0.1:${await freePort()}`;
    const down = await topics(['list', '--url', dead]);
    expect(down.code).toBe(1);
    expect(down.err).toBe(
      `rill: cannot reach ${dead} (connection refused: is rill serve running there?)\n`,
    );
  });
});
