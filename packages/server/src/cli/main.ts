import { Command } from 'commander';
import { registerBench } from './bench-command.js';
import { registerKeys } from './keys.js';
import { registerPublish } from './publish.js';
import { registerServe } from './serve.js';
import { registerTail } from './tail.js';
import { registerToken } from './token.js';

/** `rill`: the command-line entry point. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program
    .name('rill')
    .description('Rill: a streaming API server (SSE, durable log, lossless resume)')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride((err) => {
      // Usage errors exit 2, help and version 0.
      process.exit(err.exitCode === 0 ? 0 : 2);
    });
  registerServe(program);
  registerTail(program);
  registerPublish(program);
  registerToken(program);
  registerKeys(program);
  await registerBench(program);
  await program.parseAsync(argv);
}
