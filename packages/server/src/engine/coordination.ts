/**
 * The lease and state-record rules of the {@link Coordination} capability, as pure functions over
 * the stored records: the memory engine keeps the records in maps, lmdb in its database (read and
 * written in one write transaction, so the processes sharing the directory see one lease).
 */

/** A lease as stored: after a release it stays with `owner` '' so its token keeps counting. */
export interface LeaseRecord {
  owner: string;
  token: number;
  /** ms since the epoch; the lease is held while `expires > now`. */
  expires: number;
}

/** A state record as stored: the value and the fencing token it was written under. */
export interface StateRecord {
  fence: number;
  value: string;
}

/**
 * The lease after `owner` asks for it at `now`: renewed when it holds it, taken (with the next
 * token) when it is free or expired; null when another owner holds it.
 */
export function takeLease(
  current: LeaseRecord | undefined,
  owner: string,
  ttlMs: number,
  now: number,
): LeaseRecord | null {
  const held = current !== undefined && current.owner !== '' && current.expires > now;
  if (held && current.owner !== owner) return null;
  if (held) return { owner, token: current.token, expires: now + ttlMs };
  return { owner, token: (current?.token ?? 0) + 1, expires: now + ttlMs };
}

/** The lease after `owner` gives it up; undefined when `owner` does not hold it (no change). */
export function giveUpLease(
  current: LeaseRecord | undefined,
  owner: string,
): LeaseRecord | undefined {
  if (current === undefined || current.owner !== owner) return undefined;
  return { owner: '', token: current.token, expires: 0 };
}

/** Whether a write under `fence` may replace `current`. */
export function fenceAllows(current: StateRecord | undefined, fence: number): boolean {
  return current === undefined || current.fence <= fence;
}
