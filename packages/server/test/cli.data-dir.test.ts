/**
 * `rill serve --data-dir`: the lmdb data directory is a directory whatever its name, and a path
 * that is not one stops start-up with a message naming it.
 */
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnLogged, within } from './cli-ops-helpers.js';
import { publish, tempDir, useCleanups } from '@rill/testkit';

const { cleanups } = useCleanups();

function scratch(): string {
  const d = tempDir('rill-datadir-');
  cleanups.push(() => d.remove());
  return d.path;
}

describe('--data-dir', () => {
  it('is a directory holding the database even when its name has an extension', async () => {
    const dataDir = join(scratch(), 'rill.data');
    const s = spawnLogged(['--data-dir', dataDir, '--port', '0']);
    cleanups.push(() => s.kill());
    const url = await s.listening;
    expect((await publish(url, 'kept', { data: 1 })).status).toBe(201);
    s.proc.kill('SIGTERM');
    expect(await within(s.exited, 10_000, 'rill to exit')).toBe(0);
    expect(statSync(dataDir).isDirectory()).toBe(true);
    expect(existsSync(join(dataDir, 'data.mdb'))).toBe(true);
    expect(existsSync(`${dataDir}-lock`)).toBe(false);

    // And it opens again with the event in it.
    const again = spawnLogged(['--data-dir', dataDir, '--port', '0']);
    cleanups.push(() => again.kill());
    const url2 = await again.listening;
    const page = (await (await fetch(`${url2}/v1/topics/kept/events`)).json()) as {
      events: Array<{ data: unknown }>;
    };
    expect(page.events.map((e) => e.data)).toEqual([1]);
  });

  it('that is an existing file stops start-up with a message naming it', async () => {
    const file = join(scratch(), 'x.data');
    writeFileSync(file, '');
    const s = spawnLogged(['--data-dir', file, '--port', '0']);
    cleanups.push(() => s.kill());
    const code = await within(s.exited, 15_000, 'rill to exit');
    expect(code).not.toBe(0);
    expect(s.stdout()).not.toMatch(/listening/);
    expect(s.stderr()).toContain(`${file} is a file, not a directory`);
    expect(s.stderr()).not.toMatch(/\n\s+at /);
    // Nothing was written next to it.
    expect(statSync(file).size).toBe(0);
    expect(existsSync(`${file}-lock`)).toBe(false);
  });
});
