/**
 * `rill bench` comes from the bench package, loaded at run time: with the package the command is
 * the generator's; without it, a stub that says what is missing and exits 1, while the rest of
 * the CLI works.
 */
import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { registerBench } from '../src/cli/bench-command.js';

afterEach(() => {
  vi.restoreAllMocks();
  process.exitCode = undefined;
});

function program(): Command {
  return new Command('rill').exitOverride();
}

describe('rill bench', () => {
  it('is the bench package’s command when that is installed', async () => {
    const p = program();
    await registerBench(p);
    const bench = p.commands.find((c) => c.name() === 'bench')!;
    expect(bench.options.map((o) => o.long)).toEqual(
      expect.arrayContaining(['--url', '--subscribers', '--rate', '--server-pid', '--json']),
    );
  });

  it('says which package is missing, and exits 1, when it is not installed', async () => {
    const p = program();
    await registerBench(p, '@rill/not-installed');
    p.command('serve').action(() => {});
    expect(p.commands.map((c) => c.name())).toEqual(['bench', 'serve']);
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    await p.parseAsync(['node', 'rill', 'bench', '--url', 'http://127.0.0.1:1', '-s', '3']);
    expect(err).toHaveBeenCalledWith(
      'rill bench: the load generator is in the @rill/not-installed package, which is not installed (npm install @rill/not-installed)\n',
    );
    expect(process.exitCode).toBe(1);
  });
});
