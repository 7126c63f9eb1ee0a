import { patternCovers } from '../model/topic.js';

/** What an identity may do, as topic patterns (`*` one segment, `>` the rest). */
export interface GrantsData {
  subscribe: readonly string[];
  publish: readonly string[];
  /** Everything: every topic, and the administrative operations. */
  admin: boolean;
}

/**
 * An identity's grants and the checks made against them. Pure: a request's topic and the
 * identity's patterns decide, nothing else. A few patterns per identity, so a linear scan; every
 * check is a containment check, so a pattern passed where a topic was expected is never let
 * through on a textual match.
 */
export class Grants implements GrantsData {
  readonly subscribe: readonly string[];
  readonly publish: readonly string[];
  readonly admin: boolean;

  constructor(data: Partial<GrantsData> = {}) {
    this.subscribe = Object.freeze([...(data.subscribe ?? [])]);
    this.publish = Object.freeze([...(data.publish ?? [])]);
    this.admin = data.admin ?? false;
  }

  /** Nothing allowed. */
  static readonly none = new Grants();
  /** Everything allowed: a server without authentication. */
  static readonly all = new Grants({ subscribe: ['>'], publish: ['>'], admin: true });

  /** May publish to `topic` (a topic name). */
  canPublish(topic: string): boolean {
    return this.admin || this.publish.some((p) => patternCovers(p, topic));
  }

  /** May read `topic`'s history and see it in topic listings (a topic name). */
  canRead(topic: string): boolean {
    return this.admin || this.subscribe.some((p) => patternCovers(p, topic));
  }

  /**
   * May subscribe to `topicOrPattern`: a pattern only when one granted pattern covers every topic
   * it can match, so `chat.*` granted allows `chat.a` and `chat.*` but not `chat.>`.
   */
  canSubscribe(topicOrPattern: string): boolean {
    return this.admin || this.subscribe.some((p) => patternCovers(p, topicOrPattern));
  }

  /** Same patterns and admin flag (order and duplicates aside). */
  equals(other: GrantsData): boolean {
    const same = (a: readonly string[], b: readonly string[]): boolean => {
      const sa = new Set(a);
      const sb = new Set(b);
      return sa.size === sb.size && [...sa].every((x) => sb.has(x));
    };
    return (
      this.admin === other.admin &&
      same(this.subscribe, other.subscribe) &&
      same(this.publish, other.publish)
    );
  }

  toJSON(): GrantsData {
    return { subscribe: [...this.subscribe], publish: [...this.publish], admin: this.admin };
  }
}
