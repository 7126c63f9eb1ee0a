import { defineConfig } from 'vitest/config';

/**
 * Three tiers, by file name:
 *
 * - `*.unit.test.ts` — unit: pure code, no socket, no child process (the `unit-guard` setup file
 *   makes connecting, listening and spawning throw). Files run in parallel; the tier takes well
 *   under a minute (`npm run test:unit`).
 * - `*.browser.test.ts` — browser: needs Chromium (only this tier may launch it).
 * - every other `*.test.ts` — integration: real servers, Redis, NATS, nginx, child processes.
 *
 * `npm test` runs all three, unit first; integration and browser files run one at a time
 * (two cores: heavy end-to-end files run alone to keep timings honest).
 */
const TESTS = 'packages/*/test/**';
const timeouts = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      {
        test: {
          name: 'unit',
          include: [`${TESTS}/*.unit.test.ts`],
          setupFiles: ['packages/testkit/src/unit-guard.ts'],
          provide: { testTier: 'unit' },
          ...timeouts,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: 'integration',
          include: [`${TESTS}/*.test.ts`],
          exclude: [`${TESTS}/*.unit.test.ts`, `${TESTS}/*.browser.test.ts`],
          provide: { testTier: 'integration' },
          ...timeouts,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
      {
        test: {
          name: 'browser',
          include: [`${TESTS}/*.browser.test.ts`],
          provide: { testTier: 'browser' },
          ...timeouts,
          fileParallelism: false,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
