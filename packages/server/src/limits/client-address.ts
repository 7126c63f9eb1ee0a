import type { IncomingHttpHeaders } from 'node:http';
import proxyaddr from '@fastify/proxy-addr';
import ipaddr from 'ipaddr.js';

/**
 * Which address a request comes from, for the per-address limits (docs/limits.md § Client
 * address). The peer of the socket, unless that peer is a trusted proxy: then the `Forwarded`
 * header (RFC 7239; `X-Forwarded-For` when there is none) lists the hops, and the client is the
 * rightmost one that is not itself a trusted proxy. A header from an untrusted peer is ignored, so
 * a client cannot pick its own address.
 */
export class ClientAddresses {
  private readonly trusted: ((addr: string, i: number) => boolean) | null;
  private readonly exempt: ((addr: string, i: number) => boolean) | null;

  constructor(trustedProxies: readonly string[], exemptAddresses: readonly string[] = []) {
    this.trusted = trustedProxies.length > 0 ? proxyaddr.compile([...trustedProxies]) : null;
    this.exempt = exemptAddresses.length > 0 ? proxyaddr.compile([...exemptAddresses]) : null;
  }

  /** The client's address (normalized, see {@link normalizeAddress}), or null if unknown. */
  resolve(peer: string | undefined, headers: IncomingHttpHeaders): string | null {
    if (peer === undefined) return null;
    let addr = normalizeAddress(peer);
    if (addr === null || this.trusted === null || !this.trusted(addr, 0)) return addr;
    const hops = forwardedHops(headers);
    // Right to left: each hop is the peer of the one after it; stop at the first untrusted one.
    for (let i = hops.length - 1, n = 1; i >= 0; i--, n++) {
      const hop = normalizeAddress(hops[i]!);
      // A hop that is not an address (`unknown`, an obfuscated name): the last trusted proxy's
      // peer is all we know.
      if (hop === null) return addr;
      addr = hop;
      if (!this.trusted(addr, n)) return addr;
    }
    return addr;
  }

  /** Whether `addr` (as {@link resolve} returns it) is exempt from the per-address limits. */
  isExempt(addr: string): boolean {
    return this.exempt !== null && this.exempt(addr, 0);
  }
}

/**
 * An address as the limits count it: IPv4-mapped IPv6 as IPv4, IPv6 in its canonical form. Null
 * for anything that is not an IP address.
 */
export function normalizeAddress(raw: string): string | null {
  let s = raw.trim();
  // `[v6]:port`, `v4:port`, as Forwarded may give them.
  if (s.startsWith('[')) s = s.slice(1, s.indexOf(']') === -1 ? undefined : s.indexOf(']'));
  else if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(':'));
  if (!ipaddr.isValid(s)) return null;
  const a = ipaddr.process(s);
  return a.toString();
}

/**
 * The key an address is counted under: an IPv4 address itself, an IPv6 address's /64 (one host
 * usually holds a whole /64, and could otherwise take a fresh address for each request).
 */
export function addressKey(addr: string): string {
  if (!addr.includes(':')) return addr;
  try {
    const parts = ipaddr.IPv6.parse(addr).parts;
    return `${parts
      .slice(0, 4)
      .map((p) => p.toString(16))
      .join(':')}::/64`;
  } catch {
    return addr;
  }
}

/** The hops a request went through, leftmost first, from `Forwarded` or else `X-Forwarded-For`. */
export function forwardedHops(headers: IncomingHttpHeaders): string[] {
  const forwarded = headers.forwarded;
  if (forwarded !== undefined && forwarded !== '') {
    const hops: string[] = [];
    for (const element of forwarded.split(',')) {
      let forParam: string | undefined;
      for (const pair of element.split(';')) {
        const eq = pair.indexOf('=');
        if (eq === -1) continue;
        if (pair.slice(0, eq).trim().toLowerCase() !== 'for') continue;
        forParam = pair
          .slice(eq + 1)
          .trim()
          .replace(/^"(.*)"$/, '$1');
      }
      // An element without `for` still is a hop: its address is unknown.
      hops.push(forParam ?? 'unknown');
    }
    return hops;
  }
  const xff = headers['x-forwarded-for'];
  if (xff === undefined) return [];
  const text = Array.isArray(xff) ? xff.join(',') : xff;
  return text
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '');
}
