import { useEffect, useRef, useState } from 'react';
import type {
  ConnectionState,
  RillError,
  RillEvent,
  RillNotice,
  StartFrom,
  TransportName,
} from '@rill/client';
import { useRillClient } from './provider.js';

/** Options of {@link useStream}. */
export interface UseStreamOptions<T> {
  from?: StartFrom;
  since?: number | string;
  transport?: TransportName;
  /** Events kept in `events` (oldest dropped first). Default 100. */
  maxEvents?: number;
  /** False: no subscription (status `idle`). Default true. */
  enabled?: boolean;
  /** Called for every event, in order, exactly once (not re-run on re-render). */
  onEvent?: (event: RillEvent<T>) => void;
  onNotice?: (notice: RillNotice) => void;
}

/** What {@link useStream} returns. */
export interface StreamState<T> {
  /** The latest events, oldest first, at most `maxEvents`. */
  events: Array<RillEvent<T>>;
  /** The latest event. */
  last: RillEvent<T> | undefined;
  status: ConnectionState | 'idle';
  /** Why the connection is not open (while reconnecting), or why it closed. */
  error: RillError | undefined;
}

const IDLE: StreamState<never> = { events: [], last: undefined, status: 'idle', error: undefined };

/**
 * Subscribes to a topic (or topics and patterns) for as long as the component is mounted, through
 * the provider's shared client. Re-subscribes when the topic or start options change, closes the
 * subscription on unmount (StrictMode's mount–unmount–mount leaves exactly one), and keeps a
 * bounded buffer of the latest events. Events arriving in the same tick are rendered once.
 *
 * @example
 * ```tsx
 * const { last, status } = useStream<number>('demo.random');
 * return <p>{status === 'open' ? last?.data : '…'}</p>;
 * ```
 */
export function useStream<T = unknown>(
  topic: string | readonly string[],
  options: UseStreamOptions<T> = {},
): StreamState<T> {
  const client = useRillClient();
  const { from, since, transport, maxEvents = 100, enabled = true } = options;
  const key = typeof topic === 'string' ? topic : topic.join(',');
  const [state, setState] = useState<StreamState<T>>(IDLE);
  const callbacks = useRef(options);
  callbacks.current = options;

  useEffect(() => {
    if (!enabled) {
      setState(IDLE);
      return;
    }
    let active = true;
    let pending: Array<RillEvent<T>> = [];
    let scheduled = false;
    const flush = (): void => {
      scheduled = false;
      if (!active || pending.length === 0) return;
      const batch = pending;
      pending = [];
      setState((s) => {
        const all =
          s.events.length + batch.length > maxEvents
            ? [...s.events, ...batch].slice(-maxEvents)
            : [...s.events, ...batch];
        return { ...s, events: all, last: batch[batch.length - 1] };
      });
    };
    setState({ events: [], last: undefined, status: 'connecting', error: undefined });
    const sub = client.subscribe<T>(key.split(','), {
      ...(from !== undefined ? { from } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(transport !== undefined ? { transport } : {}),
      onEvent: (ev) => {
        callbacks.current.onEvent?.(ev);
        pending.push(ev);
        if (pending.length > maxEvents) pending.splice(0, pending.length - maxEvents);
        if (!scheduled) {
          scheduled = true;
          queueMicrotask(flush);
        }
      },
      onNotice: (n) => callbacks.current.onNotice?.(n),
      onState: (c) => {
        if (!active) return;
        flush();
        setState((s) => ({
          ...s,
          status: c.state,
          error: c.state === 'open' ? undefined : c.error,
        }));
      },
    });
    return () => {
      active = false;
      sub.close('unmounted');
    };
  }, [client, key, from, since, transport, maxEvents, enabled]);

  return state;
}
