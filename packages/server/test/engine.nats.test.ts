import { randomBytes } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { NatsEngine } from '../src/engine/nats/engine.js';
import { engineContract } from './engine.contract.js';

const NATS_URL = process.env.RILL_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/** Deletes every stream whose name starts with `prefix` (this run's own). */
async function dropStreams(prefix: string): Promise<void> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const name of jsm.streams.names())
      if (name.startsWith(`${prefix}_`) || name.startsWith(`KV_${prefix}_`)) names.push(name);
    for (const name of names) await jsm.streams.delete(name);
  } finally {
    await nc.close();
  }
}

// Against the shared NATS with stream names of its own per engine: fails (never skips) without it.
engineContract(
  'nats',
  async (opts) => {
    const prefix = `rt${randomBytes(5).toString('hex')}`;
    const engine = new NatsEngine({ ...opts, url: NATS_URL, prefix });
    try {
      await engine.ready(5_000);
    } catch (err) {
      await engine.close();
      throw new Error(
        `NATS JetStream at ${NATS_URL} is not reachable: start it (the commands are in .ci/run)`,
        {
          cause: err,
        },
      );
    }
    return { engine, cleanup: () => dropStreams(prefix) };
  },
  { byteRetention: 'batches', storeBudget: false },
);
