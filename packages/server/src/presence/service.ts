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

interface TopicView {
  listeners: Set<PresenceListener>;
  /** Every node's entries by sub; null until the first read. */
  bySub: Map<string, Map<string, StoredEntry>> | null;
  /** Settles with the first read (a failed one: a new one, for the retry). */
  loaded: Promise<void>;
  settle: (err?: unknown) => void;
  /** Changes seen while a read is in flight, applied again on top of its answer. */
  pending: { node: string; sub: string; entry: StoredEntry | null }[] | null;
  reading: boolean;
  again: boolean;
  scheduled?: NodeJS.Timeout;
  /**
   * The members' subs in order (anonymous '' left out), kept sorted as members come and go, so a
   * page is a binary search and a slice however many members there are.
   */
  subs: string[];
  /** Kept without listeners until then (a topic being queried). */
  leaseUntil: number;
}

/** Delay before reading a topic again after another node asked for it (coalesces bursts). */
const REMOTE_COALESCE_MS = 50;

/** How long a queried topic's view is kept (and kept current) after its last query. */
const QUERY_LEASE_MS = 30_000;

/**
 * Who is subscribed to which topic: this node's connections (entries kept in a
 * {@link PresenceStore}, where every node reads them), queries over every node, and join/leave
 * announcements for listeners.
 *
 * A reconnect is not a leave and a join: when a subscriber's last connection on this node closes,
 * its entry stays (with 0 connections) for the grace period, and is removed only if no connection
 * came back by then. Leaves are therefore announced from the stored state, never timed by the
 * listeners: a subscriber that moved to another node within the grace period never disappears.
 *
 * A topic that is listened to or queried has a view: every node's entries, read once, then kept
 * current by the changes the nodes announce (each carries the entry), and read again every
 * `rereadMs` (a node that died announces nothing: its entries drop out of the read). A query is
 * answered from the view, so a topic of 10,000 members costs a read per `rereadMs`, not per query.
 */
export class PresenceService {
  private readonly local = new Map<string, LocalEntry>();
  /** The same entries by topic. */
  private readonly localByTopic = new Map<string, Set<LocalEntry>>();
  private readonly views = new Map<string, TopicView>();
  private readonly sweep: NodeJS.Timeout;
  private closed = false;

  constructor(
    readonly store: PresenceStore,
    private readonly options: PresenceOptions,
  ) {
    store.onRemoteChange((c) => {
      if (c.sub === undefined) this.scheduleRead(c.topic, REMOTE_COALESCE_MS);
      else this.apply(c.topic, c.node, c.sub, c.entry ?? null);
    });
    const every = options.rereadMs > 0 ? options.rereadMs : QUERY_LEASE_MS;
    this.sweep = setInterval(() => {
      const now = Date.now();
      for (const [topic, v] of this.views) {
        if (v.listeners.size === 0 && v.leaseUntil < now) this.drop(topic, v);
        else if (options.rereadMs > 0) this.read(topic);
      }
    }, every);
    this.sweep.unref();
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
        let set = this.localByTopic.get(topic);
        if (!set) this.localByTopic.set(topic, (set = new Set()));
        set.add(e);
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
    const state = e.removed ? null : stored(e);
    // This node's own change: its views know it now, whatever the store answers.
    this.apply(e.topic, this.store.node, e.sub, state);
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
    else if (e.removed && this.local.get(id) === e) {
      this.local.delete(id);
      const set = this.localByTopic.get(e.topic);
      set?.delete(e);
      if (set?.size === 0) this.localByTopic.delete(e.topic);
    }
  }

  /** A page of `topic`'s members in `sub` order, those after `after`. */
  async page(topic: string, opts: { after?: string; limit: number }): Promise<PresencePage> {
    const v = await this.loadedView(topic);
    const subs = v.subs;
    const start = opts.after === undefined ? 0 : firstAfter(subs, opts.after);
    const page = subs.slice(start, start + opts.limit);
    const more = start + opts.limit < subs.length;
    return {
      topic,
      members: page.map((sub) => memberOf(sub, v.bySub!.get(sub)!)),
      count: subs.length,
      anonymous: anonymousOf(v),
      next: more && page.length > 0 ? page[page.length - 1]! : null,
    };
  }

  async count(topic: string): Promise<PresenceCount> {
    const v = await this.loadedView(topic);
    return { topic, count: v.subs.length, anonymous: anonymousOf(v) };
  }

