/**
 * Commands the README gives operators, run as written: the bench's `--server-pid` pgrep pattern
 * against the processes `npm start` really starts, and
 * `node packages/bench/summarize.js packages/bench/results`.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { within } from './cli-ops-helpers.js';
import { freePort, REPO, useCleanups } from '@rill/testkit';

const run = promisify(execFile);
const { cleanups } = useCleanups();

const readme = readFileSync(join(REPO, 'README.md'), 'utf8');

/** A process's command line as pgrep -f sees it: its arguments joined by spaces. */
function cmdline(pid: number): string {
  return readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0$/, '').split('\0').join(' ');
}

describe('README', () => {
  it("the bench's --server-pid pattern matches the server under `npm start` and nothing around it", async () => {
    const m = /--server-pid "\$\(pgrep -nf '([^']+)'\)"/.exec(readme);
    expect(m).not.toBeNull();
    // pgrep takes an extended regular expression; this one means the same in JavaScript.
    const pattern = new RegExp(m![1]!);
    // What `npm start` runs: `sh -c "npm run build && rill serve --demo"`, rill from node_modules/.bin.
    const port = await freePort();
    const sh = spawn('sh', ['-c', `true && rill serve --demo --engine memory --port ${port}`], {
      env: { ...process.env, PATH: `${join(REPO, 'node_modules/.bin')}:${process.env.PATH}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    sh.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => sh.once('exit', () => r()));
    const serverPid = await within(
      new Promise<number>((resolve) => {
        const check = (): void => {
          const pid = /"pid":(\d+)/.exec(out);
          if (pid && /"url":"http/.test(out)) resolve(Number(pid[1]));
          else sh.stdout!.once('data', check);
        };
        check();
      }),
      20_000,
      'rill to listen',
    );
    cleanups.push(async () => {
      process.kill(serverPid, 'SIGTERM');
      await exited;
    });
    expect(serverPid).not.toBe(sh.pid);
    expect(cmdline(sh.pid!)).toContain('rill serve');
    expect(pattern.test(cmdline(sh.pid!))).toBe(false);
    expect(pattern.test(cmdline(serverPid))).toBe(true);
  });

  it('`node packages/bench/summarize.js packages/bench/results` prints the tables of every round', async () => {
    expect(readme + readFileSync(join(REPO, 'docs/benchmarks.md'), 'utf8')).toContain(
      'node packages/bench/summarize.js packages/bench/results',
    );
    const { stdout } = await run(
      process.execPath,
      ['packages/bench/summarize.js', 'packages/bench/results'],
      { cwd: REPO },
    );
    expect(stdout).toContain('### round5\n');
    expect(stdout).toContain('#### Fan-out, 1000 SSE subscribers, 1 topic');
  });
});
