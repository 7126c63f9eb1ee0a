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
