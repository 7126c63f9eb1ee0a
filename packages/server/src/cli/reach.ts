import { networkCause, type RillError } from '@rill/client';

/** Words for the system errors a connection attempt ends with. */
const CAUSES: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused: is rill serve running there?',
  ECONNRESET: 'connection reset by the server or a proxy',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'the host name could not be resolved (DNS)',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  EPROTO: 'TLS handshake failed (an http:// server behind an https:// URL?)',
};

/**
 * The cause of a `connection_failed` error in words (`connection refused: …`), from the system
 * error under it; `url` names a port fetch refuses to use.
 */
export function unreachableCause(err: RillError, url: string): string {
  const cause = networkCause(err.cause ?? err);
  if (CAUSES[cause]) return CAUSES[cause];
  if (/bad port/.test(cause)) {
    let port = '';
    try {
      port = new URL(url).port;
    } catch {
      // the URL did parse once (the request was made); no port to name otherwise
    }
    return `port ${port || '?'} is one fetch refuses to connect to; use another port`;
  }
  if (/certificate|self.signed|CERT_/i.test(cause)) return `TLS certificate not trusted (${cause})`;
  return cause.replace(/^fetch failed: /, '');
}

/** `cannot reach http://127.0.0.1:8080 (connection refused: …)`. */
export function cannotReach(url: string, err: RillError): string {
  return `cannot reach ${url} (${unreachableCause(err, url)})`;
}
