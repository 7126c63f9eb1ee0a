import { Command } from 'commander';
import { configureBench } from './cli.js';

/** `rill-bench`: the generator as a program of its own, with the flags of `rill bench`. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('rill-bench')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride((err) => {
      // Usage errors exit 2, help and version 0.
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  configureBench(program);
  await program.parseAsync(argv);
}
