import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../src/model/errors.js';
import { REPO } from '@rill/testkit';

/**
 * The error table in docs/protocol.md is the catalogue's public face: same codes, statuses,
 * retryability and close codes, no more and no fewer. Close codes are unique and in the range
 * that tells a client what to do (4000–4499 reconnect, 4500–4999 stop).
 */
describe('error catalogue', () => {
  const doc = readFileSync(join(REPO, 'docs/protocol.md'), 'utf8');
  const rows = new Map<string, { status: number; retryable: boolean; close: number }>();
  for (const m of doc.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \| (yes|no) \| (\d{4}) \|/gm)) {
    expect(rows.has(m[1]!), `${m[1]} listed twice`).toBe(false);
    rows.set(m[1]!, { status: Number(m[2]), retryable: m[3] === 'yes', close: Number(m[4]) });
  }

  it('docs/protocol.md lists every code exactly as errors.ts defines it', () => {
    const fromCode = Object.fromEntries(
      Object.entries(ERRORS).map(([code, s]) => [
        code,
        { status: s.status, retryable: s.retryable, close: s.close },
      ]),
    );
    expect(Object.fromEntries(rows)).toEqual(fromCode);
  });

  it('close codes are unique and say whether to reconnect', () => {
    const closes = Object.values(ERRORS).map((s) => s.close);
    expect(new Set(closes).size).toBe(closes.length);
    for (const s of Object.values(ERRORS)) {
      expect(s.close >= 4000 && s.close <= 4499).toBe(s.retryable);
      expect(s.close >= 4500 && s.close <= 4999).toBe(!s.retryable);
    }
  });
});
