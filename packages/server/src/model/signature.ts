import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Signatures on the requests Rill makes to an application's backend (outgoing webhooks and backend
 * hooks), so the receiver knows the request came from Rill and is not a replay.
 *
 * The header is `rill-signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is the HMAC-SHA256,
 * keyed with the shared secret, of `<t>.<raw request body>`. The receiver recomputes it over the
 * bytes it received, compares in constant time, and refuses a timestamp older (or newer) than its
 * tolerance. During a secret rotation several secrets may be configured: the request then carries
 * one `v1=` per secret and any one match is enough.
 */
export const SIGNATURE_HEADER = 'rill-signature';

/** The default tolerance of {@link verifySignature}: five minutes either way. */
export const DEFAULT_SIGNATURE_TOLERANCE_SECONDS = 300;

export function signatureHeader(
  secrets: string | readonly string[],
  body: string | Uint8Array,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): string {
  const list = typeof secrets === 'string' ? [secrets] : secrets;
  if (list.length === 0) throw new Error('signatureHeader: at least one secret is needed');
  const parts = [`t=${nowSeconds}`];
  for (const secret of list) parts.push(`v1=${digest(secret, nowSeconds, body)}`);
  return parts.join(',');
}

export type SignatureCheck =
  { ok: true; timestamp: number } | { ok: false; reason: 'malformed' | 'expired' | 'mismatch' };

/**
 * Checks a `rill-signature` header against the raw body. `secrets` may hold several (rotation);
 * any one matching `v1=` passes. The timestamp must be within `toleranceSeconds` of `nowSeconds`.
 */
export function verifySignature(
  header: string | undefined,
  body: string | Uint8Array,
  secrets: string | readonly string[],
  options: { toleranceSeconds?: number; nowSeconds?: number } = {},
): SignatureCheck {
  if (typeof header !== 'string' || header.length > 4096) return { ok: false, reason: 'malformed' };
  let timestamp = NaN;
  const given: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't' && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (key === 'v1' && /^[0-9a-f]{64}$/.test(value)) given.push(value);
  }
  if (!Number.isFinite(timestamp) || given.length === 0) return { ok: false, reason: 'malformed' };
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? DEFAULT_SIGNATURE_TOLERANCE_SECONDS;
  if (Math.abs(now - timestamp) > tolerance) return { ok: false, reason: 'expired' };
  const list = typeof secrets === 'string' ? [secrets] : secrets;
  for (const secret of list) {
    const expected = Buffer.from(digest(secret, timestamp, body), 'hex');
    for (const hex of given) {
      if (timingSafeEqual(expected, Buffer.from(hex, 'hex'))) return { ok: true, timestamp };
    }
  }
  return { ok: false, reason: 'mismatch' };
}

function digest(secret: string, timestamp: number, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}
