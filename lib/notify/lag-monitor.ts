/**
 * How far the notifier is behind, and whether the shard logs were trimmed under it.
 *
 * The shard logs are capped (`redis.log_max_length`, `MAXLEN ~`): an entry trimmed
 * before the `notifier` group read it is gone, and so is its notification. Every few
 * seconds the worker runs one script per shard log that reads the group's position
 * and sets these gauges in the worker's registry:
 *
 * - `streamgate_notifier_lag_entries`: entries not yet delivered to the group, summed
 *   over the shard logs. `XINFO GROUPS` `lag` where Redis gives it (7.0+); else the
 *   entries after `last-delivered-id`, counted (up to `countLimit` per log).
 * - `streamgate_notifier_pending_entries`: delivered, not yet acknowledged (`XPENDING`).
 * - `streamgate_notifier_skipped_total`: entries trimmed before the group read them.
 *
 * A trim gap is seen in one of two ways (Redis 7, which counts `entries-added` and the
 * group's `entries-read`):
 *
 * 1. `last-delivered-id` is older than the log's first entry while entries after it
 *    were never read: `entries-added - length - entries-read` were trimmed unread.
 * 2. The group already read past the gap (the notifier's next read jumps it): Redis
 *    keeps counting `entries-read` from before the gap, so its `lag` stays too high by
 *    the entries skipped. When `lag` is at most `countLimit` the script counts the
 *    entries actually after `last-delivered-id`; the difference was skipped. (Above
 *    that, only the part exceeding the log's length is certain, and is counted; the
 *    rest once the lag comes down.)
 *
 * Either way the script resets the group's `entries-read` (`XGROUP SETID` to the same
 * id, `ENTRIESREAD`), in the same atomic step, so Redis's `lag` is right again and
 * a gap is counted once, whichever worker sees it first. The same repair gives a
 * group created at `$` (whose `entries-read` Redis does not know until it catches up)
 * a counter, so later refreshes need no counting. A log that had entries deleted
 * (`XDEL`) after `last-delivered-id` is not checked for gaps (deleted entries cannot
 * be told from trimmed ones). Redis 6.2 has no counters: the lag is counted, and gaps
 * are not detected.
 */
import type { Redis } from 'ioredis';
import { Counter, Gauge, type Registry } from 'prom-client';
import { EngineKeys } from '../engine/keys.js';

/**
 * Per shard log: {found, lag, pending, skipped, possible gap (count unknown),
 * last-delivered-id, first entry id}. `found` 0: no such log or group.
 */
const LAG_SCRIPT = `
local key, group = KEYS[1], ARGV[1]
local limit = tonumber(ARGV[2])
if redis.call('EXISTS', key) == 0 then return {0} end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
if not ok then return {0} end
local g
for _, row in ipairs(groups) do
  local t = {}
  for i = 1, #row, 2 do t[row[i]] = row[i + 1] end
  if t['name'] == group then g = t end
end
if not g then return {0} end
local info = redis.call('XINFO', 'STREAM', key)
local s = {}
for i = 1, #info, 2 do s[info[i]] = info[i + 1] end

-- Ids compare as (ms, seq), both decimal; by length, then as text (no float rounding).
local function num_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return num_lt(am, bm) end
  return num_lt(as, bs)
end
-- Entries after id, counted up to limit: count, and whether that is all of them.
local function count_after(id)
  local n, cursor = 0, '(' .. id
  while n < limit do
    local page = redis.call('XRANGE', key, cursor, '+', 'COUNT', math.min(1000, limit - n))
    if #page == 0 then return n, true end
    n = n + #page
    cursor = '(' .. page[#page][1]
  end
  return n, #redis.call('XRANGE', key, cursor, '+', 'COUNT', 1) == 0
end

local last = g['last-delivered-id']
local length = tonumber(s['length'])
local pending = tonumber(redis.call('XPENDING', key, group)[1])
local first = ''
if type(s['first-entry']) == 'table' then first = s['first-entry'][1] end
-- Redis 7: counters (false when Redis does not know them); Redis 6.2: absent.
local added = s['entries-added'] and tonumber(s['entries-added']) or nil
local read = g['entries-read'] and tonumber(g['entries-read']) or nil
local lag = g['lag'] and tonumber(g['lag']) or nil
local maxdel = s['max-deleted-entry-id']
local tombstones = type(maxdel) == 'string' and maxdel ~= '0-0' and before(last, maxdel)

local skipped, unknown = 0, 0
local function set_read(n)
  redis.call('XGROUP', 'SETID', key, group, last, 'ENTRIESREAD', n)
end

if not added then
  -- Redis 6.2: no counters.
  if first == '' or before(last, first) then lag = length
  else lag = count_after(last) end
elseif first == '' or before(last, first) then
  -- Every entry up to the first one left is gone: all of them should have been read.
  local expected = added - length
  if read and not tombstones then
    if expected > read then skipped = expected - read end
  elseif read == nil and expected > 0 and last ~= '0-0' and length > 0 then
    unknown = 1
  end
  if read ~= expected and not tombstones then set_read(expected) end
  lag = length
elseif tombstones then
  if lag == nil then lag = count_after(last) end
elseif read == nil or lag == nil then
  local n, all = count_after(last)
  if all then set_read(added - n) end
  lag = n
elseif lag > 0 then
  if lag <= limit then
    local n = count_after(last)
    if n < lag then
      skipped = lag - n
      set_read(added - n)
      lag = n
    end
  else
    -- The first entry was delivered: at most length - 1 entries are after it.
    local most = length - 1
    if lag > most then
      skipped = lag - most
      set_read(read + skipped)
      lag = most
    end
  end
end
return {1, lag, pending, skipped, unknown, last, first}
`;

