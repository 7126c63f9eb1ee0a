/**
 * `redactAccessToken`: the URL a log line shows never holds an `access_token` value, however the
 * parameter is written (first or later, percent-encoded name, empty, repeated), and other
 * parameters and the path stay as they were.
 */
import { describe, expect, it } from 'vitest';
import { redactAccessToken } from '../src/model/redact.js';

describe('redactAccessToken', () => {
  it.each([
    ['/v1/stream?access_token=eyJ.a.b', '/v1/stream?access_token=[redacted]'],
    [
      '/v1/stream?topics=a,b&access_token=rill_xyz&from=earliest',
      '/v1/stream?topics=a,b&access_token=[redacted]&from=earliest',
    ],
    ['/v1/ws?access%5Ftoken=secret', '/v1/ws?access%5Ftoken=[redacted]'],
    ['/v1/ws?access_token=', '/v1/ws?access_token=[redacted]'],
    ['/v1/ws?access_token', '/v1/ws?access_token=[redacted]'],
    ['/x?access_token=a&access_token=b', '/x?access_token=[redacted]&access_token=[redacted]'],
  ])('%s', (url, shown) => {
    expect(redactAccessToken(url)).toBe(shown);
  });

  it('leaves URLs without the parameter alone, including look-alikes', () => {
    for (const url of [
      '/v1/topics/access_token/events',
      '/v1/stream?topics=a&my_access_token=1',
      '/v1/stream?topics=%E2%9C%93',
      '/healthz',
    ]) {
      expect(redactAccessToken(url)).toBe(url);
    }
  });
});
