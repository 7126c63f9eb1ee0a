import type { RillServer } from '@rill/server';

export declare const EXAMPLES: Record<
  'random' | 'ticker' | 'chat',
  { entry: string; title: string }
>;
export declare const SYMBOLS: string[];
export declare function startExamples(o?: {
  names?: string[];
  port?: number;
  feeds?: boolean;
  dev?: boolean;
  tickMs?: number;
}): Promise<{ url: string; server: RillServer; close: () => Promise<void> }>;
