/**
 * A real `streamgate serve` process on a free loopback port, for the tests that kill
 * or stop a node (STYLE §11, §14). It runs the compiled `dist/`: build first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = join(process.cwd(), 'bin', 'streamgate');
const START_TIMEOUT_MS = 20_000;
/** A SIGTERM that has not ended the process by then is followed by SIGKILL. */
const STOP_TIMEOUT_MS = 15_000;
const LISTENING_RE = /streamgate: listening on http:\/\/([^\s:]+):(\d+)/;

export interface NodeOptions {
  redisUrl: string;
  /** Redis key prefix of this test; nodes sharing it form one cluster. */
  keyPrefix: string;
  /** `JWT_SECRET` */
  secret: string;
  /** Extra environment, over the defaults. */
  env?: Record<string, string>;
  /** Configuration merged over `{"redis":{"key_prefix":…,"shards":4}}` (`STREAMGATE_CONFIG`). */
  config?: Record<string, unknown>;
}

export interface NodeProcess {
  url: string;
  port: number;
  process: ChildProcess;
  /** What the process wrote on stderr (the last 16 KiB). */
  output(): string;
  /** SIGTERM; resolves with the exit code (null when it had to be killed). */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash would; resolves once the process is gone. */
  kill(): Promise<void>;
}

const running = new Set<ChildProcess>();

// Mocha's --exit must not leave orphan gateways behind.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** Spawn `node bin/streamgate serve`; resolves once it prints its listening line. */
export async function startNode(options: NodeOptions): Promise<NodeProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-node-'));
  const configFile = join(dir, 'config.json');
  const { redis: redisOverride, ...rest } = (options.config ?? {}) as { redis?: object };
  writeFileSync(configFile, JSON.stringify({ ...rest, redis: { key_prefix: options.keyPrefix, shards: 4, ...redisOverride } }));
  const child = spawn(process.execPath, [BIN, 'serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'test',
      PORT: '0',
      HOST: '127.0.0.1',
      REDIS_URL: options.redisUrl,
      JWT_SECRET: options.secret,
      STREAMGATE_DATA_DIR: dir,
      STREAMGATE_CONFIG: configFile,
      ...options.env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  const gone = exited(child).then((code) => {
    running.delete(child);
    rmSync(dir, { recursive: true, force: true });
    return code;
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-16_384);
  });

  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`streamgate serve printed no listening line within ${START_TIMEOUT_MS} ms:\n${stderr}`)), START_TIMEOUT_MS);
      const onData = () => {
        const m = LISTENING_RE.exec(stderr);
        if (!m) return;
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        resolve(Number(m[2]));
      };
      child.stderr!.on('data', onData);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      void gone.then((code) => {
        clearTimeout(timer);
        reject(new Error(`streamgate serve exited (${code}) before listening:\n${stderr}`));
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    await gone;
    throw err;
  }

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process: child,
    output: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      const code = await gone;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await gone;
    },
  };
}

/** SIGKILL every node still running (for `after` hooks). */
export async function killAllNodes(): Promise<void> {
  const children = [...running];
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(children.map(exited));
}
