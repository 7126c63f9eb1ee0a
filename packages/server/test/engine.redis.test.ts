import { RedisEngine } from '../src/engine/redis/engine.js';
import { engineContract } from './engine.contract.js';
import { SHARED_REDIS_URL, dropPrefix, uniquePrefix } from '@rill/testkit/redis';

// Against the shared Redis with a prefix of its own per engine: fails (never skips) without Redis.
engineContract(
  'redis',
  async (opts) => {
    const prefix = uniquePrefix();
    const engine = new RedisEngine({ ...opts, url: SHARED_REDIS_URL, prefix });
    try {
      await engine.ready(5_000);
    } catch (err) {
      await engine.close();
      throw new Error(
        `Redis at ${SHARED_REDIS_URL} is not reachable: start it (the commands are in .ci/run)`,
        {
          cause: err,
        },
      );
    }
    return { engine, cleanup: () => dropPrefix(SHARED_REDIS_URL, prefix) };
  },
  { byteRetention: 'exact', storeBudget: false },
);
