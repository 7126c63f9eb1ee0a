import { useEffect, useState } from 'react';
import type { PresenceMember } from '@rill/client';
import { useRillClient } from './provider.js';

/** What {@link usePresence} returns. */
export interface PresenceState {
  /** Who is on the topic, in `sub` order (the first 1000; anonymous subscribers are not listed). */
  members: PresenceMember[];
  /** False until the first list arrived. */
  loaded: boolean;
}

/** Members one load lists at most. */
const LIST_LIMIT = 1000;

/**
 * Who is on a topic, kept current: a subscription to the topic with its joins and leaves (which
 * also makes this client present), and the list of members once it is open. A join or leave
 * that arrives while the list is loading wins over what the list says about that member.
 *
 * @example
 * ```tsx
 * const { members } = usePresence('chat.room-1');
 * return <p>here: {members.map((m) => m.sub).join(', ')}</p>;
 * ```
 */
export function usePresence(topic: string, options: { enabled?: boolean } = {}): PresenceState {
  const client = useRillClient();
  const enabled = options.enabled ?? true;
  const [state, setState] = useState<PresenceState>({ members: [], loaded: false });

  useEffect(() => {
    if (!enabled) {
      setState({ members: [], loaded: false });
      return;
    }
    let active = true;
    const members = new Map<string, PresenceMember>();
    /** Subs a join or leave spoke of since the list was asked for: the list is older news. */
    let touched: Set<string> | null = null;
    const publish = (loaded: boolean): void => {
      if (!active) return;
      const list = [...members.values()].sort((a, b) => (a.sub < b.sub ? -1 : 1));
      setState((s) => ({ members: list, loaded: loaded || s.loaded }));
    };
    const load = (): void => {
      touched = new Set();
      client.presence(topic, { limit: LIST_LIMIT }).then(
        (page) => {
          const fresh = touched ?? new Set<string>();
          touched = null;
          for (const sub of [...members.keys()]) if (!fresh.has(sub)) members.delete(sub);
          for (const m of page.members) if (!fresh.has(m.sub)) members.set(m.sub, m);
          publish(true);
        },
        () => {
          touched = null;
        },
      );
    };
    setState({ members: [], loaded: false });
    const sub = client.subscribe([topic], {
      presence: true,
      onPresence: (c) => {
        touched?.add(c.sub);
        if (c.kind === 'join') {
          const had = members.get(c.sub);
          members.set(c.sub, {
            sub: c.sub,
            ...(c.info ? { info: c.info } : {}),
            connections: had?.connections ?? 1,
            since: had?.since ?? Date.now(),
          });
        } else members.delete(c.sub);
        publish(false);
      },
      // (Re)connected: the list may have changed while the stream was away.
      onState: (c) => {
        if (c.state === 'open') load();
      },
    });
    return () => {
      active = false;
      sub.close('unmounted');
    };
  }, [client, topic, enabled]);

  return state;
}
