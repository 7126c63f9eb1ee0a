#!/usr/bin/env node
import { main } from '../dist/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`rill-bench: ${err?.stack ?? err}\n`);
  process.exit(1);
});
