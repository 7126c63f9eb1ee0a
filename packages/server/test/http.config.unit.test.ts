/** The `http` settings: read from the environment, checked against each other. */
import { describe, expect, it } from 'vitest';
import { ConfigError, configFromEnv, resolveConfig } from '../src/config.js';

describe('http config', () => {
  it('reads allowedHosts from the environment as a comma-separated list, and rejects junk', () => {
    const cfg = resolveConfig(
      configFromEnv({ RILL_HTTP__ALLOWED_HOSTS: 'rill.example.com, .corp.example' }),
    );
    expect(cfg.http.allowedHosts).toEqual(['rill.example.com', '.corp.example']);
    expect(() => resolveConfig({ http: { allowedHosts: ['http://x.example/'] } })).toThrow(
      ConfigError,
    );
  });

  it('refuses a headersTimeout above requestTimeout', () => {
    expect(() => resolveConfig({ http: { requestTimeout: '1s', headersTimeout: '2s' } })).toThrow(
      /headersTimeout/,
    );
    expect(resolveConfig({ http: { requestTimeout: 0, headersTimeout: '2s' } }).http).toMatchObject(
      { requestTimeout: 0, headersTimeout: 2000 },
    );
  });
});
