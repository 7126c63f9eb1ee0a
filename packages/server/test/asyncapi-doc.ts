/**
 * docs/asyncapi.yaml as the tests read it: parsed by `@asyncapi/parser` (the document must have no
 * diagnostic of error severity), and every message's payload and headers schema compiled with ajv
 * (JSON Schema 2020-12, strict), so a recorded frame can be matched against the messages its
 * channel may carry. Shared by asyncapi.unit.test.ts and asyncapi.frames.test.ts.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DiagnosticSeverity, Parser, type AsyncAPIDocumentInterface } from '@asyncapi/parser';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';

export const ASYNCAPI_PATH = fileURLToPath(new URL('../../../docs/asyncapi.yaml', import.meta.url));

/** Who sends a message: `send` the server, `receive` the client (the document describes the server). */
export type Direction = 'send' | 'receive';

/**
 * One frame as the tests record it. `payload` is the message body (a WebSocket message's JSON,
 * an SSE frame's `data:` JSON, an NDJSON line); `headers` an SSE frame's other fields (`id`,
 * `event`, `retry`, `comment`); each absent when the frame has none.
 */
export interface Frame {
  payload?: unknown;
  headers?: Record<string, unknown>;
}

export interface DocMessage {
  channel: string;
  /** The message's key in its channel (`subscribe`, `event`, `heartbeat`, …). */
  id: string;
  directions: Set<Direction>;
  payload: ValidateFunction | null;
  headers: ValidateFunction | null;
  /** The examples' payloads, as written. */
  examples: unknown[];
}

export interface ParsedAsyncApi {
  document: AsyncAPIDocumentInterface | undefined;
  errors: string[];
  diagnostics: string[];
}

/** Parses `text` (the checked-in document by default) and lists its diagnostics. */
export async function parseAsyncApi(
  text = readFileSync(ASYNCAPI_PATH, 'utf8'),
): Promise<ParsedAsyncApi> {
  const { document, diagnostics } = await new Parser().parse(text);
  const show = (d: (typeof diagnostics)[number]): string =>
    `${d.code} at ${d.path.join('.')}: ${d.message}`;
  return {
    document,
    errors: diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).map(show),
    diagnostics: diagnostics.map(show),
  };
}

/**
 * A schema without the `x-` members the parser adds (`x-parser-schema-id`) or the document uses
 * (`x-http-status`), so ajv's strict mode can refuse every keyword it does not know: a typo or a
 * YAML slip that turned a description into keys fails the compile instead of matching anything.
 * Names inside `properties` are property names, never stripped.
 */
function stripExtensions(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(stripExtensions);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k.startsWith('x-')) continue;
    out[k] =
      k === 'properties' || k === 'patternProperties'
        ? Object.fromEntries(
            Object.entries(v as Record<string, unknown>).map(([p, s]) => [p, stripExtensions(s)]),
          )
        : stripExtensions(v);
  }
  return out;
}

export class AsyncApiMessages {
  private constructor(
    readonly document: AsyncAPIDocumentInterface,
    readonly messages: DocMessage[],
  ) {}

  /** Parses the document (failing on any error diagnostic) and compiles every message's schemas. */
  static async load(text?: string): Promise<AsyncApiMessages> {
    return AsyncApiMessages.fromParsed(await parseAsyncApi(text));
  }

  /** As {@link load}, from a document already parsed. */
  static fromParsed(parsed: ParsedAsyncApi): AsyncApiMessages {
    if (!parsed.document || parsed.errors.length > 0) {
      throw new Error(`docs/asyncapi.yaml does not parse:\n${parsed.errors.join('\n')}`);
    }
    const doc = parsed.document;
    const ajv = new Ajv2020({ strict: true, strictRequired: false, allowUnionTypes: true });
    const compile = (schema: unknown, where: string): ValidateFunction => {
      try {
        return ajv.compile(stripExtensions(schema) as object);
      } catch (err) {
        throw new Error(`${where}: ${(err as Error).message}`, { cause: err });
      }
    };
    // Directions from the operations: the server sends what its `send` operations list and the
    // replies of its `receive` ones; it receives what its `receive` operations list.
    const directions = new Map<string, Set<Direction>>();
    const note = (channel: string, id: string, d: Direction): void => {
      const key = `${channel}/${id}`;
      const set = directions.get(key) ?? new Set<Direction>();
      set.add(d);
      directions.set(key, set);
    };
    for (const op of doc.operations()) {
      const channel = op.channels().all()[0]!.id();
      for (const m of op.messages()) note(channel, m.id(), op.isSend() ? 'send' : 'receive');
      const reply = op.reply();
      if (reply) {
        const replyChannel = reply.channel()?.id() ?? channel;
        for (const m of reply.messages()) note(replyChannel, m.id(), 'send');
      }
    }
    const messages: DocMessage[] = [];
    for (const ch of doc.channels()) {
      for (const m of ch.messages()) {
        const where = `${ch.id()}/${m.id()}`;
        const payload = m.payload()?.json();
        const headers = m.headers()?.json();
        messages.push({
          channel: ch.id(),
          id: m.id(),
          directions: directions.get(where) ?? new Set(),
          payload: payload === undefined ? null : compile(payload, `${where} payload`),
          headers: headers === undefined ? null : compile(headers, `${where} headers`),
          examples: m
            .examples()
            .all()
            .map((e) => e.payload()),
        });
      }
    }
    return new AsyncApiMessages(doc, messages);
  }

  /** The messages `channel` carries in `direction`. */
  of(channel: string, direction: Direction): DocMessage[] {
    return this.messages.filter((m) => m.channel === channel && m.directions.has(direction));
  }

  /**
   * The ids of the messages of `channel` in `direction` that `frame` is: its payload valid against
   * the message's payload schema (and present exactly when the message has one), its headers
   * against the headers schema (none, or empty, when the message has none). With no match,
   * `why` says what each message objected to.
   */
  match(channel: string, direction: Direction, frame: Frame): { ids: string[]; why: string } {
    const ids: string[] = [];
    const why: string[] = [];
    for (const m of this.of(channel, direction)) {
      const problem = this.check(m, frame);
      if (problem === null) ids.push(m.id);
      else why.push(`  ${m.id}: ${problem}`);
    }
    return { ids, why: why.join('\n') };
  }

  private check(m: DocMessage, frame: Frame): string | null {
    if (m.payload === null) {
      if (frame.payload !== undefined) return 'the frame has a payload, the message none';
    } else if (frame.payload === undefined) {
      return 'the frame has no payload';
    } else if (!m.payload(frame.payload)) {
      return `payload: ${AsyncApiMessages.errors(m.payload)}`;
    }
    const headers = frame.headers ?? {};
    if (m.headers === null) {
      if (Object.keys(headers).length > 0) return 'the frame has headers, the message none';
    } else if (!m.headers(headers)) {
      return `headers: ${AsyncApiMessages.errors(m.headers)}`;
    }
    return null;
  }

  private static errors(v: ValidateFunction): string {
    return (v.errors ?? [])
      .slice(0, 4)
      .map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`)
      .join('; ');
  }
}
