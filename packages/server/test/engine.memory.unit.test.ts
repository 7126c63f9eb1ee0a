import { MemoryEngine } from '../src/engine/memory.js';
import { engineContract } from './engine.contract.js';

engineContract('memory', async (opts) => ({ engine: new MemoryEngine(opts) }), {
  byteRetention: 'exact',
  storeBudget: true,
});
