import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { serveConfig } from '../src/cli/serve.js';
import { workerCount } from '../src/cli/workers.js';
import { ConfigError, resolveConfig } from '../src/config.js';

describe('the workers setting', () => {
  it('is 1 by default, a whole number, or auto: one per available core', () => {
    expect(resolveConfig({}).workers).toBe(1);
    expect(workerCount(resolveConfig({}).workers)).toBe(1);
    expect(workerCount(resolveConfig({ workers: 3 }).workers)).toBe(3);
    expect(workerCount(resolveConfig({ workers: 'auto' }).workers)).toBe(availableParallelism());
  });

  it('comes from --workers and RILL_WORKERS (the flag wins)', () => {
    expect(resolveConfig(serveConfig({ workers: '2' }, {})).workers).toBe(2);
    expect(resolveConfig(serveConfig({ workers: 'auto' }, {})).workers).toBe('auto');
    expect(resolveConfig(serveConfig({}, { RILL_WORKERS: '4' })).workers).toBe(4);
    expect(resolveConfig(serveConfig({ workers: '2' }, { RILL_WORKERS: '4' })).workers).toBe(2);
  });

  it('refuses anything else, saying what it takes', () => {
    for (const workers of ['0', 'many', '1.5', '65']) {
      expect(() => serveConfig({ workers }, {})).toThrow(ConfigError);
      expect(() => serveConfig({ workers }, {})).toThrow(
        /workers \(--workers, RILL_WORKERS\): must be one of auto or an integer from 1 to 64/,
      );
    }
  });

  it('refuses workers with the memory engine, whose log lives in one process', () => {
    expect(() => resolveConfig({ engine: 'memory', workers: 2 })).toThrow(
      /workers \(--workers, RILL_WORKERS\): the memory engine lives in one process/,
    );
    expect(() => resolveConfig({ engine: 'memory', workers: 'auto' })).toThrow(ConfigError);
    expect(resolveConfig({ engine: 'memory', workers: 1 }).workers).toBe(1);
    for (const engine of ['lmdb', 'redis', 'nats'] as const) {
      expect(resolveConfig({ engine, workers: 2 }).workers).toBe(2);
    }
  });
});
