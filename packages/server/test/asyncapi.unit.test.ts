import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERRORS, RillError, type ErrorCode } from '../src/model/errors.js';
import { WS_REQUEST_FIELDS } from '../src/wire/ws-request.js';
import {
  ASYNCAPI_PATH,
  AsyncApiMessages,
  parseAsyncApi,
  type ParsedAsyncApi,
} from './asyncapi-doc.js';

/**
 * docs/asyncapi.yaml on its own and against the code: it parses without errors, its schemas
 * compile strictly and its examples are valid, its error catalogue is the code's, and its
 * WebSocket requests have exactly the fields the server accepts. What a real server sends is
 * checked against it in asyncapi.frames.test.ts.
 */

const TEXT = readFileSync(ASYNCAPI_PATH, 'utf8');

let parsed: ParsedAsyncApi;
let doc: AsyncApiMessages;
beforeAll(async () => {
  // One parse (several seconds: the parser lints the whole document) for every test here.
  parsed = await parseAsyncApi(TEXT);
  doc = AsyncApiMessages.fromParsed(parsed);
}, 120_000);

interface CatalogueEntry {
  title: string;
  'x-http-status': number;
  properties: {
    code: { const: string };
    retryable: { const: boolean };
    closeCode: { const: number };
  };
}

describe('docs/asyncapi.yaml', () => {
  it('is an AsyncAPI 3 document with no error diagnostics from @asyncapi/parser', () => {
    expect(parsed.errors).toEqual([]);
    expect(parsed.document?.version()).toBe('3.1.0');
    expect(
      parsed.document
        ?.channels()
        .all()
        .map((c) => c.id()),
    ).toEqual(['ws', 'sseTopicStream', 'sseStream', 'ndjsonTopicStream', 'ndjsonStream']);
  });

  it('has every message example valid against its own schema', () => {
    let examples = 0;
    for (const m of doc.messages) {
      for (const ex of m.examples) {
        examples++;
        expect(m.payload!(ex), `${m.channel}/${m.id} example ${JSON.stringify(ex)}`).toBe(true);
      }
    }
    expect(examples).toBeGreaterThanOrEqual(8);
  });

  it("lists the code's error catalogue: every code with its HTTP status, retryable and close code", () => {
    const raw = parsed.document!.json() as {
      components: { schemas: { ErrorCatalogue: { oneOf: CatalogueEntry[] } } };
    };
    const documented = Object.fromEntries(
      raw.components.schemas.ErrorCatalogue.oneOf.map((e) => {
        expect(e.title).toBe(e.properties.code.const);
        return [
          e.properties.code.const,
          {
            status: e['x-http-status'],
            retryable: e.properties.retryable.const,
            close: e.properties.closeCode.const,
          },
        ];
      }),
    );
    const code = Object.fromEntries(
      Object.entries(ERRORS).map(([c, e]) => [
        c,
        { status: e.status, retryable: e.retryable, close: e.close },
      ]),
    );
    expect(documented).toEqual(code);
  });

  it('accepts the body of every catalogue error, and refuses one whose close code is not its own', () => {
    const wsError = doc.messages.find((m) => m.channel === 'ws' && m.id === 'error')!;
    for (const c of Object.keys(ERRORS) as ErrorCode[]) {
      const body = new RillError(c).body();
      expect(wsError.payload!({ op: 'error', id: 1, error: body }), c).toBe(true);
      expect(wsError.payload!({ op: 'error', error: { ...body, closeCode: 4999 } }), c).toBe(false);
    }
  });

  it('describes each WebSocket request with exactly the fields the server accepts', () => {
    const requests = doc.of('ws', 'receive');
    const documented = new Map<string, string[]>();
    for (const m of requests) {
      const schema = doc.document.channels().get('ws')!.messages().get(m.id)!.payload()!.json() as {
        properties: Record<string, { const?: string }>;
      };
      const op = schema.properties.op!.const!;
      expect(documented.has(op), `two messages for ${op}`).toBe(false);
      documented.set(op, Object.keys(schema.properties).sort());
    }
    const accepted = new Map([...WS_REQUEST_FIELDS].map(([op, f]) => [op, [...f].sort()]));
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(accepted));
  });
});
