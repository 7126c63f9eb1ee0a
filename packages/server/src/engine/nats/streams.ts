import { createHash } from 'node:crypto';
import { NoRespondersError, nanos } from '@nats-io/transport-node';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StoredMsg,
  type StreamInfo,
} from '@nats-io/jetstream';

/** The stream and subject of every topic, and of the topic registry, under one prefix. */
export class Streams {
  /** The registry: one message per topic created, for `watchTopics` and waiting watches. */
  readonly registryStream: string;
  readonly registrySubject: string;

  /**
   * @param prefix of every stream and subject
   * @param replicas of every stream
   * @param windowMs the idempotency window, which is also each stream's `duplicate_window`
   */
  constructor(
    readonly prefix: string,
    private readonly replicas: number,
    private readonly windowMs: number,
  ) {
    this.registryStream = `${prefix}_topics`;
    this.registrySubject = `${prefix}.topics`;
  }

  streamName(topic: string): string {
    const enc = topic.replace(/~/g, '~~').replace(/\./g, '~d');
    // Stream names become file names: keep them short.
    if (enc.length <= 180) return `${this.prefix}_T_${enc}`;
    return `${this.prefix}_H_${createHash('sha256').update(topic).digest('hex').slice(0, 40)}`;
  }

  /** Subjects of topics start with this; the topic name follows. */
  get topicSubjectPrefix(): string {
    return `${this.prefix}.t.`;
  }

  subjectOf(topic: string): string {
    return `${this.topicSubjectPrefix}${topic}`;
  }

  /**
   * The core NATS subject of a topic's signals (ephemeral events, deletion): outside every
   * stream's subjects, so nothing published on it is stored.
   */
  signalSubject(topic: string): string {
    return `${this.prefix}.x.${topic}`;
  }

  /** The registry stream, created if it is missing. */
  ensureRegistry(jsm: JetStreamManager): Promise<StreamInfo> {
    return this.ensureStream(jsm, {
      name: this.registryStream,
      subjects: [this.registrySubject],
      description: 'rill topic registry',
    });
  }

  /** The stream's info, creating it first if it does not exist. */
  async ensureStream(
    jsm: JetStreamManager,
    cfg: { name: string; subjects: string[]; description: string },
  ): Promise<StreamInfo> {
    try {
      return await jsm.streams.info(cfg.name);
    } catch (err) {
      if (!isCode(err, JetStreamApiCodes.StreamNotFound)) throw err;
    }
    try {
      return await jsm.streams.add({
        ...cfg,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        num_replicas: this.replicas,
        duplicate_window: nanos(Math.max(1_000, this.windowMs)),
        max_msgs: cfg.name === this.registryStream ? 1_000_000 : -1,
      });
    } catch (err) {
      // Another node created it first, with its own epoch: theirs stands.
      return await jsm.streams.info(cfg.name).catch(() => {
        throw err;
      });
    }
  }

  /** Stream info of a topic, or null. */
  async info(jsm: JetStreamManager, topic: string): Promise<StreamInfo | null> {
    try {
      return await jsm.streams.info(this.streamName(topic));
    } catch (err) {
      if (isCode(err, JetStreamApiCodes.StreamNotFound)) return null;
      throw err;
    }
  }
}

/** The stream's message at `seq`, or null when there is none (purged, or never written). */
export async function getMsg(
  jsm: JetStreamManager,
  stream: string,
  seq: number,
): Promise<StoredMsg | null> {
  try {
    return await jsm.streams.getMessage(stream, { seq });
  } catch (err) {
    if (isCode(err, JetStreamApiCodes.NoMessageFound)) return null;
    throw err;
  }
}

export function isCode(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** No stream listens on the subject (the client reports it as "JetStream not enabled"). */
export function hasNoResponders(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof NoRespondersError) return true;
  }
  return false;
}

export function isNoStream(err: unknown): boolean {
  return err instanceof Error && /no stream|stream not found/i.test(err.message);
}

/** JetStream API error codes of a full store: account, server, memory and storage limits. */
const FULL_CODES = new Set([10002, 10023, 10028, 10047]);
/** JSStreamStoreFailedF: the stream's store refused the message (the description says why). */
const STORE_FAILED = 10077;

/**
 * Why JetStream refused a publish for lack of space, if it did: an account or server storage
 * limit, or a stream's own limit with `discard: new` ("maximum bytes exceeded", "maximum messages
 * exceeded", also per subject), which comes as a store failure (10077). Not a message too large
 * for the stream (10054): retrying that cannot help.
 */
export function refusedForSpace(err: unknown): string | undefined {
  if (!(err instanceof JetStreamApiError)) return undefined;
  const description = err.apiError().description;
  if (FULL_CODES.has(err.code)) return `JetStream: ${description}`;
  if (
    err.code === STORE_FAILED &&
    /maximum (bytes|messages)|resources exceeded|no space left|insufficient/i.test(description)
  ) {
    return `JetStream: ${description}`;
  }
  return undefined;
}