  private async loadedView(topic: string): Promise<TopicView> {
    const v = this.view(topic);
    v.leaseUntil = Math.max(v.leaseUntil, Date.now() + QUERY_LEASE_MS);
    try {
      await v.loaded;
    } catch (err) {
      if (err instanceof RillError) throw err;
      throw new RillError('engine_unavailable', 'Presence is unavailable', { cause: err });
    }
    return v;
  }

  /**
   * Calls `listener` with every join and leave of `topic` from now on (the members present now
   * are not announced: ask {@link page}). Returns the function that stops it.
   */
  watch(topic: string, listener: PresenceListener): () => void {
    const v = this.view(topic);
    v.listeners.add(listener);
    return () => {
      v.listeners.delete(listener);
      if (v.listeners.size === 0) v.leaseUntil = Math.max(v.leaseUntil, Date.now());
    };
  }

  /** The topic's view, made (and its first read started) when there is none. */
  private view(topic: string): TopicView {
    let v = this.views.get(topic);
    if (v) return v;
    v = {
      listeners: new Set(),
      bySub: null,
      loaded: Promise.resolve(),
      settle: () => undefined,
      pending: null,
      reading: false,
      again: false,
      subs: [],
      leaseUntil: 0,
    };
    newLoaded(v);
    this.views.set(topic, v);
    this.read(topic);
    return v;
  }

  private drop(topic: string, v: TopicView): void {
    if (v.scheduled) clearTimeout(v.scheduled);
    if (this.views.get(topic) === v) this.views.delete(topic);
  }

  private scheduleRead(topic: string, delayMs: number): void {
    const v = this.views.get(topic);
    if (!v || v.scheduled) return;
    v.scheduled = setTimeout(() => {
      v.scheduled = undefined;
      this.read(topic);
    }, delayMs);
    v.scheduled.unref();
  }

  /** Reads a topic's entries again and announces the difference from what the view held. */
  private read(topic: string): void {
    const v = this.views.get(topic);
    if (!v || this.closed) return;
    if (v.reading) {
      v.again = true;
      return;
    }
    v.reading = true;
    v.again = false;
    v.pending = [];
    const self = this.store.node;
    // The first read's base: this node's entries as the read starts; what changes after (here or
    // elsewhere) is in `pending` and is announced on top of it.
    const first = v.bySub === null;
    const selfAtStart = first
      ? [...(this.localByTopic.get(topic) ?? [])]
          .filter((e) => !e.removed)
          .map((e) => ({ sub: e.sub, entry: stored(e) }))
      : [];
    this.store.read(topic).then(
      (entries) => {
        v.reading = false;
        const pending = v.pending ?? [];
        v.pending = null;
        if (this.views.get(topic) === v && first) {
          const base = new Map<string, Map<string, StoredEntry>>();
          for (const { node, sub, ...e } of entries) {
            if (node !== self) setEntry(base, node, sub, e);
          }
          for (const { sub, entry } of selfAtStart) setEntry(base, self, sub, entry);
          v.bySub = base;
          v.subs = [...base.keys()].filter((s) => s !== '').sort(bySub);
          for (const d of pending) this.apply(topic, d.node, d.sub, d.entry);
          v.settle();
        } else if (this.views.get(topic) === v) {
          const next = new Map<string, Map<string, StoredEntry>>();
          for (const { node, sub, ...e } of entries) {
            if (node !== self) setEntry(next, node, sub, e);
          }
          // This node's own entries as they are now, not as the store had them when it answered.
          for (const e of this.localByTopic.get(topic) ?? []) {
            if (!e.removed) setEntry(next, self, e.sub, stored(e));
          }
          for (const d of pending) if (d.node !== self) setEntry(next, d.node, d.sub, d.entry);
          const before = v.bySub;
          v.bySub = next;
          v.subs = [...next.keys()].filter((s) => s !== '').sort(bySub);
          if (before) {
            for (const sub of new Set([...before.keys(), ...next.keys()])) {
              this.announce(topic, v, sub, before.get(sub), next.get(sub));
            }
          }
        }
        if (v.again) this.read(topic);
      },
      (err: unknown) => {
        v.reading = false;
        v.pending = null;
        this.options.log?.warn({ err, topic }, 'presence: could not read the members');
        if (v.bySub === null && this.views.get(topic) === v) {
          // No first read yet: waiting queries fail now; a view with listeners tries again, one
          // without is dropped (the next query makes a new one).
          const settle = v.settle;
          if (v.listeners.size === 0) this.drop(topic, v);
          else {
            newLoaded(v);
            this.scheduleRead(topic, 1_000);
          }
          settle(err);
        } else if (v.again) this.scheduleRead(topic, 1_000);
      },
    );
  }

