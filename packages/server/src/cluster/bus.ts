import { randomUUID } from 'node:crypto';

/**
 * Commands one node sends every other node of a cluster (redis and nats engines), through the
 * broker: fire and forget, each node acts on its own connections. Today one: end every stream of
 * a subject (`DELETE /v1/connections?sub=`).
 */
export interface ClusterCommand {
  op: 'disconnect';
  /** The subject (a JWT's `sub`, or an API key's configured `sub`). */
  sub: string;
}

/** Longest subject a command carries. */
export const MAX_COMMAND_SUB_LENGTH = 1024;

export interface ClusterBus {
  /** This node's id: its own commands come back to it and are ignored. */
  readonly node: string;
  /** Resolves once the other nodes' commands are received here; rejects after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void>;
  /** Sends `cmd` to every other node; rejects when the broker did not take it. */
  send(cmd: ClusterCommand): Promise<void>;
  /** Calls `listener` with every other node's command. */
  onCommand(listener: (cmd: ClusterCommand, from: string) => void): void;
  close(): Promise<void>;
}

/** A new node id. */
export function newBusNode(): string {
  return randomUUID();
}

/** The wire form: `{"n":node,"op":"disconnect","sub":…}`. */
export function encodeCommand(node: string, cmd: ClusterCommand): string {
  return JSON.stringify({ n: node, op: cmd.op, sub: cmd.sub });
}

/** A command and its sender, or null for anything else (another version's, garbage). */
export function decodeCommand(text: string): { from: string; cmd: ClusterCommand } | null {
  try {
    const m = JSON.parse(text) as { n?: unknown; op?: unknown; sub?: unknown };
    if (typeof m.n !== 'string' || m.op !== 'disconnect') return null;
    if (typeof m.sub !== 'string' || m.sub === '' || m.sub.length > MAX_COMMAND_SUB_LENGTH) {
      return null;
    }
    return { from: m.n, cmd: { op: 'disconnect', sub: m.sub } };
  } catch {
    return null;
  }
}

/** Calls the listeners with the commands of other nodes. */
export class Listeners {
  private readonly list: ((cmd: ClusterCommand, from: string) => void)[] = [];

  constructor(private readonly node: string) {}

  add(listener: (cmd: ClusterCommand, from: string) => void): void {
    this.list.push(listener);
  }

  receive(text: string): void {
    const m = decodeCommand(text);
    if (m === null || m.from === this.node) return;
    for (const l of this.list) l(m.cmd, m.from);
  }
}

/** Waits for `p` at most `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
