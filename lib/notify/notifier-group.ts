/**
 * What the notifier needs of its consumer group beyond the Engine API (read, ack,
 * claim): how many times an entry was delivered (XPENDING), keeping the entries of a
 * batch in hand from looking idle (XCLAIM … JUSTID by their owner, which resets their
 * idle time without counting a delivery), and removing consumers of workers that
 * are gone (XGROUP DELCONSUMER of idle consumers with nothing pending).
 *
 * `RedisNotifierGroup` does it on the shard logs of a Redis engine (key names from
 * `EngineKeys`); `MemoryNotifierGroup` counts deliveries in the process, for engines
 * without a Redis behind them.
 */
import type { Redis } from 'ioredis';
import type { GroupEntry } from '../engine/engine.js';
import { EngineKeys } from '../engine/keys.js';

export interface NotifierGroupOps {
  /** How many times each entry was delivered, in order (1 for an entry read once). */
  deliveries(entries: readonly GroupEntry[]): Promise<number[]>;
  /** Called when a claimed entry is handed to this notifier (in-process counting only). */
  claimed?(entries: readonly GroupEntry[]): void;
  /** Forget entries that are acknowledged (in-process counting only). */
  forget?(entries: readonly GroupEntry[]): void;
  /** Reset the idle time of the entries `consumer` still owns; resolves with how many. */
  touch(consumer: string, entries: readonly GroupEntry[]): Promise<number>;
  /** Delete consumers (not `keep`) idle at least `idleMs` with nothing pending; resolves with how many. */
  removeIdleConsumers(keep: string, idleMs: number): Promise<number>;
}

/** Resets the idle time of the ids `ARGV[3..]` that consumer `ARGV[2]` still owns. */
const TOUCH = `
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
`;

/**
 * Deletes the consumers of group ARGV[1] idle at least ARGV[2] ms with nothing
 * pending, except ARGV[3]. Atomic: a consumer cannot read entries between the check
 * and the deletion (deleting one with pending entries would lose them).
 */
const REMOVE_IDLE = `
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
local minIdle = tonumber(ARGV[2])
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name and name ~= ARGV[3] and pending == 0 and idle and idle >= minIdle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed
`;

function byShard(entries: readonly GroupEntry[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const e of entries) {
    const ids = out.get(e.shard);
    if (ids) ids.push(e.id);
    else out.set(e.shard, [e.id]);
  }
  return out;
}

export class RedisNotifierGroup implements NotifierGroupOps {
  private readonly keys: EngineKeys;

  /** `keyPrefix` and `shards` as the engine's (`redis.key_prefix`, `redis.shards`). */
  constructor(
    private readonly redis: Redis,
    keyPrefix: string,
    shards: number,
    private readonly group: string,
  ) {
    this.keys = new EngineKeys(keyPrefix, shards);
  }

  async deliveries(entries: readonly GroupEntry[]): Promise<number[]> {
    if (entries.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const e of entries) pipeline.call('XPENDING', this.keys.log(e.shard), this.group, e.id, e.id, 1);
    const results = (await pipeline.exec()) ?? [];
    return entries.map((_, i) => {
      const [err, reply] = results[i] ?? [null, null];
      if (err) throw err;
      // [[id, consumer, idle ms, deliveries]]; none: no longer pending (acknowledged meanwhile).
      const row: unknown = Array.isArray(reply) ? reply[0] : undefined;
      return Array.isArray(row) ? Number(row[3]) || 1 : 1;
    });
  }

  async touch(consumer: string, entries: readonly GroupEntry[]): Promise<number> {
    let n = 0;
    for (const [shard, ids] of byShard(entries)) {
      n += Number(await this.redis.eval(TOUCH, 1, this.keys.log(shard), this.group, consumer, ...ids));
    }
    return n;
  }

  async removeIdleConsumers(keep: string, idleMs: number): Promise<number> {
    let n = 0;
    for (const key of this.keys.logs()) n += Number(await this.redis.eval(REMOVE_IDLE, 1, key, this.group, Math.max(0, Math.floor(idleMs)), keep));
    return n;
  }
}

/** At most this many entries are counted in the process; the oldest are forgotten first. */
const MAX_COUNTED = 10_000;

/** Deliveries counted by this process alone (reads are 1, each claim adds one). */
export class MemoryNotifierGroup implements NotifierGroupOps {
  private readonly claims = new Map<string, number>();

  private key(e: GroupEntry): string {
    return `${e.shard}/${e.id}`;
  }

  claimed(entries: readonly GroupEntry[]): void {
    for (const e of entries) {
      const k = this.key(e);
      const n = (this.claims.get(k) ?? 0) + 1;
      this.claims.delete(k);
      this.claims.set(k, n);
      if (this.claims.size > MAX_COUNTED) this.claims.delete(this.claims.keys().next().value!);
    }
  }

  forget(entries: readonly GroupEntry[]): void {
    for (const e of entries) this.claims.delete(this.key(e));
  }

  async deliveries(entries: readonly GroupEntry[]): Promise<number[]> {
    return entries.map((e) => 1 + (this.claims.get(this.key(e)) ?? 0));
  }

  async touch(): Promise<number> {
    return 0;
  }

  async removeIdleConsumers(): Promise<number> {
    return 0;
  }
}
