/**
 * @rill/bench public API: the load generator behind `rill bench` and `rill-bench`.
 */
export { runBench } from './run.js';
export type { BenchOptions, BenchResult, BenchTarget, BenchTransport, StepResult } from './run.js';
export { configureBench, registerBench, formatResult, parseRates } from './cli.js';
export { MarkerScanner, benchPayload, dechunker, paddingFor } from './scan.js';
export { runStorm, formatStorm, loopbackAddresses } from './storm.js';
export type { StormOptions, StormResult } from './storm.js';
