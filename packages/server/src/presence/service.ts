import { RillError } from '../model/errors.js';
import { within } from './codec.js';
import type { NodeEntry, PresenceStore, StoredEntry } from './store.js';

/** Largest `info` presence carries, as JSON bytes: a bigger one is left out of presence. */
export const MAX_INFO_BYTES = 1024;

/** One subscriber of a topic, over every node. */
export interface Member {
  sub: string;
  info?: Record<string, unknown>;
  /** Its open connections to the topic (0 while its grace period runs). */
  connections: number;
  /** When its earliest connection still counted opened, ms since the epoch. */
  since: number;
}

export interface PresencePage {
  topic: string;
  members: Member[];
  /** Members in all (not only this page). */
  count: number;
  /** Connections of anonymous subscribers: counted, not listed. */
  anonymous: number;
  /** The `after` of the next page, or null when this is the last. */
  next: string | null;
}

export interface PresenceCount {
  topic: string;
  count: number;
  anonymous: number;
}

/** A subscriber came (`join`) or went (`leave`, once its grace period ran out). */
export interface PresenceChange {
  kind: 'join' | 'leave';
  topic: string;
  sub: string;
  info?: Record<string, unknown>;
}

export type PresenceListener = (change: PresenceChange) => void;

export interface PresenceLog {
  warn(obj: object, msg: string): void;
}

export interface PresenceOptions {
  /** How long a subscriber whose last connection closed stays present (a reconnect is no leave). */
  graceMs: number;
  /**
   * How often topics with listeners are read again from a shared store, to see members of a node
   * that died expire (0: never; the in-process store tells every change).
   */
  rereadMs: number;
  log?: PresenceLog;
}

interface LocalEntry extends StoredEntry {
  topic: string;
  sub: string;
  /** Runs out the grace period once the last connection closed. */
  grace?: NodeJS.Timeout;
  /** A write of this entry is in flight; `dirty`: it changed again since. */
  writing: boolean;
  dirty: boolean;
  /** Gone from this node: the next write removes it. */
  removed: boolean;
}

interface TopicWatch {
  listeners: Set<PresenceListener>;
  /** The members (and their info) last seen; null until the first read. */
  view: Map<string, Record<string, unknown> | undefined> | null;
  reading: boolean;
  again: boolean;
  scheduled?: NodeJS.Timeout;
}

/** Delay before reading a topic again after another node said it changed (coalesces bursts). */
const REMOTE_COALESCE_MS = 50;

/**
 * Who is subscribed to which topic: this node's connections (entries kept in a
 * {@link PresenceStore}, where every node reads them), queries over every node, and join/leave
 * announcements for listeners.
 *
 * A reconnect is not a leave and a join: when a subscriber's last connection on this node closes,
 * its entry stays (with 0 connections) for the grace period, and is removed only if no connection
 * came back by then. Leaves are therefore announced from the stored state, never timed by the
 * listeners: a subscriber that moved to another node within the grace period never disappears.
 */
