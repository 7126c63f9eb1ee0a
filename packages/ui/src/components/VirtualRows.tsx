import { useEffect, useRef, useState, type ReactNode } from 'react';

interface Props<T> {
  items: T[];
  rowHeight: number;
  /** Height of the scrolling area, px. */
  height: number;
  /** One row; `style` positions it and must be applied to its outer element. */
  row: (item: T, index: number) => ReactNode;
  label: string;
}

/** Rows drawn beyond the visible ones, above and below, so that fast scrolling shows no gap. */
const OVERSCAN = 8;

/**
 * A list that renders only the rows in view (plus {@link OVERSCAN}): 10,000 rows cost what 40 do.
 * Arrow keys, Page Up/Down, Home and End move the focus from row to row, scrolling as needed; each
 * row's first link or button takes the focus.
 */
export function VirtualRows<T>({ items, rowHeight, height, row, label }: Props<T>) {
  const box = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const [focusIndex, setFocusIndex] = useState<number | null>(null);
  const first = Math.max(0, Math.floor(top / rowHeight) - OVERSCAN);
  const last = Math.min(items.length, Math.ceil((top + height) / rowHeight) + OVERSCAN);

  useEffect(() => {
    if (focusIndex === null) return;
    const el = box.current?.querySelector<HTMLElement>(
      `[data-index="${focusIndex}"] a, [data-index="${focusIndex}"] button`,
    );
    el?.focus({ preventScroll: true });
  }, [focusIndex, first, last]);

  const move = (to: number): void => {
    const i = Math.max(0, Math.min(items.length - 1, to));
    const b = box.current!;
    const y = i * rowHeight;
    if (y < b.scrollTop) b.scrollTop = y;
    else if (y + rowHeight > b.scrollTop + height) b.scrollTop = y + rowHeight - height;
    setFocusIndex(i);
  };

  return (
    <div
      ref={box}
      className="vrows"
      style={{ height }}
      role="rowgroup"
      aria-label={label}
      onScroll={(e) => setTop(e.currentTarget.scrollTop)}
      onKeyDown={(e) => {
        const at = Number(
          (e.target as HTMLElement).closest<HTMLElement>('[data-index]')?.dataset.index ?? -1,
        );
        if (at < 0) return;
        const page = Math.max(1, Math.floor(height / rowHeight) - 1);
        const to =
          e.key === 'ArrowDown'
            ? at + 1
            : e.key === 'ArrowUp'
              ? at - 1
              : e.key === 'PageDown'
                ? at + page
                : e.key === 'PageUp'
                  ? at - page
                  : e.key === 'Home'
                    ? 0
                    : e.key === 'End'
                      ? items.length - 1
                      : null;
        if (to === null) return;
        e.preventDefault();
        move(to);
      }}
    >
      <div style={{ height: items.length * rowHeight, position: 'relative' }}>
        {items.slice(first, last).map((item, k) => {
          const i = first + k;
          return (
            <div
              key={i}
              data-index={i}
              role="row"
              aria-rowindex={i + 2}
              className="vrow"
              style={{ top: i * rowHeight, height: rowHeight }}
            >
              {row(item, i)}
            </div>
          );
        })}
      </div>
    </div>
  );
}
