import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: heavy end-to-end files run one at a time to keep timings honest.
    fileParallelism: false,
    reporters: ['default'],
  },
});
