/**
 * A connection URL fit for a log line: a password (`user:password@`) is replaced, and so is a
 * user part without one (`nats://TOKEN@host`, `redis://PASSWORD@host`), which may be a secret.
 * Works on comma-separated lists of URLs too.
 */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/,]*)@/g, (_m, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return colon === -1 ? '//[redacted]@' : `//${userinfo.slice(0, colon)}:[redacted]@`;
  });
}

/**
 * A request URL fit for a log line: the value of every `access_token` query parameter (a
 * credential, carried there by clients that cannot set headers) replaced with `[redacted]`. Names
 * are compared decoded, as the query parser reads them (`access%5Ftoken` is the same parameter).
 */
export function redactAccessToken(url: string): string {
  const q = url.indexOf('?');
  if (q === -1 || !/access|%/i.test(url.slice(q))) return url;
  const parts = url.slice(q + 1).split('&');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    const eq = part.indexOf('=');
    const name = eq === -1 ? part : part.slice(0, eq);
    if (decodeName(name) === 'access_token') parts[i] = `${name}=[redacted]`;
  }
  return `${url.slice(0, q)}?${parts.join('&')}`;
}

function decodeName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}
