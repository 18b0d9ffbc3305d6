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
  const expiry = Date.now() + ttlMs;
  let pipeline = redis.pipeline();
  let queued = 0;
  try {
    for (const h of held) {
      for (const name of h.names) {
        const key = keys.slots(name);
        pipeline.zadd(key, 'XX', expiry, h.connectionId);
        pipeline.pexpire(key, ttlMs * 2);
        queued += 2;
        if (queued >= PIPELINE_CHUNK) {
          await pipeline.exec();
          pipeline = redis.pipeline();
          queued = 0;
        }
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
