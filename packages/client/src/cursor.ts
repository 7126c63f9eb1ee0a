/** Cursor helpers (docs/protocol.md#cursors): `topic:epoch:seq` parts and an optional `@ms`. */

export interface Position {
  epoch: string;
  seq: number;
}

/** Splits an event id `topic:epoch:seq`; undefined when it is not one. */
export function parseId(id: string): { topic: string; epoch: string; seq: number } | undefined {
  const b = id.lastIndexOf(':');
  const a = id.lastIndexOf(':', b - 1);
  if (a <= 0) return undefined;
  const seq = Number(id.slice(b + 1));
  if (!Number.isSafeInteger(seq) || seq < 0) return undefined;
  return { topic: id.slice(0, a), epoch: id.slice(a + 1, b), seq };
}

/** The per-topic positions a cursor lists (the watermark is the server's business). */
export function cursorPositions(cursor: string): Map<string, Position> {
  const out = new Map<string, Position>();
  for (const part of cursor.split(',')) {
    const p = part.startsWith('@') ? undefined : parseId(part);
    if (p) out.set(p.topic, { epoch: p.epoch, seq: p.seq });
  }
  return out;
}
