/**
 * Ids of requests and connections: `req-` and a counter in base 36, unique within the process. The
 * same id is a request's `reqId` on every log line about it (Fastify's `genReqId`), a WebSocket
 * connection's, and the id a stream's end line and the open streams are listed under. A client's
 * own `X-Request-Id` is not taken: ids must stay unique, and it would be one more thing to bound.
 */
let last = 0;

export function nextRequestId(): string {
  last = last === Number.MAX_SAFE_INTEGER ? 1 : last + 1;
  return `req-${last.toString(36)}`;
}
