/**
 * Loads the engine's Lua scripts (`scripts/<name>-<numKeys>.lua`) into an ioredis
 * connection with `defineCommand`, and maps Redis and script errors to
 * `StreamgateError`s in one place.
 *
 * The scripts are found next to this module, so the same code works from `lib/engine/`
 * (tsx) and from `dist/lib/engine/` (the build copies `lib/**\/*.lua`).
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { StreamgateError, unavailable } from '../errors.js';

export interface ScriptFile {
  /** The name before `-<numKeys>.lua`, e.g. `publish`. */
  name: string;
  /** Null for `-n.lua`: a script taking any number of keys. */
  numberOfKeys: number | null;
  lua: string;
}

const SCRIPT_FILE_RE = /^([a-z][a-z0-9_]*)-(\d+|n)\.lua$/;
/** Prefix of the command names, so a script never shadows an ioredis method (`publish`). */
const COMMAND_PREFIX = 'sg_';

let cached: ScriptFile[] | undefined;
/** Names of the `-n` scripts, which take their key count as the first argument. */
const variableKeys = new Set<string>();

/** Reads every script file once per process. */
export function scriptFiles(): ScriptFile[] {
  if (cached) return cached;
  const dir = new URL('./scripts/', import.meta.url);
  const files: ScriptFile[] = [];
  for (const file of readdirSync(dir).sort()) {
    const m = SCRIPT_FILE_RE.exec(file);
    if (!m) continue;
    files.push({ name: m[1]!, numberOfKeys: m[2] === 'n' ? null : Number(m[2]), lua: readFileSync(new URL(file, dir), 'utf8') });
  }
  if (files.length === 0) throw new Error(`no Lua scripts found in ${dir.pathname}`);
  for (const f of files) if (f.numberOfKeys === null) variableKeys.add(f.name);
  cached = files;
  return files;
}

/** Defines every script as a command on `redis`; run them with `runScript`. */
export function loadScripts(redis: Redis): void {
  for (const s of scriptFiles()) {
    redis.defineCommand(COMMAND_PREFIX + s.name, s.numberOfKeys === null ? { lua: s.lua } : { lua: s.lua, numberOfKeys: s.numberOfKeys });
  }
}

type ScriptCommand = (...args: Array<string | number>) => Promise<unknown>;

/**
 * Runs a loaded script (EVALSHA, falling back to EVAL after a Redis restart emptied
 * the script cache). `keys` must have the length the file name states (any for `-n`).
 */
export function runScript(
  redis: Redis,
  name: string,
  keys: readonly string[],
  args: ReadonlyArray<string | number>,
): Promise<unknown> {
  const command = (redis as unknown as Record<string, ScriptCommand | undefined>)[COMMAND_PREFIX + name];
  if (typeof command !== 'function') return Promise.reject(new Error(`script ${name} is not loaded`));
  return variableKeys.has(name) ? command.call(redis, keys.length, ...keys, ...args) : command.call(redis, ...keys, ...args);
}

/**
 * Connection-level failures: Redis is down, restarting, loading its data, failing
 * over, or did not answer in time. The caller may retry; nothing was acknowledged.
 */
const UNAVAILABLE_RE =
  /Stream isn't writeable|Connection is closed|Command timed out|Reached the max retries|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|Socket timeout|^LOADING|^READONLY|^MASTERDOWN|^CLUSTERDOWN|^TRYAGAIN|^BUSY |^NOREPLICAS|^MISCONF|^OOM/;

/**
 * The one mapping from a Redis or script error to a `StreamgateError`: connection
 * trouble is `unavailable` (retryable), anything else (a script bug, a wrong type) is
 * `internal`, with the Redis error kept as `cause`.
 */
export function toEngineError(err: unknown, doing: string): StreamgateError {
  if (err instanceof StreamgateError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (message.startsWith('NOGROUP')) return new StreamgateError('not_found', 'no such consumer group', { cause: err });
  if (UNAVAILABLE_RE.test(message) || (typeof code === 'string' && /^E[A-Z]+$/.test(code))) {
    return unavailable(`Redis is unavailable (${doing})`, err);
  }
  return new StreamgateError('internal', `Redis error while ${doing}`, { cause: err });
}
