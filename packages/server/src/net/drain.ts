import type { EventEmitter } from 'node:events';

/**
 * Resolves once a stream sink may write again: its destination (a socket, a response or an
 * HTTP/2 stream) drained or closed, or its gzip stream drained. The HTTP/1.1 and HTTP/2 stream
 * sinks both wait this way.
 */
export function drainOrClose(target: EventEmitter, gz: EventEmitter | null): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      target.off('drain', done);
      target.off('close', done);
      gz?.off('drain', done);
      resolve();
    };
    target.on('drain', done);
    target.on('close', done);
    gz?.on('drain', done);
  });
}