  /** One node's entry of a sub changed: the topic's view (if any) takes it and announces. */
  private apply(topic: string, node: string, sub: string, entry: StoredEntry | null): void {
    const v = this.views.get(topic);
    if (!v) return;
    v.pending?.push({ node, sub, entry });
    if (!v.bySub) return;
    const before = v.bySub.get(sub);
    const had = before ? new Map(before) : undefined;
    setEntry(v.bySub, node, sub, entry);
    const now = v.bySub.get(sub);
    if (sub !== '' && (had === undefined) !== (now === undefined)) {
      const i = firstAfter(v.subs, sub);
      if (now) v.subs.splice(i, 0, sub);
      else if (v.subs[i - 1] === sub) v.subs.splice(i - 1, 1);
    }
    this.announce(topic, v, sub, had, now);
  }

  private announce(
    topic: string,
    v: TopicView,
    sub: string,
    before: Map<string, StoredEntry> | undefined,
    after: Map<string, StoredEntry> | undefined,
  ): void {
    if (sub === '' || v.listeners.size === 0) return;
    const was = before !== undefined && before.size > 0;
    const is = after !== undefined && after.size > 0;
    if (was === is) return;
    const info = infoOf(is ? after : before);
    const change: PresenceChange = {
      kind: is ? 'join' : 'leave',
      topic,
      sub,
      ...(info ? { info } : {}),
    };
    for (const l of [...v.listeners]) l(change);
  }

  /** Stops the timers and removes this node's entries from the store, waiting at most `waitMs` for
   * the store (with the broker away the entries expire by themselves: a shutdown must not hang).
   */
  async close(waitMs = 1_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweep);
    for (const [topic, v] of this.views) {
      this.drop(topic, v);
      v.settle(new RillError('shutting_down'));
    }
    const writes: Promise<void>[] = [];
    for (const e of this.local.values()) {
      if (e.grace) clearTimeout(e.grace);
      writes.push(this.store.write(e.topic, e.sub, null).catch(() => undefined));
    }
    this.local.clear();
    this.localByTopic.clear();
    await within(Promise.all(writes), waitMs);
    await this.store.close();
  }
}

/** A new pending first read for `v`. */
function newLoaded(v: TopicView): void {
  v.loaded = new Promise<void>((resolve, reject) => {
    v.settle = (err) => (err === undefined ? resolve() : reject(err as Error));
  });
  v.loaded.catch(() => undefined);
}

function stored(e: LocalEntry): StoredEntry {
  return { conns: e.conns, since: e.since, ...(e.info ? { info: e.info } : {}) };
}

function setEntry(
  bySub: Map<string, Map<string, StoredEntry>>,
  node: string,
  sub: string,
  entry: StoredEntry | null,
): void {
  let nodes = bySub.get(sub);
  if (entry) {
    if (!nodes) bySub.set(sub, (nodes = new Map()));
    nodes.set(node, entry);
  } else if (nodes) {
    nodes.delete(node);
    if (nodes.size === 0) bySub.delete(sub);
  }
}

function infoOf(nodes: Map<string, StoredEntry> | undefined): Record<string, unknown> | undefined {
  for (const e of nodes?.values() ?? []) if (e.info) return e.info;
  return undefined;
}

/** The index of the first of the sorted `subs` that sorts after `after`. */
function firstAfter(subs: string[], after: string): number {
  let lo = 0;
  let hi = subs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (subs[mid]! <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Sub order: UTF-16 code units (as `<`), the same on every node and in `after`. */
function bySub(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** One member over its nodes' entries: connections summed, the earliest since. */
function memberOf(sub: string, nodes: Map<string, StoredEntry>): Member {
  let connections = 0;
  let since = Infinity;
  let info: Record<string, unknown> | undefined;
  for (const e of nodes.values()) {
    connections += e.conns;
    if (e.since < since) since = e.since;
    info ??= e.info;
  }
  return { sub, ...(info ? { info } : {}), connections, since };
}

function anonymousOf(v: TopicView): number {
  let n = 0;
  for (const e of v.bySub?.get('')?.values() ?? []) n += e.conns;
  return n;
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
