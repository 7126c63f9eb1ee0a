import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { initYaml } from './settings.js';

interface InitFlags {
  force?: boolean;
}

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('write a commented rill.yaml with every setting and its default')
    .argument('[file]', 'where to write it; - for stdout', 'rill.yaml')
    .option('--force', 'overwrite the file if it exists')
    .action((file: string, flags: InitFlags) => {
      process.exitCode = init(file, flags);
    });
}

function init(file: string, flags: InitFlags): number {
  const text = initYaml();
  if (file === '-') {
    process.stdout.write(text);
    return 0;
  }
  try {
    // `wx` refuses an existing file in the same call that creates it.
    writeFileSync(file, text, { flag: flags.force ? 'w' : 'wx' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    process.stderr.write(
      e.code === 'EEXIST'
        ? `rill: ${file} exists; --force overwrites it\n`
        : `rill: cannot write ${file}: ${e.message}\n`,
    );
    return e.code === 'EEXIST' ? 2 : 1;
  }
  process.stderr.write(`wrote ${file}; start with: rill serve --config ${file}\n`);
  return 0;
}