export interface ShardLag {
  shard: number;
  lag: number;
  pending: number;
  /** Entries trimmed before the group read them, seen by this refresh. */
  skipped: number;
  /** `last-delivered-id` is before the first entry and Redis cannot say how many were trimmed unread. */
  possibleGap: boolean;
  lastDeliveredId: string;
  /** The log's first entry; '' when it is empty. */
  firstEntryId: string;
}

export interface LagSample {
  lag: number;
  pending: number;
  skipped: number;
  shards: ShardLag[];
}

export interface LagMonitorOptions {
  redis: Redis;
  /** `redis.key_prefix` and `redis.shards`, as the engine's. */
  keyPrefix: string;
  shards: number;
  group: string;
  registry: Registry;
  /** @default 5000 */
  intervalMs?: number;
  /** Entries counted per log at most, when Redis's own counters cannot be used. @default 10000 */
  countLimit?: number;
  log?: (line: string) => void;
}

export const DEFAULT_LAG_INTERVAL_MS = 5000;
export const DEFAULT_LAG_COUNT_LIMIT = 10_000;

export class NotifierLagMonitor {
  readonly lag: Gauge;
  readonly pending: Gauge;
  readonly skipped: Counter;
  private readonly keys: EngineKeys;
  private readonly o: LagMonitorOptions;
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<LagSample | null> | null = null;
  /** Possible gaps already warned about, per shard (`last-delivered-id`). */
  private readonly warned = new Map<number, string>();

  constructor(options: LagMonitorOptions) {
    this.o = options;
    this.keys = new EngineKeys(options.keyPrefix, options.shards);
    const registers = [options.registry];
    this.lag = new Gauge({ name: 'streamgate_notifier_lag_entries', help: 'Shard log entries not yet delivered to the notifier group, summed over the shard logs', registers });
    this.pending = new Gauge({ name: 'streamgate_notifier_pending_entries', help: 'Entries delivered to the notifier group and not yet acknowledged (XPENDING)', registers });
    this.skipped = new Counter({ name: 'streamgate_notifier_skipped_total', help: 'Shard log entries trimmed before the notifier group read them (their notifications are lost)', registers });
    this.skipped.inc(0);
  }

  /** Read every shard log once, set the gauges, count and log trim gaps. */
  async refresh(): Promise<LagSample> {
    const limit = Math.max(1, Math.floor(this.o.countLimit ?? DEFAULT_LAG_COUNT_LIMIT));
    const shards: ShardLag[] = [];
    for (let shard = 0; shard < this.o.shards; shard++) {
      const key = this.keys.log(shard);
      const reply = (await this.o.redis.eval(LAG_SCRIPT, 1, key, this.o.group, limit)) as unknown[];
      if (!Array.isArray(reply) || Number(reply[0]) !== 1) continue;
      const s: ShardLag = {
        shard,
        lag: Number(reply[1]) || 0,
        pending: Number(reply[2]) || 0,
        skipped: Number(reply[3]) || 0,
        possibleGap: Number(reply[4]) === 1,
        lastDeliveredId: String(reply[5]),
        firstEntryId: String(reply[6] ?? ''),
      };
      shards.push(s);
      if (s.skipped > 0) {
        this.skipped.inc(s.skipped);
        this.o.log?.(
          `streamgate worker: notifier: ${s.skipped} entries of ${key} were trimmed before the ${this.o.group} group read them; ` +
            `their notifications are lost (the notifier fell behind by more than redis.log_max_length: raise it or run more workers)`,
        );
      }
      if (s.possibleGap && this.warned.get(shard) !== s.lastDeliveredId) {
        this.warned.set(shard, s.lastDeliveredId);
        this.o.log?.(
          `streamgate worker: notifier: ${key} was trimmed past the ${this.o.group} group's last delivered entry ${s.lastDeliveredId} ` +
            `(first entry ${s.firstEntryId}); entries may have been lost`,
        );
      }
    }
    const sample: LagSample = {
      lag: shards.reduce((a, s) => a + s.lag, 0),
      pending: shards.reduce((a, s) => a + s.pending, 0),
      skipped: shards.reduce((a, s) => a + s.skipped, 0),
      shards,
    };
    this.lag.set(sample.lag);
    this.pending.set(sample.pending);
    return sample;
  }

  /** Refresh now and every `intervalMs`; a refresh still running is not started again. */
  start(): Promise<LagSample | null> {
    if (!this.timer) {
      this.timer = setInterval(() => void this.tick(), Math.max(10, this.o.intervalMs ?? DEFAULT_LAG_INTERVAL_MS));
      this.timer.unref();
    }
    return this.tick();
  }

  private tick(): Promise<LagSample | null> {
    this.inFlight ??= this.refresh()
      .catch((err: unknown) => {
        this.o.log?.(`streamgate worker: notifier lag: ${err instanceof Error ? err.message : String(err)}`);
        return null;
      })
      .finally(() => {
        this.inFlight = null;
      });
    return this.inFlight;
  }

  /** Stop refreshing; resolves once a refresh in flight is done. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.inFlight;
  }
}
