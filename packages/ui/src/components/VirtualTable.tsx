import type { ReactNode } from 'react';
import { VirtualRows } from './VirtualRows';

export interface Column {
  /** The header's text (and its React key). */
  label: string;
  /** Right-aligned (numbers). */
  num?: boolean;
  /** The column the rows are sorted by, and how. */
  sort?: 'ascending' | 'descending';
  /** What the header shows instead of `label` (a sort button). */
  head?: ReactNode;
}

interface Props<T> {
  /** The accessible names of the table and of its scrolling rows. */
  label: string;
  rowsLabel: string;
  /** Extra class of the table (its column widths). */
  className: string;
  columns: Column[];
  items: T[];
  rowHeight: number;
  /** The least height of the scrolling area, px; it grows with the rows up to the window's. */
  minHeight: number;
  /** Shown instead of the rows when there are none (null: none yet, still loading). */
  empty: ReactNode | null;
  /** One row's cells. */
  row: (item: T, index: number) => ReactNode;
}

/**
 * A table of any number of rows: a header row and {@link VirtualRows} below it (only the rows in
 * view are drawn; arrow keys, Page Up/Down, Home and End move from row to row), or a message when
 * there is no row. The Topics and Connections views are both one.
 */
export function VirtualTable<T>(p: Props<T>) {
  const height = Math.max(p.minHeight, Math.min(p.items.length * p.rowHeight, innerHeight - 260));
  return (
    <div
      className={`vtable ${p.className}`}
      role="table"
      aria-label={p.label}
      aria-rowcount={p.items.length + 1}
    >
      <div className="vhead" role="row" aria-rowindex={1}>
        {p.columns.map((c, i) => (
          <div key={i} role="columnheader" className={c.num ? 'num' : undefined} aria-sort={c.sort}>
            {c.head ?? c.label}
          </div>
        ))}
      </div>
      {p.empty !== null && p.items.length === 0 ? (
        <p className="muted empty">{p.empty}</p>
      ) : (
        <VirtualRows
          items={p.items}
          rowHeight={p.rowHeight}
          height={height}
          label={p.rowsLabel}
          row={p.row}
        />
      )}
    </div>
  );
}
