/** The storm checker's pieces: what an SSE frame is, and how a counter lands on a connection. */
import { describe, expect, it } from 'vitest';
import { checkCounter, localPort, readFrame } from '../src/stormworker.js';
import { processTree } from '../src/proc.js';
import { parseAddresses } from '../src/stormcli.js';
import { loopbackAddresses } from '../src/storm.js';

describe('readFrame', () => {
  it('tells heartbeats, events, resets apart', () => {
    expect(readFrame(':')).toEqual({ heartbeat: true, reset: false });
    expect(readFrame(': heartbeat')).toEqual({ heartbeat: true, reset: false });
    expect(readFrame('id: abc\ndata: {"topic":"t","data":{"sn":7}}')).toEqual({
      heartbeat: false,
      id: 'abc',
      reset: false,
      n: 7,
    });
    expect(readFrame('event: x\nid: q1\ndata: {"sn":12}')).toMatchObject({ id: 'q1', n: 12 });
    // A reset carries an id to resume from, and no counter even if its data mentions one.
    expect(readFrame('id: r9\nevent: reset\ndata: {"reason":"retention","sn":3}')).toEqual({
      heartbeat: false,
      id: 'r9',
      reset: true,
    });
    expect(readFrame('retry: 1000')).toEqual({ heartbeat: false, reset: false });
  });
});

describe('checkCounter', () => {
  it('counts a jump as a gap and anything not above the last as a duplicate', () => {
    expect(checkCounter(0, 1)).toEqual({ last: 1, gap: 0, dup: false });
    expect(checkCounter(1, 4)).toEqual({ last: 4, gap: 2, dup: false });
    expect(checkCounter(4, 4)).toEqual({ last: 4, gap: 0, dup: true });
    expect(checkCounter(4, 2)).toEqual({ last: 4, gap: 0, dup: true });
  });
});

describe('localPort', () => {
  it('gives every connection its own port per address, and other ports to the reconnect', () => {
    const seen = new Set<string>();
    for (let round = 0; round < 2; round++) {
      for (let g = 0; g < 1000; g++) seen.add(`${g % 4}:${localPort(g, round, 4, 1000, 10_000)}`);
    }
    expect(seen.size).toBe(2000);
    expect(localPort(5, 0, 4, 1000, 0)).toBe(0);
  });
});

describe('source addresses and process trees', () => {
  it('parses counts and lists of loopback addresses only', () => {
    expect(loopbackAddresses(3)).toEqual(['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    expect(parseAddresses('2')).toBe(2);
    expect(parseAddresses('127.0.0.5,127.0.1.9')).toEqual(['127.0.0.5', '127.0.1.9']);
    expect(() => parseAddresses('10.0.0.1')).toThrow(/127/);
  });

  it('finds this process in its own tree', () => {
    expect(processTree([process.pid])).toContain(process.pid);
  });
});
