/**
 * Where a node keeps its presence entries so that every node can read them: the contract, and the
 * in-process store (memory and lmdb engines: presence is per worker process).
 */

/** One node's entry for one subscriber of one topic. `sub` '' is the anonymous subscribers. */
export interface StoredEntry {
  /** The identity's `info`, when it has one. */
  info?: Record<string, unknown>;
  /** Open connections of this subscriber on the node (0 during the grace period). */
  conns: number;
  /** When its first connection opened, ms since the epoch. */
  since: number;
}

export interface NodeEntry extends StoredEntry {
  node: string;
  sub: string;
}

/**
 * Another node's change: its entry for (`topic`, `sub`), null when removed; without `sub`, the
 * topic's entries changed wholesale (a node wrote its entries again) and should be read again.
 */
export interface RemoteChange {
  node: string;
  topic: string;
  sub?: string;
  entry?: StoredEntry | null;
}

export interface PresenceStore {
  /** This node's id among the nodes sharing the store. */
  readonly node: string;
  /**
   * Records this node's entry for (`topic`, `sub`); null removes it. Called with the latest state
   * only; the promise settles when the store has it (errors are the store's to log and repair).
   */
  write(topic: string, sub: string, entry: StoredEntry | null): Promise<void>;
  /** Every live node's entries of `topic` (a dead node's are left out). */
  read(topic: string): Promise<NodeEntry[]>;
  /** Tells `listener` of every other node's change (at most once; a lost one is repaired by reads). */
  onRemoteChange(listener: (change: RemoteChange) => void): void;
  close(): Promise<void>;
}

/** One process' presence: nothing is shared, so this node's entries are all there is. */
export class LocalPresenceStore implements PresenceStore {
  readonly node = 'local';
  private readonly topics = new Map<string, Map<string, StoredEntry>>();

  write(topic: string, sub: string, entry: StoredEntry | null): Promise<void> {
    let t = this.topics.get(topic);
    if (entry) {
      if (!t) this.topics.set(topic, (t = new Map()));
      t.set(sub, entry);
    } else if (t) {
      t.delete(sub);
      if (t.size === 0) this.topics.delete(topic);
    }
    return Promise.resolve();
  }

  read(topic: string): Promise<NodeEntry[]> {
    const t = this.topics.get(topic);
    if (!t) return Promise.resolve([]);
    return Promise.resolve([...t].map(([sub, e]) => ({ node: this.node, sub, ...e })));
  }

  onRemoteChange(): void {}

  close(): Promise<void> {
    return Promise.resolve();
  }
}
