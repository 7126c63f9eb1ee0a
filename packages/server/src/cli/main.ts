import { createRequire } from 'node:module';
import { Command } from 'commander';
import { registerBench } from './bench-command.js';
import { registerInit } from './init.js';
import { registerKeys } from './keys.js';
import { registerPublish } from './publish.js';
import { registerServe } from './serve.js';
import { registerTail } from './tail.js';
import { registerToken } from './token.js';
import { registerTopics } from './topics.js';

/** The version of this package (its package.json, two levels above dist/cli/). */
const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

/** `rill`: the command-line entry point. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program
    .name('rill')
    .description('Rill: a streaming API server (SSE, durable log, lossless resume)')
    .version(version)
    // A command's options are read by that command only (`rill bench storm --url …` is the storm's
    // --url, not `rill bench`'s): commander needs this on every level above a subcommand.
    .enablePositionalOptions()
    // The help of `serve` lists every setting: after an error, point at it rather than print it.
    .showHelpAfterError('(add --help for usage)')
    .exitOverride((err) => {
      // Usage errors exit 2, help and version 0.
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  registerServe(program);
  registerInit(program);
  registerTail(program);
  registerPublish(program);
  registerTopics(program);
  registerToken(program);
  registerKeys(program);
  await registerBench(program);
  await program.parseAsync(argv);
}
