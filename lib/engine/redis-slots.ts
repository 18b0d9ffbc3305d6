/**
 * Connection slots on Redis (cluster-wide connection limits): one sorted set per name,
 * members are connection ids scored by their expiry, refreshed by the node that holds
 * them, so a node that dies frees its slots within the TTL.
 */
import type { Redis } from 'ioredis';
import type { HeldSlots, SlotClaim } from './engine.js';
import type { EngineKeys } from './keys.js';
import { runScript, toEngineError } from './script-loader.js';


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
  // Thousands of connections share a few names (one IP, one tenant), and each user has
  // one: one zset_renew call per RENEW_KEYS_PER_CALL names, XX so a slot released
  // meanwhile stays released.
  const byKey = new Map<string, string[]>();
  for (const h of held) {
    for (const name of h.names) {
      const key = keys.slots(name);
      let ids = byKey.get(key);
      if (!ids) byKey.set(key, (ids = []));
      ids.push(h.connectionId);
    }
  }
  try {
    await renewSortedSets(redis, byKey, Date.now() + ttlMs, ttlMs * 2, true);
  } catch (err) {
    throw toEngineError(err, 'refreshing connection slots');
  }
}

/** Keys per zset_renew call: bounded so one call never holds Redis for long. */
const RENEW_KEYS_PER_CALL = 500;

/**
 * Give the members of many sorted sets the expiry score `expiry` and their keys a
 * TTL, a few hundred keys per script call. Members holding a NUL byte (the script's
 * separator; a user id may contain anything) are renewed with plain commands.
 */
export async function renewSortedSets(redis: Redis, members: ReadonlyMap<string, readonly string[]>, expiry: number, keyTtlMs: number, onlyExisting: boolean): Promise<void> {
  const mode = onlyExisting ? 'XX' : '';
  let keys: string[] = [];
  let lists: string[] = [];
  const odd = redis.pipeline();
  let oddCount = 0;
  for (const [key, ids] of members) {
    const plain = ids.filter((id) => !id.includes('\u0000'));
    if (plain.length !== ids.length) {
      for (const id of ids) if (id.includes('\u0000')) onlyExisting ? odd.zadd(key, 'XX', expiry, id) : odd.zadd(key, expiry, id);
      odd.pexpire(key, keyTtlMs);
      oddCount++;
    }
    if (!plain.length) continue;
    keys.push(key);
    lists.push(plain.join('\u0000'));
    if (keys.length >= RENEW_KEYS_PER_CALL) {
      await runScript(redis, 'zset_renew', keys, [keyTtlMs, mode, expiry, ...lists]);
      keys = [];
      lists = [];
    }
  }
  if (keys.length) await runScript(redis, 'zset_renew', keys, [keyTtlMs, mode, expiry, ...lists]);
  if (oddCount) {
    const failed = (await odd.exec())?.find(([err]) => err);
    if (failed) throw failed[0];
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
