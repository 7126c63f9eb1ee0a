/**
 * Ids of requests and connections: `req-` and a counter in base 36, unique within the process
 * (in a worker of `rill serve --workers`, `req-w<worker>-` and the counter: unique in the node). The
 * same id is a request's `reqId` on every log line about it (Fastify's `genReqId`), a WebSocket
 * connection's, and the id a stream's end line and the open streams are listed under. A client's
 * own `X-Request-Id` is not taken: ids must stay unique, and it would be one more thing to bound.
 */
let last = 0;
let prefix = 'req-';

/** In a worker process: its id goes into every id from now on. */
export function setRequestIdWorker(worker: number): void {
  prefix = `req-w${worker}-`;
}

export function nextRequestId(): string {
  last = last === Number.MAX_SAFE_INTEGER ? 1 : last + 1;
  return `${prefix}${last.toString(36)}`;
}
