import { describe, expect, it } from 'vitest';
import { Feed } from '../src/engine/common.js';
import { Watchers, type TopicWatch } from '../src/engine/watchers.js';
import type { RillEvent } from '../src/model/event.js';

interface Probe extends TopicWatch {
  /** Which start of any topic created it: tells a restarted watch from the first. */
  readonly n: number;
}

/**
 * A Watchers over a real Feed whose hooks record what they are asked to do, as an engine's
 * broker subscription would see it.
 */
function setup() {
  const feed = new Feed();
  const calls: string[] = [];
  const state = { closed: false, failStart: undefined as Error | undefined, created: 0 };
  /** What `start` found registered for its topic when it ran. */
  const registeredAtStart: (Probe | undefined)[] = [];
  const watchers: Watchers<Probe> = new Watchers<Probe>(
    feed,
    {
      create: (topic) => ({ topic, active: true, n: ++state.created }),
      start: (w) => {
        calls.push(`start ${w.topic}#${w.n}`);
        registeredAtStart.push(watchers.get(w.topic));
        if (state.failStart !== undefined) throw state.failStart;
      },
      stop: (w, closing) => {
        calls.push(`stop ${w.topic}#${w.n}${closing ? ' closing' : ''}`);
        // The base marks the watch inactive before the engine's stop runs.
        if (w.active) calls.push('stopped while active');
      },
    },
    () => state.closed,
  );
  return { feed, watchers, calls, state, registeredAtStart };
}

function event(topic: string, seq: number): RillEvent {
  return { topic, seq, epoch: 'e', time: 0, data: String(seq) };
}

/** A listener that records the seqs it was handed. */
function recorder(): { seqs: number[]; fn: (events: readonly RillEvent[]) => void } {
  const seqs: number[] = [];
  return { seqs, fn: (events) => seqs.push(...events.map((e) => e.seq)) };
}

describe('Watchers (the shared engines watch lifecycle)', () => {
  it('starts a topic once, for its first listener, and the feed delivers to every listener', () => {
    const { feed, watchers, calls } = setup();
    const a1 = recorder();
    const a2 = recorder();
    watchers.watch('a', a1.fn);
    watchers.watch('a', a2.fn);
    watchers.watch('b', () => {});
    expect(calls).toEqual(['start a#1', 'start b#2']);
    expect(watchers.get('a')).toMatchObject({ topic: 'a', active: true, n: 1 });
    expect([...watchers.values()].map((w) => w.topic)).toEqual(['a', 'b']);

    feed.events('a', [event('a', 1)]);
    expect(a1.seqs).toEqual([1]);
    expect(a2.seqs).toEqual([1]);
  });

  it('registers the watch before start runs, so start (and what it triggers) finds it', () => {
    const { watchers, registeredAtStart } = setup();
    watchers.watch('a', () => {});
    expect(registeredAtStart).toHaveLength(1);
    expect(registeredAtStart[0]).toBe(watchers.get('a'));
  });

  it('removes a listener without stopping the topic while another listens; stops on the last', () => {
    const { feed, watchers, calls } = setup();
    const a1 = recorder();
    const a2 = recorder();
    const stop1 = watchers.watch('a', a1.fn);
    const stop2 = watchers.watch('a', a2.fn);
    const w = watchers.get('a');

    stop1();
    expect(calls).toEqual(['start a#1']);
    expect(w?.active).toBe(true);
    feed.events('a', [event('a', 1)]);
    expect(a1.seqs).toEqual([]);
    expect(a2.seqs).toEqual([1]);

    stop2();
    expect(calls).toEqual(['start a#1', 'stop a#1']);
    expect(w?.active).toBe(false);
    expect(watchers.get('a')).toBeUndefined();
    expect(feed.hasWatchers('a')).toBe(false);
    feed.events('a', [event('a', 2)]);
    expect(a2.seqs).toEqual([1]);
  });

  it('starts a topic afresh when it is watched again after its last listener left', () => {
    const { watchers, calls } = setup();
    const stop = watchers.watch('a', () => {});
    stop();
    watchers.watch('a', () => {});
    expect(calls).toEqual(['start a#1', 'stop a#1', 'start a#2']);
    expect(watchers.get('a')?.n).toBe(2);
  });

  it('ignores a stop function called again: the topic stays watched for a later listener', () => {
    const { feed, watchers, calls } = setup();
    const stopOld = watchers.watch('a', () => {});
    stopOld();
    const later = recorder();
    watchers.watch('a', later.fn);
    stopOld();
    stopOld();
    expect(calls).toEqual(['start a#1', 'stop a#1', 'start a#2']);
    expect(watchers.get('a')?.active).toBe(true);
    feed.events('a', [event('a', 7)]);
    expect(later.seqs).toEqual([7]);
  });

  it('undoes a watch whose start throws: the error reaches the caller, no listener stays, the next watch starts again', () => {
    const { feed, watchers, calls, state, registeredAtStart } = setup();
    const failed = recorder();
    const boom = new Error('broker refused');
    state.failStart = boom;
    expect(() => watchers.watch('a', failed.fn)).toThrow(boom);
    const dropped = registeredAtStart[0];
    expect(dropped?.active).toBe(false);
    expect(watchers.get('a')).toBeUndefined();
    expect(feed.hasWatchers('a')).toBe(false);
    // A start that failed is not stopped: it undid what it did itself.
    expect(calls).toEqual(['start a#1']);
    feed.events('a', [event('a', 1)]);
    expect(failed.seqs).toEqual([]);

    state.failStart = undefined;
    const next = recorder();
    const stop = watchers.watch('a', next.fn);
    expect(calls).toEqual(['start a#1', 'start a#2']);
    feed.events('a', [event('a', 2)]);
    expect(next.seqs).toEqual([2]);
    expect(failed.seqs).toEqual([]);
    stop();
    expect(calls).toEqual(['start a#1', 'start a#2', 'stop a#2']);
  });

  it('a failed start of one topic leaves the other topics watched', () => {
    const { watchers, calls, state } = setup();
    watchers.watch('a', () => {});
    state.failStart = new Error('no');
    expect(() => watchers.watch('b', () => {})).toThrow('no');
    expect(watchers.get('a')?.active).toBe(true);
    expect([...watchers.values()].map((w) => w.topic)).toEqual(['a']);
    expect(calls).toEqual(['start a#1', 'start b#2']);
  });

  it('is a no-op once the engine is closed', () => {
    const { feed, watchers, calls, state } = setup();
    state.closed = true;
    const stop = watchers.watch('a', () => {});
    expect(calls).toEqual([]);
    expect(feed.hasWatchers('a')).toBe(false);
    stop();
    expect(calls).toEqual([]);
  });

  it('stopAll stops every watch as closing, keeps the listeners for the engine to clear, and a later stop function does nothing', () => {
    const { feed, watchers, calls } = setup();
    const stopA = watchers.watch('a', () => {});
    watchers.watch('b', () => {});
    watchers.stopAll();
    expect(calls).toEqual(['start a#1', 'start b#2', 'stop a#1 closing', 'stop b#2 closing']);
    expect([...watchers.values()]).toEqual([]);
    expect(feed.hasWatchers('a')).toBe(true);
    stopA();
    expect(calls).toHaveLength(4);
  });
});
