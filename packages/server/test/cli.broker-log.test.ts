/**
 * `rill serve` with a broker that is not there: it says so at start-up (URL with the password
 * redacted, and the cause), keeps retrying with /readyz at 503, and says so once more when the
 * broker comes back.
 */
import { describe, expect, it } from 'vitest';
import { spawnLogged, type LogLine, type LoggedServer } from './cli-ops-helpers.js';
import { freePort, useCleanups } from '@rill/testkit';
import { OwnNats } from '@rill/testkit/nats';
import { OwnRedis } from '@rill/testkit/redis';
import { redactUrl } from '../src/model/redact.js';

const { cleanups } = useCleanups();

function serve(args: string[]): LoggedServer {
  const s = spawnLogged(args);
  cleanups.push(() => s.kill());
  return s;
}

async function readyz(url: string): Promise<number> {
  return (await fetch(`${url}/readyz`)).status;
}

async function untilReady(url: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while ((await readyz(url)) !== 200) {
    if (Date.now() > end) throw new Error(`${url} not ready in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const WARN = 40;

describe('an unreachable broker at start-up', () => {
  it('Redis: one warning naming the URL (password redacted) and the cause, then one line when it is back', async () => {
    const port = await freePort();
    const secret = 's3cr3t-pw';
    const s = serve([
      '--engine',
      'redis',
      '--redis-url',
      `redis://rill:${secret}@127.0.0.1:${port}`,
      '--port',
      '0',
    ]);
    const url = await s.listening;
    const shown = `redis://rill:[redacted]@127.0.0.1:${port}`;
    const isDown = (l: LogLine): boolean => l.level === WARN && (l.msg ?? '').includes(shown);
    const warn = await s.waitLog(isDown);
    expect(warn.msg).toMatch(/unreachable/);
    expect(warn.msg).toContain('ECONNREFUSED');
    expect(await readyz(url)).toBe(503);

    // Redis comes up on that port (user rill with that password): rill connects and says so.
    const redis = new OwnRedisWithUser(port, secret);
    cleanups.push(() => redis.destroy());
    await redis.start();
    await s.waitLog((l) => /reachable again/.test(l.msg ?? '') && (l.msg ?? '').includes(shown));
    await untilReady(url);
    expect(s.lines().filter(isDown)).toHaveLength(1);
    expect(s.stdout() + s.stderr()).not.toContain(secret);
  });

  it('NATS: one warning naming the URL and the cause, then one line when it is back', async () => {
    const port = await freePort();
    const natsUrl = `nats://127.0.0.1:${port}`;
    const s = serve(['--engine', 'nats', '--nats-url', natsUrl, '--port', '0']);
    const url = await s.listening;
    const isDown = (l: LogLine): boolean => l.level === WARN && (l.msg ?? '').includes(natsUrl);
    const warn = await s.waitLog(isDown);
    expect(warn.msg).toMatch(/unreachable \(.+\)/);
    expect(await readyz(url)).toBe(503);

    const nats = new OwnNats(port);
    cleanups.push(() => nats.destroy());
    await nats.start();
    await s.waitLog((l) => /reachable again/.test(l.msg ?? '') && (l.msg ?? '').includes(natsUrl));
    await untilReady(url);
    expect(s.lines().filter(isDown)).toHaveLength(1);
  });
});

describe('redactUrl', () => {
  it('hides passwords and bare user parts, keeps the rest', () => {
    expect(redactUrl('redis://:pw@h:1/0')).toBe('redis://:[redacted]@h:1/0');
    expect(redactUrl('redis://u:pw@h:1')).toBe('redis://u:[redacted]@h:1');
    expect(redactUrl('nats://tok@a:1,nats://u:p@b:2')).toBe(
      'nats://[redacted]@a:1,nats://u:[redacted]@b:2',
    );
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
  });
});

/** A private Redis with a `rill` user whose password is given. */
class OwnRedisWithUser extends OwnRedis {
  constructor(
    port: number,
    private readonly password: string,
  ) {
    super(port);
  }

  protected override args(): string[] {
    return [...super.args(), '--user', 'rill', 'on', `>${this.password}`, '~*', '&*', '+@all'];
  }
}
