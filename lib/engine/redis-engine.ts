/**
 * The production engine on Redis Streams (ARCHITECTURE §2): per shard a log stream,
 * per channel a capped stream with the same ids, appended together by one Lua script.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis, type RedisOptions } from 'ioredis';
import { StreamgateError, unavailable } from '../errors.js';
import { compareIds, idTime, isEventId, ZERO_ID } from '../protocol/event-id.js';
import {
  IDEMPOTENCY_TTL_SECONDS,
  type ClaimOptions,
  type Engine,
  type GroupEntry,
  type GroupReadOptions,
  type HistoryQuery,
  type HistoryResult,
  type LogFeed,
  type LogListener,
  type PublishRequest,
  type PublishResult,
  type RetentionResolver,
  type SlotClaim,
  type HeldSlots,
  type Signal,
  type SignalListener,
  type PresenceEntry,
  type PresenceRef,
  type UserState,
  type UserPresence,
  type ReceiptKind,
  type ReadCursor,
} from './engine.js';
import { EngineKeys } from './keys.js';
import { entryToEvent, FEED_BLOCK_MS, parseEntries, parseReadReply, RedisLiveFeed } from './redis-live-feed.js';
import { loadScripts, runScript, toEngineError } from './script-loader.js';
import { acquireSlots, refreshSlots, releaseSlots } from './redis-slots.js';
import { RedisPresence } from './redis-presence.js';

export interface RedisEngineOptions {
  /** `redis://…` or `rediss://…` */
  url: string;
  /** Prefix of every key, e.g. `sg`. */
  keyPrefix: string;
  /** Number of shard logs; fixed per deployment. */
  shards: number;
  /** Approximate maximum length of each shard log (`MAXLEN ~`). */
  logMaxLength: number;
  retention: RetentionResolver;
  /**
   * A command that has no answer by then fails with `unavailable`.
   * @default 3000
   */
  commandTimeoutMs?: number;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 3000;
const DEFAULT_GROUP_COUNT = 100;
/** Bounds one claimStale call: XAUTOCLAIM pages per shard. */
const MAX_CLAIM_PAGES = 100;

/** Reconnect quickly at first, then every 2 s at most, with jitter. */
function retryStrategy(times: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(times, 10));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/**
 * Connection options shared by every connection of the engine. No offline queue and
 * no resending after a reconnect: a command either runs while connected or fails at
 * once, so a publish that was refused can never be appended later.
 */
function connectionOptions(commandTimeout: number | undefined): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    // Fail commands in flight as soon as the connection drops, not after 20 retries.
    maxRetriesPerRequest: 0,
    commandTimeout,
    retryStrategy,
    protocol: 2,
  };
}

function ignore(): void {}

async function connect(conn: Redis, doing: string): Promise<void> {
  conn.on('error', ignore);
  try {
    await conn.connect();
  } catch (err) {
    conn.disconnect();
    throw toEngineError(err, doing);
  }
}

function isoOf(id: string): string {
  return new Date(idTime(id)).toISOString();
}

export class RedisEngine implements Engine {
  readonly kind = 'redis' as const;
  readonly shards: number;
  readonly keys: EngineKeys;

  private readonly redis: Redis;
  private readonly options: Readonly<Required<RedisEngineOptions>>;
  private readonly feeds = new Set<RedisLiveFeed>();
  private readonly presence: RedisPresence;
  private readonly signalSubs = new Set<{ close(): Promise<void> }>();
  /** Dedicated connection for blocking XREADGROUP, made on first use. */
  private blocking: Promise<Redis> | undefined;
  /** Shard where the next readGroup sweep starts, so no shard starves. */
  private nextShard = 0;
  private closed = false;

  private constructor(redis: Redis, options: Required<RedisEngineOptions>) {
    this.redis = redis;
    this.options = Object.freeze(options);
    this.shards = options.shards;
    this.keys = new EngineKeys(options.keyPrefix, options.shards);
    this.presence = new RedisPresence(redis, this.keys);
  }

  /** Connects (rejecting with `unavailable` when Redis does not answer) and loads the scripts. */
  static async create(options: RedisEngineOptions): Promise<RedisEngine> {
    if (!Number.isInteger(options.shards) || options.shards < 1) throw new TypeError('shards must be an integer >= 1');
    if (!Number.isInteger(options.logMaxLength) || options.logMaxLength < 1) {
      throw new TypeError('logMaxLength must be an integer >= 1');
    }
    const full: Required<RedisEngineOptions> = {
      ...options,
      commandTimeoutMs: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    };
    const redis = new Redis(full.url, connectionOptions(full.commandTimeoutMs));
    loadScripts(redis);
    await connect(redis, 'connecting');
    return new RedisEngine(redis, full);
  }

