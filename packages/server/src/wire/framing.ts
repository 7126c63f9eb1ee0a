import type { ResetNotice } from '../fanout/sink.js';
import type { RillError } from '../model/errors.js';
import type { EphemeralEvent, RillEvent } from '../model/event.js';

/** How a streaming HTTP transport frames what the hub hands it. */
export interface Framing {
  contentType: string;
  /** Bytes sent right after the headers. */
  preamble: string;
  event(ev: RillEvent, id: string | null): string;
  reset(n: ResetNotice, id: string): string;
  /** An ephemeral event: no id or cursor. */
  ephemeral(ev: EphemeralEvent): string;
  error(err: RillError): string;
  /** Bytes that keep an idle stream alive. */
  heartbeat: string;
}
