import type { Command } from 'commander';

/** The package with the load generator; `rill bench` is its command, present when it is installed. */
export const BENCH_PACKAGE = '@rill/bench';

interface BenchCli {
  registerBench(program: Command): void;
}

/**
 * Adds `rill bench` from the bench package's CLI module, loaded at run time so that the server
 * does not depend on it. Without it (or when it fails to load), `rill bench` is a stub that says
 * why and exits 1; the other commands are unaffected.
 */
export async function registerBench(program: Command, pkg = BENCH_PACKAGE): Promise<void> {
  const specifier = `${pkg}/cli`;
  let cli: BenchCli | undefined;
  let reason = '';
  try {
    cli = (await import(specifier)) as BenchCli;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reason =
      // Node names the package ('@rill/bench'), some loaders the specifier ('@rill/bench/cli').
      e.code === 'ERR_MODULE_NOT_FOUND' &&
      (e.message.includes(`'${pkg}'`) || e.message.includes(`'${specifier}'`))
        ? `the load generator is in the ${pkg} package, which is not installed (npm install ${pkg})`
        : `${pkg} did not load: ${e.message}`;
  }
  if (cli) {
    cli.registerBench(program);
    return;
  }
  program
    .command('bench')
    .description(`load-test a Rill server (needs ${pkg})`)
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(() => {
      process.stderr.write(`rill bench: ${reason}\n`);
      process.exitCode = 1;
    });
}