  async publish(req: PublishRequest): Promise<PublishResult> {
    const k = this.keys.channel(req.tenant, req.channel);
    const retention = this.options.retention(req.channel);
    const idempotencyKey = req.idempotencyKey ?? '';
    let reply: unknown;
    try {
      reply = await runScript(
        this.redis,
        'publish',
        [k.log, k.stream, k.meta, k.idemPrefix + idempotencyKey],
        [
          req.tenant,
          req.channel,
          req.event,
          req.dataJson,
          req.priority ?? 'normal',
          req.publisher ? JSON.stringify(req.publisher) : '',
          idempotencyKey,
          this.options.logMaxLength,
          Math.max(1, Math.floor(retention.count)),
          Math.max(0, Math.floor(retention.seconds)),
          IDEMPOTENCY_TTL_SECONDS,
        ],
      );
    } catch (err) {
      throw toEngineError(err, 'publishing');
    }
    if (!Array.isArray(reply) || !isEventId(reply[0])) {
      throw new StreamgateError('internal', 'unexpected answer from the publish script', { cause: reply });
    }
    const id = reply[0];
    return { id, timestamp: isoOf(id), duplicate: Number(reply[1]) === 1 };
  }

  async history(tenant: string, channel: string, query: HistoryQuery): Promise<HistoryResult> {
    const k = this.keys.channel(tenant, channel);
    const { since } = query;
    const limit = Math.max(1, Math.floor(query.limit));
    // One transaction, so the trim point read matches the events read.
    const tx = this.redis.multi();
    if (since === undefined) tx.call('XREVRANGE', k.stream, '+', '-', 'COUNT', limit);
    else tx.call('XRANGE', k.stream, '(' + since, '+', 'COUNT', limit);
    tx.call('HMGET', k.meta, 'last', 'trimmed');
    let results: Array<[Error | null, unknown]> | null;
    try {
      results = await tx.exec();
    } catch (err) {
      throw toEngineError(err, 'reading history');
    }
    if (!results || results.length !== 2) throw unavailable('Redis aborted the history transaction');
    for (const [err] of results) if (err) throw toEngineError(err, 'reading history');

    const events = parseEntries(results[0]![1], tenant, channel);
    if (since === undefined) events.reverse();
    const meta = results[1]![1];
    const last = Array.isArray(meta) && isEventId(meta[0]) ? meta[0] : null;
    const trimmed = Array.isArray(meta) && isEventId(meta[1]) ? meta[1] : null;

    let recovered = true;
    if (since !== undefined) {
      if (last === null && trimmed === null) {
        // No meta: never published, or idle past even the meta's TTL. An id older
        // than the retention window may have lost events; say so.
        const windowStart = Date.now() - this.options.retention(channel).seconds * 1000;
        recovered = since === ZERO_ID || idTime(since) >= windowStart;
      } else {
        if (trimmed !== null && compareIds(since, trimmed) < 0) recovered = false;
        // The stream expired while idle: events after `since` existed and are gone.
        if (last !== null && events.length === 0 && compareIds(last, since) > 0) recovered = false;
      }
    }
    return { events, recovered, position: last };
  }

  async position(tenant: string, channel: string): Promise<string | null> {
    let last: string | null;
    try {
      last = await this.redis.hget(this.keys.channel(tenant, channel).meta, 'last');
    } catch (err) {
      throw toEngineError(err, 'reading a position');
    }
    return isEventId(last) ? last : null;
  }

  async subscribeLog(from: string[] | 'latest', onEvents: LogListener): Promise<LogFeed> {
    if (this.closed) throw unavailable('the engine is closed');
    const logs = this.keys.logs();
    let positions: string[];
    if (from === 'latest') {
      positions = await this.latestPositions(logs);
    } else {
      if (from.length !== this.shards || !from.every(isEventId)) {
        throw new StreamgateError('bad_request', `positions must be ${this.shards} event ids`);
      }
      positions = [...from];
    }
    // No command timeout shorter than the block: the feed's own timeout detects dead sockets.
    const conn = this.redis.duplicate(connectionOptions(FEED_BLOCK_MS + this.options.commandTimeoutMs));
    await connect(conn, 'starting the live feed');
    const feed = new RedisLiveFeed(conn, logs, positions, onEvents, (f) => this.feeds.delete(f));
    this.feeds.add(feed);
    return feed;
  }

  /** The last id of each shard log, `0-0` for an empty one: concrete ids, never `$`. */
  private async latestPositions(logs: string[]): Promise<string[]> {
    const pipeline = this.redis.pipeline();
    for (const key of logs) pipeline.call('XREVRANGE', key, '+', '-', 'COUNT', 1);
    let results: Array<[Error | null, unknown]> | null;
    try {
      results = await pipeline.exec();
    } catch (err) {
      throw toEngineError(err, 'reading the log positions');
    }
    return logs.map((_, i) => {
      const [err, reply] = results?.[i] ?? [unavailable('no answer'), null];
      if (err) throw toEngineError(err, 'reading the log positions');
      const top: unknown = Array.isArray(reply) ? reply[0] : undefined;
      return Array.isArray(top) && isEventId(top[0]) ? top[0] : ZERO_ID;
    });
  }

