/**
 * Connection slots on Redis (cluster-wide connection limits): one sorted set per name,
 * members are connection ids scored by their expiry, refreshed by the node that holds
 * them, so a node that dies frees its slots within the TTL.
 */
import type { Redis } from 'ioredis';
import type { HeldSlots, SlotClaim } from './engine.js';
import type { EngineKeys } from './keys.js';
import { runScript, toEngineError } from './script-loader.js';

/** Refresh writes go out in pipelines of this many commands. */
const PIPELINE_CHUNK = 1000;
/** Members renewed by one ZADD. */
const MEMBERS_PER_COMMAND = 500;

export async function acquireSlots(
  redis: Redis,
  keys: EngineKeys,
  claims: readonly SlotClaim[],
  connectionId: string,
  ttlMs: number,
): Promise<number> {
  const now = Date.now();
  let taken: number[];
  try {
    taken = (await Promise.all(
      claims.map((c) => runScript(redis, 'slot_acquire', [keys.slots(c.name)], [now, now + ttlMs, c.limit, connectionId, ttlMs * 2])),
    )) as number[];
  } catch (err) {
    throw toEngineError(err, 'taking a connection slot');
  }
  const refused = taken.findIndex((t) => Number(t) !== 1);
  if (refused === -1) return -1;
  await releaseSlots(redis, keys, claims.map((c) => c.name), connectionId);
  return refused;
}

export async function refreshSlots(redis: Redis, keys: EngineKeys, held: readonly HeldSlots[], ttlMs: number): Promise<void> {
  // One ZADD (many members) and one PEXPIRE per name: thousands of connections share a
  // few names (one IP, one tenant), so this is a few commands, not three per connection.
  const byName = new Map<string, string[]>();
  for (const h of held) {
    for (const name of h.names) {
      let ids = byName.get(name);
      if (!ids) byName.set(name, (ids = []));
      ids.push(h.connectionId);
    }
  }
  const expiry = Date.now() + ttlMs;
  try {
    let pipeline = redis.pipeline();
    let queued = 0;
    for (const [name, ids] of byName) {
      const key = keys.slots(name);
      for (let i = 0; i < ids.length; i += MEMBERS_PER_COMMAND) {
        const args: Array<string | number> = [];
        for (const id of ids.slice(i, i + MEMBERS_PER_COMMAND)) args.push(expiry, id);
        pipeline.zadd(key, 'XX', ...args);
        queued++;
      }
      pipeline.pexpire(key, ttlMs * 2);
      if (++queued >= PIPELINE_CHUNK) {
        await pipeline.exec();
        pipeline = redis.pipeline();
        queued = 0;
      }
    }
    if (queued) await pipeline.exec();
  } catch (err) {
    throw toEngineError(err, 'refreshing connection slots');
  }
}

export async function releaseSlots(redis: Redis, keys: EngineKeys, names: readonly string[], connectionId: string): Promise<void> {
  if (!names.length) return;
  const pipeline = redis.pipeline();
  for (const name of names) pipeline.zrem(keys.slots(name), connectionId);
  try {
    await pipeline.exec();
  } catch (err) {
    throw toEngineError(err, 'releasing connection slots');
  }
}