export class PresenceService {
  private readonly local = new Map<string, LocalEntry>();
  private readonly watches = new Map<string, TopicWatch>();
  private readonly reread: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly store: PresenceStore,
    private readonly options: PresenceOptions,
  ) {
    store.onRemoteChange((topic) => this.scheduleRead(topic, REMOTE_COALESCE_MS));
    if (options.rereadMs > 0) {
      this.reread = setInterval(() => {
        for (const topic of this.watches.keys()) this.read(topic);
      }, options.rereadMs);
      this.reread.unref();
    }
  }

  /**
   * One connection subscribed to `topic` as `sub` (null: anonymous). Returns the function that
   * ends it; calling it again does nothing.
   */
  enter(topic: string, sub: string | null, info?: Record<string, unknown>): () => void {
    const key = sub ?? '';
    const id = `${topic}\u0000${key}`;
    let e = this.local.get(id);
    if (!e || e.removed) {
      if (!e) {
        e = {
          topic,
          sub: key,
          conns: 0,
          since: Date.now(),
          writing: false,
          dirty: false,
          removed: false,
        };
        this.local.set(id, e);
      } else {
        e.removed = false;
        e.since = Date.now();
      }
    }
    const entry = e;
    if (entry.grace) {
      clearTimeout(entry.grace);
      entry.grace = undefined;
    }
    entry.conns++;
    const bounded = sub === null ? undefined : boundedInfo(info);
    if (bounded !== undefined) entry.info = bounded;
    this.save(id, entry);
    let left = false;
    return () => {
      if (left) return;
      left = true;
      entry.conns--;
      if (entry.conns > 0) {
        this.save(id, entry);
        return;
      }
      if (entry.sub === '' || this.closed || this.options.graceMs === 0) {
        this.remove(id, entry);
        return;
      }
      this.save(id, entry);
      entry.grace = setTimeout(() => {
        entry.grace = undefined;
        if (entry.conns === 0) this.remove(id, entry);
      }, this.options.graceMs);
      entry.grace.unref();
    };
  }

  private remove(id: string, e: LocalEntry): void {
    e.removed = true;
    this.save(id, e);
  }

  /** Writes an entry's latest state; one write in flight per entry, the last state wins. */
  private save(id: string, e: LocalEntry): void {
    if (e.writing) {
      e.dirty = true;
      return;
    }
    e.writing = true;
    e.dirty = false;
    const state: StoredEntry | null = e.removed
      ? null
      : { conns: e.conns, since: e.since, ...(e.info ? { info: e.info } : {}) };
    this.store.write(e.topic, e.sub, state).then(
      () => this.saved(id, e),
      (err: unknown) => {
        this.options.log?.warn({ err, topic: e.topic }, 'presence: could not write an entry');
        this.saved(id, e);
      },
    );
  }

  private saved(id: string, e: LocalEntry): void {
    e.writing = false;
    // Removed entries stay in `local` until their removal is written: one coming back meanwhile
    // is the same entry again, so its writes stay in order.
    if (e.dirty) this.save(id, e);
    else if (e.removed && this.local.get(id) === e) this.local.delete(id);
    if (this.watches.has(e.topic)) this.read(e.topic);
  }

  /** A page of `topic`'s members in `sub` order, those after `after`. */
  async page(topic: string, opts: { after?: string; limit: number }): Promise<PresencePage> {
    const { members, anonymous } = merge(await this.readStore(topic));
    let start = 0;
    if (opts.after !== undefined) {
      const after = opts.after;
      start = members.findIndex((m) => m.sub > after);
      if (start === -1) start = members.length;
    }
    const page = members.slice(start, start + opts.limit);
    const more = start + opts.limit < members.length;
    return {
      topic,
      members: page,
      count: members.length,
      anonymous,
      next: more && page.length > 0 ? page[page.length - 1]!.sub : null,
    };
  }

  async count(topic: string): Promise<PresenceCount> {
    const { members, anonymous } = merge(await this.readStore(topic));
    return { topic, count: members.length, anonymous };
  }

  private async readStore(topic: string): Promise<NodeEntry[]> {
    try {
      return await this.store.read(topic);
    } catch (err) {
      if (err instanceof RillError) throw err;
      throw new RillError('engine_unavailable', 'Presence is unavailable', { cause: err });
    }
  }

  /**
   * Calls `listener` with every join and leave of `topic` from now on (the members present now
   * are not announced: ask {@link page}). Returns the function that stops it.
   */
  watch(topic: string, listener: PresenceListener): () => void {
    let w = this.watches.get(topic);
    if (!w) {
      w = { listeners: new Set(), view: null, reading: false, again: false };
      this.watches.set(topic, w);
      this.read(topic);
    }
    w.listeners.add(listener);
    const watch = w;
    return () => {
      watch.listeners.delete(listener);
      if (watch.listeners.size === 0 && this.watches.get(topic) === watch) {
        if (watch.scheduled) clearTimeout(watch.scheduled);
        this.watches.delete(topic);
      }
    };
  }

  private scheduleRead(topic: string, delayMs: number): void {
    const w = this.watches.get(topic);
    if (!w || w.scheduled) return;
    w.scheduled = setTimeout(() => {
      w.scheduled = undefined;
      this.read(topic);
    }, delayMs);
    w.scheduled.unref();
  }

  /** Reads a watched topic's members and announces the difference from the last read. */
  private read(topic: string): void {
    const w = this.watches.get(topic);
    if (!w || this.closed) return;
    if (w.reading) {
      w.again = true;
      return;
    }
    w.reading = true;
    w.again = false;
    this.store.read(topic).then(
      (entries) => {
        w.reading = false;
        if (this.watches.get(topic) !== w) return;
        this.announce(topic, w, entries);
        if (w.again) this.read(topic);
      },
      (err: unknown) => {
        w.reading = false;
        this.options.log?.warn({ err, topic }, 'presence: could not read the members');
        if (w.again) this.scheduleRead(topic, 1_000);
      },
    );
  }

  private announce(topic: string, w: TopicWatch, entries: NodeEntry[]): void {
    const now = new Map<string, Record<string, unknown> | undefined>();
    for (const m of merge(entries).members) now.set(m.sub, m.info);
    const before = w.view;
    w.view = now;
    if (before === null) return;
    const changes: PresenceChange[] = [];
    for (const [sub, info] of now) {
      if (!before.has(sub)) changes.push({ kind: 'join', topic, sub, ...(info ? { info } : {}) });
    }
    for (const [sub, info] of before) {
      if (!now.has(sub)) changes.push({ kind: 'leave', topic, sub, ...(info ? { info } : {}) });
    }
    for (const c of changes) {
      for (const l of [...w.listeners]) l(c);
    }
  }

  /**
   * Stops the timers and removes this node's entries from the store, waiting at most `waitMs` for
   * the store (with the broker away the entries expire by themselves: a shutdown must not hang).
   */
  async close(waitMs = 1_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reread) clearInterval(this.reread);
    for (const w of this.watches.values()) if (w.scheduled) clearTimeout(w.scheduled);
    this.watches.clear();
    const writes: Promise<void>[] = [];
    for (const e of this.local.values()) {
      if (e.grace) clearTimeout(e.grace);
      writes.push(this.store.write(e.topic, e.sub, null).catch(() => undefined));
    }
    this.local.clear();
    await within(Promise.all(writes), waitMs);
    await this.store.close();
  }
}

