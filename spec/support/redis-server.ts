/**
 * A private `redis-server` on a free loopback port, for the tests that kill or
 * restart Redis (ARCHITECTURE §8). Never the shared one on 6379.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RedisServerOptions {
  /** AOF with `appendfsync always`: every acknowledged write survives SIGKILL. */
  appendonly?: boolean;
}

export interface RedisServer {
  port: number;
  url: string;
  /** Shuts the server down (SIGTERM) and removes its directory. */
  stop(): Promise<void>;
  /** Kills the process (SIGKILL by default) without cleaning up, as a crash would. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and directory (kills it first if it runs). */
  restart(): Promise<void>;
  /** Freezes the process (SIGSTOP): connections stay open and nothing answers, as in a hang. */
  pause(): void;
  /** Lets a paused process run again (SIGCONT). */
  resume(): void;
}

const START_TIMEOUT_MS = 10_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves true when the server answers PING with PONG (not LOADING). */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let buffer = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.on('data', (chunk) => {
      buffer += chunk.toString();
      if (buffer.includes('\r\n')) done(buffer.startsWith('+PONG'));
    });
    socket.once('connect', () => socket.write('PING\r\n'));
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'sg-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir];
  if (options.appendonly) args.push('--appendonly', 'yes', '--appendfsync', 'always');
  let child: ChildProcess | undefined;
  let output = '';

  const launch = async (): Promise<void> => {
    output = '';
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    proc.stdout?.on('data', (c: Buffer) => { output = (output + c.toString()).slice(-4000); });
    proc.stderr?.on('data', (c: Buffer) => { output = (output + c.toString()).slice(-4000); });
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const failed = await Promise.race([spawnError, sleep(0).then(() => undefined)]);
      if (failed) throw new Error(`cannot start redis-server: ${failed.message}`);
      if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode}):\n${output}`);
      if (await answersPing(port)) return;
      await sleep(20);
    }
    proc.kill('SIGKILL');
    throw new Error(`redis-server did not answer on port ${port} within ${START_TIMEOUT_MS} ms:\n${output}`);
  };

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const proc = child;
    if (!proc) return;
    child = undefined;
    const gone = exited(proc);
    proc.kill(signal);
    if (signal !== 'SIGKILL') {
      // A graceful shutdown that hangs must not hang the suite.
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    }
    await gone;
  };

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    async restart() {
      await kill('SIGKILL');
      await launch();
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    async stop() {
      child?.kill('SIGCONT');
      await kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
