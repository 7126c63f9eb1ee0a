import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import type { RillConfig } from '../config.js';
import type { AppendNotice } from '../engine/lmdb.js';
import { newNodeId } from '../api/observability.js';
import {
  GATHER_TIMEOUT_MS,
  type Answerer,
  type Gathered,
  type WorkerAnswer,
  type WorkerPeers,
} from '../api/worker-views.js';

/**
 * `rill serve --workers N`: a supervisor process forks N worker processes (`node:cluster`), which
 * share the listening port, each with its own engine, hub and sockets. The supervisor serves no
 * request: it restarts a worker that dies, relays the lmdb engine's append notices between the
 * workers, forwards SIGTERM/SIGINT (graceful drain) and SIGHUP (reload), and answers a worker's
 * `gather` by asking every worker (metrics, stats and connections over all workers:
 * api/worker-views.ts).
 */

/** The variable that carries a worker's id (1…N, kept by its restarts) from the supervisor. */
export const WORKER_ENV = 'RILL_WORKER_ID';
/** The variable that carries the node id the workers share (their `/v1/stats` node's). */
export const NODE_ENV = 'RILL_NODE_ID';

/** Restarts of crashed workers allowed per minute before the supervisor gives up (exit 1). */
export const MAX_RESTARTS_PER_MINUTE = 10;
const RESTART_WINDOW_MS = 60_000;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
/**
 * A worker's own bound on a `gather` whose answers do not come back (the supervisor is gone or
 * stuck), ms: past it, it answers alone and says the others are missing.
 */
const GATHER_FALLBACK_MS = GATHER_TIMEOUT_MS + 1_000;

/** Exit code of a worker whose configuration is refused (as `rill serve`'s). */
const EXIT_CONFIG = 2;

/** Messages between the supervisor and the workers (all carry `rill`). */
type Message =
  /** worker → supervisor → every other worker: commits of the lmdb engine */
  | { rill: 'appended'; notices: AppendNotice[] }
  /** supervisor → workers: a worker ended; its last commits may not have been announced */
  | { rill: 'lost'; worker: number }
  /** worker → supervisor: it listens */
  | { rill: 'listening'; url: string }
  /** worker → supervisor: ask every worker `what`; supervisor → worker: the answers */
  | { rill: 'gather'; id: number; what: string; args?: unknown }
  | { rill: 'gathered'; id: number; answers: WorkerAnswer[]; missing: number[] }
  /** supervisor → worker: answer `what`; worker → supervisor: the answer (or that it failed) */
  | { rill: 'ask'; id: number; what: string; args?: unknown }
  | { rill: 'answer'; id: number; body: unknown; failed?: true };

/** The number of worker processes `workers` means: `auto` is one per available core. */
export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? Math.max(1, availableParallelism()) : workers;
}

/** In a worker process of `rill serve --workers`: its id (1…N). Undefined otherwise. */
export function currentWorkerId(): number | undefined {
  if (!cluster.isWorker) return undefined;
  const id = Number(process.env[WORKER_ENV]);
  return Number.isInteger(id) && id > 0 ? id : undefined;
}

function isMessage(m: unknown): m is Message {
  return typeof m === 'object' && m !== null && typeof (m as { rill?: unknown }).rill === 'string';
}

/** The worker's side of the link to the supervisor. */
export class WorkerLink implements WorkerPeers {
  private readonly answerers = new Map<string, Answerer>();
  private readonly waiting = new Map<number, (g: Gathered) => void>();
  private nextId = 1;
  private appended: ((notices: readonly AppendNotice[]) => void) | undefined;
  private lost: (() => void) | undefined;

  /**
   * @param id this worker's id (1…`count`)
   * @param count the workers of this `rill serve`
   * @param nodeId the id of the node they make up together
   */
  constructor(
    readonly id: number,
    readonly count: number,
    readonly nodeId: string,
  ) {
    process.on('message', (m: unknown) => this.onMessage(m));
  }

  /** Tells the other workers of this worker's lmdb commits. */
  announce(notices: readonly AppendNotice[]): void {
    this.send({ rill: 'appended', notices: [...notices] });
  }

  /** Where the other workers' commits go (the lmdb engine's `peerAppended`). */
  onAppended(fn: (notices: readonly AppendNotice[]) => void): void {
    this.appended = fn;
  }

  /** Where the news that another worker ended goes (the lmdb engine's `peerLost`). */
  onLost(fn: () => void): void {
    this.lost = fn;
  }

  listening(url: string): void {
    this.send({ rill: 'listening', url });
  }

  /** Registers this worker's answer to `what`, for {@link gather}. */
  answer(what: string, fn: Answerer): void {
    this.answerers.set(what, fn);
  }

