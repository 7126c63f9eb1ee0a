import { isIP } from 'node:net';

/** Host names as `Host` headers and `http.allowedHosts` entries carry them. */

/** Lower case, no trailing dot, no IPv6 brackets. */
export function normalise(name: string): string {
  let n = name.trim().toLowerCase();
  if (n.startsWith('[') && n.endsWith(']')) n = n.slice(1, -1);
  if (n.endsWith('.') && n.length > 1) n = n.slice(0, -1);
  return n;
}

const HOST_RE = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9_.-]+))(?::\d{0,5})?$/;

/** The name part of a `Host` header (`name`, `name:port`, `[v6]:port`), or null if malformed. */
export function hostName(host: string): string | null {
  const m = HOST_RE.exec(host.trim());
  if (!m) return null;
  if (m[1] !== undefined) return isIP(m[1]) === 6 ? m[1].toLowerCase() : null;
  return normalise(m[2]!);
}

/** What `http.allowedHosts` entries look like: a name, `.domain`, an address, or `*`. */
export function isHostPattern(s: string): boolean {
  if (s === '*') return true;
  const n = s.trim();
  if (isIP(n.replace(/^\[(.*)\]$/, '$1')) !== 0) return true;
  return /^\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?$/.test(n);
}
