import { isIP } from 'node:net';
import { RillError } from '../model/errors.js';
import { hostName, normalise } from '../model/host.js';

/**
 * The `Host` check that stops DNS rebinding: a page on `evil.example` whose name is made to
 * resolve to 127.0.0.1 reaches a loopback Rill as a same-origin page, but its requests still
 * carry `Host: evil.example`. Only names this server answers for are served.
 *
 * Always allowed: `localhost`, any IP address (a name can be rebound, an address cannot: a browser
 * sends an address as `Host` only when its page's URL named that address), and the bound `host`.
 * `http.allowedHosts` adds names (`rill.example.com`), whole domains (`.example.com`: the name and
 * every subdomain), or `*` for any `Host` (a proxy in front that checks it). Ports are ignored.
 */
export class HostPolicy {
  private readonly any: boolean;
  private readonly names: Set<string>;
  private readonly domains: string[];
  /** The last Host allowed: nearly every request carries the same one. */
  private lastAllowed: string | undefined;

  constructor(allowed: readonly string[], boundHost: string) {
    this.any = allowed.includes('*');
    this.names = new Set(['localhost', normalise(boundHost)]);
    this.domains = [];
    for (const a of allowed) {
      const n = normalise(a);
      if (n.startsWith('.')) this.domains.push(n);
      else this.names.add(n);
    }
  }

  /**
   * Null when a request with this `Host` (and HTTP version) may be served, else the error that
   * answers it. No `Host` is allowed in HTTP/1.0 only (no browser sends such a request); HTTP/1.1
   * requires it.
   */
  check(host: string | undefined, httpVersion: string): RillError | null {
    if (host === undefined || host === '') {
      if (httpVersion === '1.0') return null;
      return new RillError('bad_request', 'An HTTP/1.1 request needs a Host header');
    }
    if (this.any || host === this.lastAllowed) return null;
    const name = hostName(host);
    if (name !== null && this.allows(name)) {
      this.lastAllowed = host;
      return null;
    }
    return new RillError(
      'host_not_allowed',
      `Host ${host.slice(0, 200)} is not served here (see http.allowedHosts)`,
    );
  }

  private allows(name: string): boolean {
    if (this.names.has(name) || isIP(name) !== 0) return true;
    return this.domains.some((d) => name.endsWith(d) || name === d.slice(1));
  }
}