  /**
   * Every worker's answer to `what` with `args` (this one's included), through the supervisor;
   * a worker that does not answer within {@link GATHER_TIMEOUT_MS}, or whose answer failed, is
   * listed in `missing`. Never rejects.
   */
  gather(what: string, args?: unknown): Promise<Gathered> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const alone = (): void => {
        this.waiting.delete(id);
        void this.answerHere(what, args).then((own) => {
          const others = Array.from({ length: this.count }, (_, k) => k + 1).filter(
            (w) => w !== this.id,
          );
          resolve(
            own.failed
              ? { answers: [], missing: [...others, this.id].sort((a, b) => a - b) }
              : { answers: [{ worker: this.id, body: own.body }], missing: others },
          );
        });
      };
      if (!this.send({ rill: 'gather', id, what, ...(args === undefined ? {} : { args }) })) {
        alone();
        return;
      }
      const timer = setTimeout(alone, GATHER_FALLBACK_MS);
      timer.unref();
      this.waiting.set(id, (g) => {
        clearTimeout(timer);
        resolve(g);
      });
    });
  }

  /** This worker's answer to `what` (a failing or missing answerer: failed). */
  private async answerHere(
    what: string,
    args: unknown,
  ): Promise<{ body: unknown; failed: boolean }> {
    const fn = this.answerers.get(what);
    if (fn === undefined) return { body: null, failed: true };
    try {
      return { body: await fn(args), failed: false };
    } catch {
      return { body: null, failed: true };
    }
  }

  private send(m: Message): boolean {
    if (process.send === undefined || !process.connected) return false;
    process.send(m);
    return true;
  }

  private onMessage(m: unknown): void {
    if (!isMessage(m)) return;
    if (m.rill === 'appended') this.appended?.(m.notices);
    else if (m.rill === 'lost') this.lost?.();
    else if (m.rill === 'ask') {
      // A failing answer is no answer: the asking worker gets the others' and this one's id as
      // missing.
      void this.answerHere(m.what, m.args).then(({ body, failed }) => {
        this.send(
          failed
            ? { rill: 'answer', id: m.id, body: null, failed }
            : { rill: 'answer', id: m.id, body },
        );
      });
    } else if (m.rill === 'gathered') {
      const done = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      done?.({ answers: m.answers, missing: m.missing });
    }
  }
}

interface Slot {
  id: number;
  worker: Worker | undefined;
  listening: boolean;
  /** Whether this slot's worker ever listened (a worker that fails at start-up is not retried). */
  started: boolean;
}

/**
 * Runs the supervisor until every worker has exited; resolves with the exit code: 0 after a
 * graceful stop of them all, 1 if any failed or the restarts ran out, a worker's start-up exit
 * code (2: configuration refused) when one could not start.
 */