/** `info` when its JSON fits in {@link MAX_INFO_BYTES}, else undefined. */
export function boundedInfo(
  info: Record<string, unknown> | undefined,
): Record<string, unknown> | undefined {
  if (info === undefined) return undefined;
  try {
    return Buffer.byteLength(JSON.stringify(info)) <= MAX_INFO_BYTES ? info : undefined;
  } catch {
    return undefined;
  }
}

/** Every node's entries of a topic as members in `sub` order, and the anonymous connections. */
export function merge(entries: NodeEntry[]): { members: Member[]; anonymous: number } {
  const bySub = new Map<string, Member>();
  let anonymous = 0;
  for (const e of entries) {
    if (e.sub === '') {
      anonymous += e.conns;
      continue;
    }
    const m = bySub.get(e.sub);
    if (!m) {
      bySub.set(e.sub, {
        sub: e.sub,
        ...(e.info ? { info: e.info } : {}),
        connections: e.conns,
        since: e.since,
      });
    } else {
      m.connections += e.conns;
      if (e.since < m.since) m.since = e.since;
      if (m.info === undefined && e.info) m.info = e.info;
    }
  }
  const members = [...bySub.values()].sort((a, b) => (a.sub < b.sub ? -1 : a.sub > b.sub ? 1 : 0));
  return { members, anonymous };
}
