import { z } from 'zod';
import { SIGNATURE_HEADER, signatureHeader } from '../model/signature.js';
import { isValidPattern } from '../model/topic.js';
import type { HookName } from './settings.js';

/** Largest answer read from a backend, bytes: a decision is a few hundred. */
export const MAX_HOOK_RESPONSE_BYTES = 16 * 1024;
/** Largest `info` a connect hook may return, as JSON bytes (the presence bound, as `rill.info`). */
export const MAX_HOOK_INFO_BYTES = 1024;
/** Longest `reason` passed on to the client; a longer one is cut. */
export const MAX_HOOK_REASON_LENGTH = 200;
/** Most patterns in a connect hook's `subscribe` or `publish`. */
export const MAX_HOOK_PATTERNS = 100;

/** The backend's answer: allow (a connect hook may enrich) or deny, with a reason to pass on. */
export type HookDecision =
  | {
      allow: true;
      /** Connect only: the member's `info` in presence, over the token's. */
      info?: Record<string, unknown>;
      /** Connect only: narrows what the connection may subscribe to (never widens). */
      subscribe?: string[];
      /** Connect only: narrows what the connection may publish to. */
      publish?: string[];
    }
  | { allow: false; reason?: string };

/** A call that gave no decision: it ran out of time, or the backend failed or answered nonsense. */
export class HookFailure extends Error {
  override name = 'HookFailure';
  constructor(
    readonly kind: 'timeout' | 'error',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const patterns = z
  .array(z.string().refine(isValidPattern, { message: 'not a topic or pattern' }))
  .max(MAX_HOOK_PATTERNS);

/** An answer: unknown members are ignored, so a backend may send more than Rill reads. */
const DecisionSchema = z.object({
  allow: z.boolean(),
  reason: z.string().optional(),
  info: z
    .record(z.string(), z.unknown())
    .refine((v) => Buffer.byteLength(JSON.stringify(v)) <= MAX_HOOK_INFO_BYTES, {
      message: `info is larger than ${MAX_HOOK_INFO_BYTES} bytes`,
    })
    .optional(),
  subscribe: patterns.optional(),
  publish: patterns.optional(),
});

/** A reason as a client may see it: one line of printable text, bounded. */
function cleanReason(reason: string | undefined): string | undefined {
  if (reason === undefined) return undefined;
  // eslint-disable-next-line no-control-regex
  const text = reason.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
  if (text === '') return undefined;
  return text.length > MAX_HOOK_REASON_LENGTH ? `${text.slice(0, MAX_HOOK_REASON_LENGTH)}…` : text;
}

/**
 * The decision an answer carries. A 2xx answer's JSON decides; 401 and 403 are a denial (with the
 * body's `reason` when it has one); anything else is a failure, for the failure policy.
 */
export function parseDecision(status: number, text: string): HookDecision {
  if (status === 401 || status === 403) {
    let reason: string | undefined;
    try {
      const v = JSON.parse(text) as { reason?: unknown };
      if (typeof v.reason === 'string') reason = v.reason;
    } catch {
      // A denial without a readable reason is still a denial.
    }
    const r = cleanReason(reason);
    return r === undefined ? { allow: false } : { allow: false, reason: r };
  }
  if (status < 200 || status > 299)
    throw new HookFailure('error', `the backend answered ${status}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HookFailure('error', 'the backend answered something that is not JSON', {
      cause: err,
    });
  }
  const r = DecisionSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue?.path.join('.') || 'answer';
    throw new HookFailure(
      'error',
      `the backend's answer is not a decision (${where}: ${issue?.message})`,
    );
  }
  const d = r.data;
  if (!d.allow) {
    const reason = cleanReason(d.reason);
    return reason === undefined ? { allow: false } : { allow: false, reason };
  }
  return {
    allow: true,
    ...(d.info === undefined ? {} : { info: d.info }),
    ...(d.subscribe === undefined ? {} : { subscribe: d.subscribe }),
    ...(d.publish === undefined ? {} : { publish: d.publish }),
  };
}

export type FetchLike = typeof fetch;

/**
 * Posts one hook request: the JSON `body`, signed with every secret (`rill-signature`), named in
 * `rill-hook`; resolves with the decision, or rejects with a {@link HookFailure} when there is none
 * within `timeoutMs` (the whole exchange: connecting, the answer's head and its body). The answer's
 * body is read up to {@link MAX_HOOK_RESPONSE_BYTES}; redirects are not followed (the signed body
 * would go to a URL nobody configured).
 */
export async function callHook(
  url: string,
  hook: HookName,
  body: string,
  secrets: readonly string[],
  timeoutMs: number,
  fetchImpl: FetchLike = fetch,
): Promise<HookDecision> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetchImpl(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'rill-hooks',
        'rill-hook': hook,
        [SIGNATURE_HEADER]: signatureHeader(secrets, body),
      },
      body,
      redirect: 'error',
      signal,
    });
    const text = await readBounded(res);
    return parseDecision(res.status, text);
  } catch (err) {
    if (err instanceof HookFailure) throw err;
    if (signal.aborted) {
      throw new HookFailure('timeout', `no answer within ${timeoutMs} ms`, { cause: err });
    }
    const cause = (err as { cause?: { code?: unknown } }).cause;
    const code = typeof cause?.code === 'string' ? ` (${cause.code})` : '';
    throw new HookFailure('error', `the backend could not be reached${code}`, { cause: err });
  }
}

/** The answer's body as text, refused past {@link MAX_HOOK_RESPONSE_BYTES}. */
async function readBounded(res: Response): Promise<string> {
  const announced = Number(res.headers.get('content-length'));
  if (Number.isFinite(announced) && announced > MAX_HOOK_RESPONSE_BYTES) {
    await res.body?.cancel().catch(() => undefined);
    throw new HookFailure(
      'error',
      `the backend's answer is larger than ${MAX_HOOK_RESPONSE_BYTES} bytes`,
    );
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_HOOK_RESPONSE_BYTES) {
      await reader.cancel().catch(() => undefined);
      throw new HookFailure(
        'error',
        `the backend's answer is larger than ${MAX_HOOK_RESPONSE_BYTES} bytes`,
      );
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