export function supervise(
  config: RillConfig,
  n: number,
  log: Logger,
  options: { reloads: boolean },
): Promise<number> {
  const slots = new Map<number, Slot>();
  const restarts: number[] = [];
  let stopping = false;
  let code = 0;
  let announced = false;
  let gatherId = 1;
  const asks = new Map<
    number,
    {
      answers: WorkerAnswer[];
      left: Set<number>;
      missing: number[];
      done: () => void;
      timer: NodeJS.Timeout;
    }
  >();
  const nodeId = newNodeId();

  return new Promise<number>((resolveExit) => {
    const live = (): Slot[] => [...slots.values()].filter((s) => s.worker !== undefined);

    const finishIfDone = (): void => {
      if (stopping && live().length === 0) {
        clearTimeout(force);
        log.info({ code }, 'every worker stopped');
        resolveExit(code);
      }
    };
    let force: NodeJS.Timeout | undefined;

    const stopAll = (reason: string, exitCode: number): void => {
      if (exitCode !== 0) code = Math.max(code, exitCode);
      if (stopping) return;
      stopping = true;
      log.info({ reason, workers: live().length }, 'stopping the workers');
      for (const s of live()) s.worker?.process.kill('SIGTERM');
      // Each worker has its own shutdownTimeout; past it and a margin, whatever is left is killed.
      force = setTimeout(() => {
        for (const s of live()) {
          log.error({ worker: s.id }, 'worker did not stop in time: killed');
          s.worker?.process.kill('SIGKILL');
        }
        code = Math.max(code, 1);
      }, config.shutdownTimeout + 10_000);
      force.unref();
      finishIfDone();
    };

    const fork = (slot: Slot): void => {
      const worker = cluster.fork({ [WORKER_ENV]: String(slot.id), [NODE_ENV]: nodeId });
      slot.worker = worker;
      slot.listening = false;
      worker.on('message', (m: unknown) => onMessage(slot, worker, m));
      worker.once('exit', (exitCode, signal) => onExit(slot, worker, exitCode, signal));
    };

    const onMessage = (slot: Slot, from: Worker, m: unknown): void => {
      if (!isMessage(m) || slot.worker !== from) return;
      switch (m.rill) {
        case 'appended':
          // Relayed as is, once per batch of commits: never per delivery. Also to a worker not
          // listening yet: its first subscribers may come before its "listening" reaches here.
          for (const s of live()) if (s !== slot && s.worker?.isConnected()) s.worker.send(m);
          return;
        case 'listening':
          slot.listening = true;
          slot.started = true;
          if (!announced && [...slots.values()].every((s) => s.listening)) {
            announced = true;
            log.info(
              { url: m.url, workers: n, engine: config.engine },
              `Rill listening on ${m.url} (${n} workers)`,
            );
          } else if (announced) log.info({ worker: slot.id }, 'worker restarted and listening');
          return;
        case 'gather':
          gather(from, m.id, m.what, m.args);
          return;
        case 'answer': {
          const ask = asks.get(m.id);
          if (ask === undefined || !ask.left.delete(slot.id)) return;
          if (m.failed) ask.missing.push(slot.id);
          else ask.answers.push({ worker: slot.id, body: m.body });
          if (ask.left.size === 0) ask.done();
          return;
        }
        default:
          return;
      }
    };

    const gather = (from: Worker, replyId: number, what: string, args: unknown): void => {
      const id = gatherId++;
      const targets = live().filter((s) => s.listening);
      const answers: WorkerAnswer[] = [];
      // A worker restarting (or not yet listening) is missing from the start.
      const missing = [...slots.values()].filter((s) => !targets.includes(s)).map((s) => s.id);
      const left = new Set(targets.map((s) => s.id));
      const done = (): void => {
        const ask = asks.get(id);
        if (ask === undefined) return;
        clearTimeout(ask.timer);
        asks.delete(id);
        // Past the bound, whoever has not answered is missing: the asking request does not hang.
        missing.push(...left);
        answers.sort((a, b) => a.worker - b.worker);
        missing.sort((a, b) => a - b);
        if (from.isConnected()) from.send({ rill: 'gathered', id: replyId, answers, missing });
      };
      const timer = setTimeout(done, GATHER_TIMEOUT_MS);
      asks.set(id, { answers, left, missing, done, timer });
      const ask: Message = { rill: 'ask', id, what, ...(args === undefined ? {} : { args }) };
      for (const s of targets) s.worker?.send(ask);
      if (targets.length === 0) done();
    };

    const onExit = (
      slot: Slot,
      worker: Worker,
      exitCode: number | null,
      signal: string | null,
    ): void => {
      if (slot.worker !== worker) return;
      slot.worker = undefined;
      slot.listening = false;
      for (const ask of asks.values()) {
        if (ask.left.delete(slot.id)) {
          ask.missing.push(slot.id);
          if (ask.left.size === 0) ask.done();
        }
      }
      for (const s of live()) {
        if (s.worker?.isConnected()) s.worker.send({ rill: 'lost', worker: slot.id });
      }
      if (stopping) {
        if (exitCode !== 0) code = Math.max(code, 1);
        log.info({ worker: slot.id, code: exitCode, signal }, 'worker stopped');
        finishIfDone();
        return;
      }
      if (!slot.started) {
        // It never listened: a refused configuration or a port in use, which a restart repeats.
        log.error({ worker: slot.id, code: exitCode, signal }, 'worker failed to start');
        stopAll('a worker failed to start', exitCode === EXIT_CONFIG ? EXIT_CONFIG : 1);
        return;
      }
      const now = Date.now();
      while (restarts.length > 0 && (restarts[0] as number) <= now - RESTART_WINDOW_MS) {
        restarts.shift();
      }
      if (restarts.length >= MAX_RESTARTS_PER_MINUTE) {
        log.fatal(
          { worker: slot.id, code: exitCode, signal, restarts: restarts.length },
          `workers died ${restarts.length} times within a minute: giving up`,
        );
        stopAll('too many worker restarts', 1);
        return;
      }
      restarts.push(now);
      const delay = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (restarts.length - 1));
      log.error(
        { worker: slot.id, code: exitCode, signal, restartInMs: delay },
        'worker died: restarting it',
      );
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, delay);
    };

    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn(`${signal} again: killing the workers`);
        for (const s of live()) s.worker?.process.kill('SIGKILL');
        code = Math.max(code, 1);
        return;
      }
      stopAll(signal, 0);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // A reload (TLS files, authentication settings) is each worker's own; without either SIGHUP
    // keeps its default meaning, as in one process.
    if (options.reloads) {
      process.on('SIGHUP', () => {
        for (const s of live()) s.worker?.process.kill('SIGHUP');
      });
    }

    log.info({ workers: n, engine: config.engine }, `starting ${n} workers`);
    for (let id = 1; id <= n; id++) {
      const slot: Slot = { id, worker: undefined, listening: false, started: false };
      slots.set(id, slot);
      fork(slot);
    }
  });
}