  async ensureGroup(group: string, start: 'beginning' | 'latest' = 'beginning'): Promise<void> {
    const id = start === 'latest' ? '$' : '0';
    await Promise.all(
      this.keys.logs().map(async (key) => {
        try {
          await this.redis.call('XGROUP', 'CREATE', key, group, id, 'MKSTREAM');
        } catch (err) {
          if (err instanceof Error && err.message.startsWith('BUSYGROUP')) return;
          throw toEngineError(err, 'creating a consumer group');
        }
      }),
    );
  }

  /**
   * New entries for `consumer`: at most `count` (default 100) over all shards. Shards
   * are read one at a time from a rotating start, so a read never takes more than it
   * returns. With `blockMs`, waits that long on a dedicated connection when none is
   * ready; concurrent blocking reads on one engine wait for each other.
   */
  async readGroup(group: string, consumer: string, options: GroupReadOptions = {}): Promise<GroupEntry[]> {
    const count = Math.max(1, Math.floor(options.count ?? DEFAULT_GROUP_COUNT));
    const blockMs = Math.max(0, Math.floor(options.blockMs ?? 0));
    const logs = this.keys.logs();
    const entries: GroupEntry[] = [];
    const first = this.nextShard;
    this.nextShard = (first + 1) % this.shards;
    for (let i = 0; i < this.shards && entries.length < count; i++) {
      const shard = (first + i) % this.shards;
      let reply: unknown;
      try {
        reply = await this.redis.call(
          'XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - entries.length, 'STREAMS', logs[shard]!, '>',
        );
      } catch (err) {
        throw toEngineError(err, 'reading a consumer group');
      }
      this.collect(reply, entries);
    }
    if (entries.length > 0 || blockMs === 0) return entries;

    // Woken by one stream, XREADGROUP answers with that stream's entries only, so
    // COUNT bounds the answer here too.
    const conn = await this.blockingConnection();
    const read = conn.call(
      'XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'BLOCK', blockMs, 'STREAMS', ...logs, ...logs.map(() => '>'),
    );
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        conn.disconnect(true);
        reject(unavailable('Redis did not answer a blocking group read'));
      }, blockMs + this.options.commandTimeoutMs);
    });
    try {
      this.collect(await Promise.race([read, deadline]), entries);
    } catch (err) {
      throw toEngineError(err, 'reading a consumer group');
    } finally {
      clearTimeout(timer);
      read.catch(ignore);
    }
    return entries;
  }

  private collect(reply: unknown, into: GroupEntry[]): void {
    for (const { key, events } of parseReadReply(reply)) {
      const shard = this.shardOfLog(key);
      if (shard === undefined) continue;
      for (const event of events) into.push({ shard, id: event.id, event });
    }
  }

  private shardOfLog(key: string): number | undefined {
    const m = /:\{s(\d+)\}:log$/.exec(key);
    return m ? Number(m[1]) : undefined;
  }

  private blockingConnection(): Promise<Redis> {
    if (!this.blocking) {
      const conn = this.redis.duplicate(connectionOptions(undefined));
      const ready = connect(conn, 'connecting for group reads').then(() => conn);
      ready.catch(() => {
        if (this.blocking === ready) this.blocking = undefined;
      });
      this.blocking = ready;
    }
    return this.blocking;
  }

  async ack(group: string, entries: ReadonlyArray<Pick<GroupEntry, 'shard' | 'id'>>): Promise<number> {
    const byShard = new Map<number, string[]>();
    for (const { shard, id } of entries) {
      if (!Number.isInteger(shard) || shard < 0 || shard >= this.shards) {
        throw new StreamgateError('bad_request', `no shard ${shard}`);
      }
      const ids = byShard.get(shard);
      if (ids) ids.push(id);
      else byShard.set(shard, [id]);
    }
    const counts = await Promise.all(
      [...byShard].map(async ([shard, ids]) => {
        try {
          return Number(await this.redis.call('XACK', this.keys.log(shard), group, ...ids));
        } catch (err) {
          throw toEngineError(err, 'acknowledging group entries');
        }
      }),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  /**
   * Takes over entries pending longer than `minIdleMs` (XAUTOCLAIM on each shard
   * from `0-0`), at most `count` (default 100). Entries trimmed from the log since
   * they were read are skipped (Redis drops them from the pending list).
   */
  async claimStale(group: string, consumer: string, options: ClaimOptions): Promise<GroupEntry[]> {
    const count = Math.max(1, Math.floor(options.count ?? DEFAULT_GROUP_COUNT));
    const minIdle = Math.max(0, Math.floor(options.minIdleMs));
    const entries: GroupEntry[] = [];
    for (let shard = 0; shard < this.shards && entries.length < count; shard++) {
      let cursor = ZERO_ID;
      for (let page = 0; page < MAX_CLAIM_PAGES && entries.length < count; page++) {
        let reply: unknown;
        try {
          reply = await this.redis.call(
            'XAUTOCLAIM', this.keys.log(shard), group, consumer, minIdle, cursor, 'COUNT', count - entries.length,
          );
        } catch (err) {
          throw toEngineError(err, 'claiming stale group entries');
        }
        // [next cursor, [[id, fields] | null, …], deleted ids (Redis 7)]
        if (!Array.isArray(reply)) break;
        const claimed: unknown = reply[1];
        if (Array.isArray(claimed)) {
          for (const entry of claimed) {
            if (!Array.isArray(entry) || typeof entry[0] !== 'string') continue;
            const event = entryToEvent(entry[0], entry[1]);
            if (event) entries.push({ shard, id: event.id, event });
          }
        }
        const next: unknown = reply[0];
        if (typeof next !== 'string' || next === ZERO_ID) break;
        cursor = next;
      }
    }
    return entries;
  }

  acquireSlots(claims: readonly SlotClaim[], connectionId: string, ttlMs: number): Promise<number> {
    return acquireSlots(this.redis, this.keys, claims, connectionId, ttlMs);
  }

  refreshSlots(held: readonly HeldSlots[], ttlMs: number): Promise<void> {
    return refreshSlots(this.redis, this.keys, held, ttlMs);
  }

  releaseSlots(names: readonly string[], connectionId: string): Promise<void> {
    return releaseSlots(this.redis, this.keys, names, connectionId);
  }

  publishSignal(signal: Signal): Promise<void> {
    return this.presence.publishSignal(signal);
  }

  subscribeSignals(listener: SignalListener): Promise<{ close(): Promise<void> }> {
    return this.presence.subscribeSignals(listener).then((sub) => {
      this.signalSubs.add(sub);
      return { close: () => (this.signalSubs.delete(sub), sub.close()) };
    });
  }

  presenceJoin(tenant: string, channel: string, entry: PresenceEntry, ttlMs: number): Promise<{ first: boolean; count: number }> {
    return this.presence.join(tenant, channel, entry, ttlMs);
  }

  presenceTouch(refs: readonly PresenceRef[], ttlMs: number): Promise<void> {
    return this.presence.touch(refs, ttlMs);
  }

  presenceSweep(tenant: string, channel: string): Promise<{ left: PresenceEntry[]; count: number; changed: boolean }> {
    return this.presence.sweep(tenant, channel);
  }

  presenceList(tenant: string, channel: string): Promise<PresenceEntry[]> {
    return this.presence.list(tenant, channel);
  }

  userChannels(tenant: string, userId: string): Promise<string[]> {
    return this.presence.userChannels(tenant, userId);
  }

  connectionsTouch(refs: ReadonlyArray<Omit<PresenceRef, 'channel'>>, ttlMs: number, options: { renewal?: boolean } = {}): Promise<void> {
    return this.presence.connectionsTouch(refs, ttlMs, options.renewal ?? false);
  }

  userSet(tenant: string, userId: string, state: UserState): Promise<void> {
    return this.presence.userSet(tenant, userId, state);
  }

  usersGet(tenant: string, userIds: readonly string[]): Promise<UserPresence[]> {
    return this.presence.usersGet(tenant, userIds);
  }

  receiptSet(tenant: string, userId: string, channel: string, kind: ReceiptKind, until: string): Promise<boolean> {
    return this.presence.receiptSet(tenant, userId, channel, kind, until);
  }

  receiptsGet(tenant: string, userId: string): Promise<ReadCursor[]> {
    return this.presence.receiptsGet(tenant, userId);
  }

  async ping(): Promise<void> {
    try {
      await this.redis.ping();
    } catch (err) {
      throw unavailable('Redis does not answer', err);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.feeds].map((f) => f.close()));
    await Promise.all([...this.signalSubs].map((s) => s.close()));
    const blocking = this.blocking;
    this.blocking = undefined;
    if (blocking) blocking.then((c) => c.disconnect(), ignore);
    // QUIT lets replies in flight arrive; a dead connection is just dropped.
    const quit = this.redis.quit().then(ignore, ignore);
    const timeout = sleep(this.options.commandTimeoutMs, undefined, { ref: false }).then(ignore);
    await Promise.race([quit, timeout]);
    this.redis.disconnect();
  }
}
