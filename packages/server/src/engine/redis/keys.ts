/** The keys of one topic's log (their contents are described in `scripts.ts`). */
export interface TopicKeys {
  meta: string;
  stream: string;
  keys: string;
  expiry: string;
}

/** Every key and channel name the redis engine uses, under one prefix. */
export class RedisKeys {
  /** Sorted set of every topic name. */
  readonly topics: string;
  /** Stream of created topics, for replaying the creations a subscriber missed. */
  readonly created: string;
  /** Channel on which every topic creation is published. */
  readonly createdChannel: string;

  constructor(private readonly prefix: string) {
    this.topics = `${prefix}:topics`;
    this.created = `${prefix}:new`;
    this.createdChannel = `${prefix}:new`;
  }

  topic(topic: string): TopicKeys {
    const base = `${this.prefix}:{${topic}}`;
    return { meta: `${base}:m`, stream: `${base}:s`, keys: `${base}:k`, expiry: `${base}:x` };
  }

  /** The channel on which the append script publishes the topic's batches. */
  channel(topic: string): string {
    return `${this.prefix}:e:${topic}`;
  }
}
