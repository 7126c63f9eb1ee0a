import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';
import { RillError } from '../model/errors.js';

/** How finely the delay histogram samples the loop, ms (its timer's period). */
const RESOLUTION_MS = 10;
/** Longest a run of overload episodes goes without a log line about it, ms. */
const LOG_INTERVAL_MS = 60_000;
/** A refused client is told to come back after 1 to this many seconds, spread at random. */
const RETRY_AFTER_SPREAD_S = 5;

export interface OverloadSettings {
  /** Mean event-loop delay over one sample above which the process is overloaded, ms; 0 = off. */
  maxEventLoopDelay: number;
  /** Event-loop utilisation (0–1) over one sample above which it is overloaded; 0 = off. */
  maxEventLoopUtilization: number;
  /** How often the loop is measured, ms. */
  sampleInterval: number;
}

export interface OverloadLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** One measurement of the event loop over a sample interval. */
export interface LoadSample {
  /** Mean delay of the loop's timers past when they were due, ms. */
  delay: number;
  /** Share of the interval the loop was busy (0–1). */
  utilization: number;
}

/**
 * Load shedding: one monitor of the event loop per process, asked by every entry point that
 * starts new work (HTTP publishes, SSE/NDJSON/long-poll streams, WebSocket upgrades, WebSocket
 * publish and subscribe ops). While overloaded they are refused with `503 overloaded` and a
 * `Retry-After`; what runs already (open streams, their events) goes on, health checks answer.
 *
 * Every `sampleInterval` it reads the mean delay of the loop's timers (`monitorEventLoopDelay`)
 * and the loop's utilisation (`performance.eventLoopUtilization`) over the interval. A sample
 * over either threshold enters overload; the first whole sample under both leaves it. The mean,
 * not the maximum, is compared: one long pause (a major GC, a large synchronous parse) is not
 * overload, a loop whose every turn is late is. Entering is logged as a warning and leaving as
 * information, each once; more episodes within a minute are counted and logged as one line.
 *
 * Built here rather than with a Fastify plugin: WebSocket upgrades and WebSocket ops never pass
 * through Fastify's hooks, and only new work is refused, not every request.
 */
export class LoadMonitor {
  private histogram: IntervalHistogram | undefined;
  private timer: NodeJS.Timeout | undefined;
  private elu = performance.eventLoopUtilization();
  private state = false;
  /** The last sample, for readiness and logs. */
  last: LoadSample = { delay: 0, utilization: 0 };
  /** Since when the current episode lasts (ms since epoch), while overloaded. */
  private since = 0;
  /** Work refused in the current episode. */
  private refusedNow = 0;
  /** Episodes not logged yet (a minute had not passed since the last logged one). */
  private quiet = { episodes: 0, refused: 0, ms: 0 };
  private lastLogged = -Infinity;
  private summary: NodeJS.Timeout | undefined;
  /** Whether the current episode's start was logged (then its end is too). */
  private episodeLogged = false;

  constructor(
    private readonly settings: OverloadSettings,
    private readonly log: OverloadLog,
    private readonly random: () => number = Math.random,
  ) {}

  /** Whether any threshold is set (otherwise nothing is measured and nothing refused). */
  get enabled(): boolean {
    return this.settings.maxEventLoopDelay > 0 || this.settings.maxEventLoopUtilization > 0;
  }

  /** Whether new work is being refused now. */
  get overloaded(): boolean {
    return this.state;
  }

  start(): void {
    if (!this.enabled || this.timer !== undefined) return;
    this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.histogram.enable();
    this.elu = performance.eventLoopUtilization();
    this.timer = setInterval(() => this.sample(), this.settings.sampleInterval);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    clearTimeout(this.summary);
    this.timer = undefined;
    this.summary = undefined;
    this.histogram?.disable();
    this.histogram = undefined;
  }

  /**
   * An `overloaded` error for new work while overloaded, else null. Its `Retry-After` is spread
   * over 1–5 s so that refused clients do not all come back in the same second.
   */
  refuse(): RillError | null {
    if (!this.state) return null;
    this.refusedNow++;
    const retryAfter = 1 + Math.floor(this.random() * RETRY_AFTER_SPREAD_S);
    return new RillError('overloaded', undefined, { retryAfter });
  }

  /** Reads the loop over the last interval and updates the state. Public for tests. */
  sample(): LoadSample {
    const h = this.histogram;
    // The histogram's values include its own period: what is past it is the delay.
    const delay = h && h.count > 0 ? Math.max(0, h.mean / 1e6 - RESOLUTION_MS) : 0;
    h?.reset();
    const utilization = performance.eventLoopUtilization(this.elu).utilization;
    this.elu = performance.eventLoopUtilization();
    this.last = { delay, utilization };
    const { maxEventLoopDelay: maxDelay, maxEventLoopUtilization: maxElu } = this.settings;
    const over = (maxDelay > 0 && delay > maxDelay) || (maxElu > 0 && utilization > maxElu);
    if (over !== this.state) {
      if (over) this.enter();
      else this.leave();
    }
    return this.last;
  }

  private fields(): Record<string, number> {
    const { maxEventLoopDelay, maxEventLoopUtilization } = this.settings;
    return {
      eventLoopDelayMs: Math.round(this.last.delay),
      eventLoopUtilization: Math.round(this.last.utilization * 1000) / 1000,
      maxEventLoopDelayMs: maxEventLoopDelay,
      maxEventLoopUtilization,
    };
  }

  private enter(): void {
    this.state = true;
    this.since = Date.now();
    this.refusedNow = 0;
    this.episodeLogged = this.since - this.lastLogged >= LOG_INTERVAL_MS;
    if (!this.episodeLogged) return;
    this.lastLogged = this.since;
    const q = this.takeQuiet();
    this.log.warn(
      { ...this.fields(), ...(q.episodes > 0 ? { episodesBefore: q.episodes } : {}) },
      `overloaded: refusing new streams, WebSocket connections and publishes (503 overloaded) ` +
        `until the event loop recovers; open streams go on`,
    );
  }

  private leave(): void {
    this.state = false;
    const ms = Date.now() - this.since;
    if (this.episodeLogged) {
      this.log.info(
        { ...this.fields(), overloadedMs: ms, refused: this.refusedNow },
        `overload over after ${ms} ms: accepting new work again (refused ${this.refusedNow})`,
      );
      return;
    }
    this.quiet.episodes++;
    this.quiet.refused += this.refusedNow;
    this.quiet.ms += ms;
    // One line for the episodes not logged, a minute after the last line.
    if (this.summary !== undefined) return;
    this.summary = setTimeout(
      () => {
        this.summary = undefined;
        const q = this.takeQuiet();
        if (q.episodes === 0) return;
        this.lastLogged = Date.now();
        this.log.warn(
          { ...this.fields(), episodes: q.episodes, overloadedMs: q.ms, refused: q.refused },
          `overloaded ${q.episodes} more time${q.episodes === 1 ? '' : 's'} in the last minute ` +
            `(${q.ms} ms in all, refused ${q.refused})${this.state ? '; overloaded now' : ''}`,
        );
      },
      Math.max(0, this.lastLogged + LOG_INTERVAL_MS - Date.now()),
    );
    this.summary.unref();
  }

  private takeQuiet(): { episodes: number; refused: number; ms: number } {
    const q = this.quiet;
    this.quiet = { episodes: 0, refused: 0, ms: 0 };
    return q;
  }
}
