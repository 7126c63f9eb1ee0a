import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { lazyChildLoggerFactory } from '../src/api/lazy-logger.js';

function capture(level: string): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level }, out), lines };
}

describe('lazy request logger', () => {
  it('writes enabled lines with the request bindings, and nothing below the level', () => {
    const { logger, lines } = capture('warn');
    const log = lazyChildLoggerFactory(logger, { reqId: 'req-7' }, {});
    log.info('not written');
    log.debug({ a: 1 }, 'not written either');
    expect((log as unknown as { real?: unknown }).real).toBeUndefined();
    log.warn({ route: '/x' }, 'slow');
    log.error(new Error('boom'));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ level: 40, reqId: 'req-7', route: '/x', msg: 'slow' });
    expect(lines[1]).toMatchObject({ level: 50, reqId: 'req-7', err: { message: 'boom' } });
  });

  it('reports the level, makes grandchildren with every binding, and honours route options', () => {
    const { logger, lines } = capture('info');
    const log = lazyChildLoggerFactory(logger, { reqId: 'r1' }, {});
    expect(log.level).toBe('info');
    expect(log.isLevelEnabled('debug')).toBe(false);
    log.child({ sub: 's1' }).info('hello');
    expect(lines[0]).toMatchObject({ reqId: 'r1', sub: 's1', msg: 'hello' });
    const routed = lazyChildLoggerFactory(logger, { reqId: 'r2' }, { level: 'debug' });
    routed.debug('route level');
    expect(lines[1]).toMatchObject({ reqId: 'r2', msg: 'route level', level: 20 });
  });
});
