import { RillError } from './errors.js';

/** Longest topic name or pattern accepted, in characters. */
export const MAX_TOPIC_LENGTH = 200;

const TOPIC_RE = /^[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*$/;
const SEGMENT_RE = /^[A-Za-z0-9_~-]+$/;

/**
 * The rules below as JSON Schema `pattern`s, for the API description and request validation
 * (`api/schemas.ts`); `schemas.unit.test.ts` checks that each gives the same verdict as its function.
 */
export const TOPIC_PATTERN = TOPIC_RE.source;
/** A topic or a subscription pattern ({@link isValidPattern}), lengths aside. */
export const SUBSCRIPTION_PATTERN = '^(?:(?:[A-Za-z0-9_~-]+|\\*)\\.)*(?:[A-Za-z0-9_~-]+|\\*|>)$';

/**
 * A topic name: 1–200 chars of `[A-Za-z0-9_.~-]`, `.` separating non-empty segments
 * (`prices.BTC-USD`, `chat.room-1`).
 */
export function isTopic(name: string): boolean {
  return name.length > 0 && name.length <= MAX_TOPIC_LENGTH && TOPIC_RE.test(name);
}

export function assertTopic(name: string): string {
  if (!isTopic(name)) {
    throw new RillError(
      'invalid_topic',
      `Invalid topic name ${JSON.stringify(name.slice(0, 64))}: use 1-${MAX_TOPIC_LENGTH} characters of [A-Za-z0-9_.~-] with non-empty segments separated by "."`,
    );
  }
  return name;
}

const PREFIX_RE = /^[A-Za-z0-9_.~-]*$/;
/** {@link assertTopicPrefix}'s alphabet as a JSON Schema `pattern`. */
export const PREFIX_PATTERN = PREFIX_RE.source;

/**
 * A topic-name prefix or a topic name to list after (`GET /v1/topics?prefix=&after=`): at most
 * {@link MAX_TOPIC_LENGTH} characters of the topic alphabet, or `invalid_parameter`. Nothing longer
 * or outside the alphabet can match a topic, and an engine need not take it as a key.
 */
export function assertTopicPrefix(value: string, name: string): string {
  if (value.length > MAX_TOPIC_LENGTH || !PREFIX_RE.test(value)) {
    throw new RillError(
      'invalid_parameter',
      `${name} must be at most ${MAX_TOPIC_LENGTH} characters of [A-Za-z0-9_.~-]`,
    );
  }
  return value;
}

/** True when `p` contains a wildcard segment (`*` or `>`). */
export function isPattern(p: string): boolean {
  return p.split('.').some((s) => s === '*' || s === '>');
}

/**
 * A subscription pattern, NATS style: segments separated by `.`, where `*` matches exactly one
 * segment and `>` (last segment only) matches one or more remaining segments. A plain topic name
 * is a pattern that matches itself.
 */
export function isValidPattern(p: string): boolean {
  if (p.length === 0 || p.length > MAX_TOPIC_LENGTH) return false;
  const segs = p.split('.');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i] as string;
    if (s === '*') continue;
    if (s === '>') {
      if (i !== segs.length - 1) return false;
      continue;
    }
    if (!SEGMENT_RE.test(s)) return false;
  }
  return true;
}

export function assertPattern(p: string): string {
  if (!isValidPattern(p)) {
    throw new RillError(
      'invalid_pattern',
      `Invalid topic pattern ${JSON.stringify(p.slice(0, 64))}: segments of [A-Za-z0-9_~-], "*" for one segment, ">" as the last segment for the rest`,
    );
  }
  return p;
}

/** Whether `topic` matches `pattern` (see {@link isValidPattern}). */
export function matchPattern(pattern: string, topic: string): boolean {
  if (pattern === topic) return true;
  const ps = pattern.split('.');
  const ts = topic.split('.');
  for (let i = 0; i < ps.length; i++) {
    const p = ps[i];
    if (p === '>') return ts.length > i;
    if (i >= ts.length) return false;
    if (p !== '*' && p !== ts[i]) return false;
  }
  return ps.length === ts.length;
}

/**
 * The literal start of a pattern, up to its first wildcard segment (`prices.eu.>` → `prices.eu.`;
 * a plain topic: itself): every topic the pattern matches starts with it.
 */
export function patternPrefix(pattern: string): string {
  const segs = pattern.split('.');
  const i = segs.findIndex((s) => s === '*' || s === '>');
  return i === -1 ? pattern : segs.slice(0, i).join('.') + (i > 0 ? '.' : '');
}

/** A compiled matcher for repeated use on the hot path. */
export function compilePattern(pattern: string): (topic: string) => boolean {
  if (!isPattern(pattern)) return (t) => t === pattern;
  return (t) => matchPattern(pattern, t);
}

/**
 * Whether every topic `requested` can match is also matched by `allowed` (both topics or valid
 * patterns): the containment check behind access grants, where a subscription to a pattern is
 * allowed only when the whole pattern is. `chat.>` covers `chat.*`, `chat.a.b` and `chat.>`;
 * `chat.*` covers `chat.a` but not `chat.>` (which also matches `chat.a.b`); `chat.a` covers only
 * itself. Anything that is not a valid pattern covers and is covered by nothing.
 *
 * Segment by segment: a literal in `allowed` needs the same literal in `requested` (a `*` there
 * would also match other names); `*` takes any single segment except `>` (which may stand for
 * several); `>` takes whatever is left as long as something is.
 */
export function patternCovers(allowed: string, requested: string): boolean {
  if (!isValidPattern(allowed) || !isValidPattern(requested)) return false;
  const as = allowed.split('.');
  const rs = requested.split('.');
  for (let i = 0; i < as.length; i++) {
    const a = as[i];
    if (a === '>') return rs.length > i;
    if (i >= rs.length) return false;
    const r = rs[i];
    if (r === '>') return false;
    if (a !== '*' && a !== r) return false;
  }
  return rs.length === as.length;
}
