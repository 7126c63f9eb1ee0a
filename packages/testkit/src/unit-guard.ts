/**
 * Setup file of the unit tier: a unit test opens no socket and starts no process. Connecting,
 * listening and spawning throw here, so a test that needs a real server, broker or child process
 * fails loudly until it moves to an integration file (`*.test.ts`) or a browser one.
 */
import childProcess from 'node:child_process';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';

export const UNIT_TIER_RULE =
  'unit tests (*.unit.test.ts) open no socket and start no process; ' +
  'move this test to an integration file (*.test.ts)';

function refuse(what: string): never {
  throw new Error(`${what} refused: ${UNIT_TIER_RULE}`);
}

// Every TCP or IPC connection (net.connect, http.request, fetch, ioredis, nats) goes through
// Socket#connect; every listening server (http, net, Fastify) through Server#listen.
net.Socket.prototype.connect = function connect() {
  refuse('net.Socket#connect');
} as typeof net.Socket.prototype.connect;
net.Server.prototype.listen = function listen() {
  refuse('net.Server#listen');
} as typeof net.Server.prototype.listen;

// spawn, fork, exec and execFile all start their process through ChildProcess#spawn; the
// synchronous ones have their own entry points.
// (ChildProcess#spawn is internal: not in the type declarations.)
(childProcess.ChildProcess.prototype as unknown as { spawn: () => never }).spawn = () =>
  refuse('child_process spawn');
childProcess.spawnSync = () => refuse('child_process.spawnSync');
childProcess.execSync = () => refuse('child_process.execSync');
childProcess.execFileSync = () => refuse('child_process.execFileSync');
syncBuiltinESMExports();
