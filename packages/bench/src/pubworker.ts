/**
 * A bench publisher process: one {@link Publisher} driven over IPC by the parent, for offered
 * rates one Node process cannot issue alone (about 5,000 single-event HTTP requests/s per core).
 * The parent gives each one a slice of the topics and of the rate, and sums their stats.
 */
import { Publisher, type PublisherOptions, type PublishStats } from './publisher.js';

export type ToPubWorker =
  | { cmd: 'open'; options: PublisherOptions }
  | { cmd: 'run'; rate: number; seconds: number }
  | { cmd: 'stop' };

export type FromPubWorker =
  | { type: 'opened'; error?: string }
  | { type: 'ran'; issued: number; issueSeconds: number; stats: PublishStats };

function run(): void {
  const send = (m: FromPubWorker): void => {
    process.send?.(m);
  };
  let pub: Publisher | undefined;
  process.on('message', (m: ToPubWorker) => {
    if (m.cmd === 'open') {
      pub = new Publisher(m.options);
      pub.open().then(
        () => send({ type: 'opened' }),
        (err: Error) => send({ type: 'opened', error: err.message }),
      );
    } else if (m.cmd === 'run') {
      const p = pub!;
      void p.run(m.rate, m.seconds).then((r) => send({ type: 'ran', ...r, stats: p.stats }));
    } else {
      pub?.close();
      process.disconnect();
      setTimeout(() => process.exit(0), 200).unref();
    }
  });
  process.on('disconnect', () => process.exit(0));
}

run();
