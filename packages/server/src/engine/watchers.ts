import type { Feed } from './common.js';
import type { SignalListener, WatchListener } from './engine.js';

/** The broker side of one watched topic, as an engine keeps it. */
export interface TopicWatch {
  readonly topic: string;
  /** Turns false when the watch stops: the engine's loops and callbacks for it check this. */
  active: boolean;
}

/** What an engine does when a topic gets its first listener and when it loses its last. */
export interface WatchHooks<W extends TopicWatch> {
  /** The state of a new watch (active); registered before `start` runs, so `start` finds it. */
  create(topic: string): W;
  /**
   * Starts the broker subscription. A start that throws must leave nothing behind: the watch is
   * then dropped, the listener removed and the error thrown to the caller of `watch`.
   */
  start(w: W): void;
  /**
   * Stops the broker subscription (`w.active` is already false). `closing`: the engine is closing
   * and drops its connections whole right after, so per-topic clean-up on the broker may be
   * skipped.
   */
  stop(w: W, closing: boolean): void;
}

/**
 * The per-topic watch lifecycle the shared engines (redis, nats) have in common: listeners are
 * kept by the {@link Feed} (which also delivers to them), the broker subscription of a topic starts
 * when its first listener arrives and stops when its last one leaves. Everything
 * broker-specific is in the engine's {@link WatchHooks}.
 */
export class Watchers<W extends TopicWatch> {
  private readonly live = new Map<string, W>();

  constructor(
    private readonly feed: Feed,
    private readonly hooks: WatchHooks<W>,
    private readonly isClosed: () => boolean,
  ) {}

  /** `Engine.watch`: a no-op once the engine is closed. */
  watch(topic: string, listener: WatchListener, signals?: SignalListener): () => void {
    if (this.isClosed()) return () => {};
    const unwatch = this.feed.watch(topic, listener, signals);
    if (!this.live.has(topic)) this.begin(topic, unwatch);
    return () => {
      unwatch();
      // Calling it again is harmless: a later listener keeps the topic watched.
      if (!this.feed.hasWatchers(topic)) this.end(topic, false);
    };
  }

  /** The watch of `topic`, while it has listeners. */
  get(topic: string): W | undefined {
    return this.live.get(topic);
  }

  /** Every live watch, in the order they started. */
  values(): IterableIterator<W> {
    return this.live.values();
  }

  /**
   * Stops every watch, for `close`. The listeners stay with the feed: the engine clears it once
   * nothing can deliver any more.
   */
  stopAll(): void {
    for (const topic of [...this.live.keys()]) this.end(topic, true);
  }

  private begin(topic: string, unwatch: () => void): void {
    const w = this.hooks.create(topic);
    this.live.set(topic, w);
    try {
      this.hooks.start(w);
    } catch (err) {
      w.active = false;
      this.live.delete(topic);
      unwatch();
      throw err;
    }
  }

  private end(topic: string, closing: boolean): void {
    const w = this.live.get(topic);
    if (w === undefined) return;
    w.active = false;
    this.live.delete(topic);
    this.hooks.stop(w, closing);
  }
}
