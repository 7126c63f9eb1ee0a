/** Most topic names remembered as existing; past it the oldest are forgotten (and looked up again). */
const MAX_KNOWN = 100_000;

/**
 * Which topics exist, for `topicsPerMinute`: a publish to a topic not known here asks the engine
 * once (`head`: null for a topic that never had an event) and the answer is remembered, so a
 * publish to a known topic costs one map lookup.
 */
export class KnownTopics {
  private readonly known = new Set<string>();

  constructor(private readonly head: (topic: string) => Promise<unknown>) {}

  /** True when the topic is known to exist; otherwise asks the engine. */
  has(topic: string): boolean {
    return this.known.has(topic);
  }

  /** Whether `topic` exists, asking the engine when it is not known here. */
  async exists(topic: string): Promise<boolean> {
    if (this.known.has(topic)) return true;
    const exists = (await this.head(topic)) !== null;
    if (exists) this.add(topic);
    return exists;
  }

  /** Remembers that `topic` exists (it was just published to). */
  add(topic: string): void {
    if (this.known.has(topic)) return;
    if (this.known.size >= MAX_KNOWN) {
      // Sets iterate in insertion order: drop the oldest tenth.
      let n = MAX_KNOWN / 10;
      for (const t of this.known) {
        this.known.delete(t);
        if (--n === 0) break;
      }
    }
    this.known.add(topic);
  }
}
