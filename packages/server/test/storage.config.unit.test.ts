/** The `retention.maxBytes` and `storage.maxBytes` settings, and how they reach the engines. */
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '@rill/testkit';
import { configFromEnv, resolveConfig } from '../src/config.js';
import type { Engine } from '../src/engine/engine.js';
import { createEngine } from '../src/server.js';

/** `n` events of 100 bytes. */
const hundreds = (n: number): { data: string }[] =>
  Array.from({ length: n }, (_, i) => ({ data: JSON.stringify(`${i}`.padEnd(98, '.')) }));

describe('storage config', () => {
  const engines: Engine[] = [];
  const dirs: Array<() => void> = [];
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.close();
    for (const remove of dirs.splice(0)) remove();
  });

  it('reads sizes with units from files and the environment, per topic and per rule', () => {
    const cfg = resolveConfig({
      retention: { maxBytes: '64MiB', rules: [{ pattern: 'logs.>', maxBytes: '1KB' }] },
      storage: { maxBytes: '2GiB' },
    });
    expect(cfg.retention.maxBytes).toBe(64 * 1024 * 1024);
    expect(cfg.retention.rules[0]?.maxBytes).toBe(1000);
    expect(cfg.storage.maxBytes).toBe(2 * 1024 ** 3);
    const defaults = resolveConfig({});
    expect([defaults.retention.maxBytes, defaults.storage.maxBytes]).toEqual([0, 0]);
    const env = resolveConfig(
      configFromEnv({ RILL_RETENTION__MAX_BYTES: '10MB', RILL_STORAGE__MAX_BYTES: '1GiB' }),
    );
    expect([env.retention.maxBytes, env.storage.maxBytes]).toEqual([10_000_000, 1024 ** 3]);
    expect(() => resolveConfig({ storage: { maxBytes: 'lots' } })).toThrow(/storage\.maxBytes/);
    expect(() => resolveConfig({ storage: { max: 1 } })).toThrow(/unknown key/);
  });

  it('refuses storage.maxBytes for the broker engines, whose budget is the broker’s', () => {
    expect(() => resolveConfig({ engine: 'redis', storage: { maxBytes: '1GiB' } })).toThrow(
      /storage\.maxBytes.*maxmemory/,
    );
    expect(() => resolveConfig({ engine: 'nats', storage: { maxBytes: '1GiB' } })).toThrow(
      /storage\.maxBytes.*JetStream/,
    );
    expect(resolveConfig({ engine: 'redis', retention: { maxBytes: '1MiB' } }).storage).toEqual({
      maxBytes: 0,
    });
  });

  for (const engine of ['memory', 'lmdb'] as const) {
    it(`hands both limits to the ${engine} engine`, async () => {
      const dir = tempDir('rill-storage-');
      dirs.push(dir.remove);
      const e = createEngine(
        resolveConfig({
          engine,
          dataDir: dir.path,
          retention: { maxEvents: 0, rules: [{ pattern: 'small', maxBytes: 200 }] },
          storage: { maxBytes: 500 },
        }),
      );
      engines.push(e);
      await e.append('small', hundreds(1));
      await e.append('small', hundreds(1));
      await e.append('small', hundreds(1));
      expect(await e.head('small')).toMatchObject({ firstSeq: 2, lastSeq: 3 });
      await e.append('big', hundreds(3));
      const err: unknown = await e.append('big', hundreds(1)).catch((x: unknown) => x);
      expect((err as { code?: string }).code).toBe('insufficient_storage');
    });
  }
});
