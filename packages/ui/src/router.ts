/** Hash routes (`#/topics`, `#/topic/prices.eu`): the server serves one page, whatever the view. */
import { useSyncExternalStore } from 'react';

export type Route =
  | { view: 'overview' }
  | { view: 'topics'; pattern?: string }
  | { view: 'topic'; topic: string }
  | { view: 'connections' }
  | { view: 'limits' };

export function parseRoute(hash: string): Route {
  const [path = '', query = ''] = hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/');
  const q = new URLSearchParams(query);
  switch (parts[0]) {
    case 'topics':
      return q.get('pattern') ? { view: 'topics', pattern: q.get('pattern')! } : { view: 'topics' };
    case 'topic':
      return parts[1] ? { view: 'topic', topic: decodeURIComponent(parts[1]) } : { view: 'topics' };
    case 'connections':
      return { view: 'connections' };
    case 'limits':
      return { view: 'limits' };
    default:
      return { view: 'overview' };
  }
}

export function href(r: Route): string {
  switch (r.view) {
    case 'topic':
      return `#/topic/${encodeURIComponent(r.topic)}`;
    case 'topics':
      return r.pattern ? `#/topics?pattern=${encodeURIComponent(r.pattern)}` : '#/topics';
    default:
      return `#/${r.view}`;
  }
}

function subscribe(fn: () => void): () => void {
  window.addEventListener('hashchange', fn);
  return () => window.removeEventListener('hashchange', fn);
}

export function useRoute(): Route {
  const hash = useSyncExternalStore(subscribe, () => location.hash);
  return parseRoute(hash);
}
