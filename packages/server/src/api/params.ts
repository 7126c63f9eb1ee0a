import { RillError } from '../model/errors.js';

/** Query parameters that may be repeated, each occurrence adding to a list. */
export const LIST_PARAMS: ReadonlySet<string> = new Set(['topics']);

/**
 * The error for a query string that repeats a scalar parameter (`?limit=1&limit=2`), or null.
 * Every parameter outside {@link LIST_PARAMS} takes one value on every route: a repeat is refused
 * rather than one of the values silently winning.
 */
export function queryError(query: unknown): RillError | null {
  if (query === null || typeof query !== 'object') return null;
  for (const [name, value] of Object.entries(query)) {
    if (Array.isArray(value) && !LIST_PARAMS.has(name)) {
      return new RillError(
        'invalid_parameter',
        `Query parameter ${JSON.stringify(name.slice(0, 64))} is given ${value.length} times: it takes one value`,
      );
    }
  }
  return null;
}
