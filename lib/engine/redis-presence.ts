/**
 * Presence, signals and read cursors on Redis (ARCHITECTURE §4). Presence entries are
 * per connection and expire unless their node renews them, so a dead node's users
 * leave by themselves; signals go through pub/sub, never into the log.
 */
import type { Redis } from 'ioredis';
import type { PresenceEntry, PresenceRef, ReadCursor, ReceiptKind, Signal, SignalListener, UserPresence, UserState } from './engine.js';
import type { EngineKeys } from './keys.js';
import { runScript, toEngineError } from './script-loader.js';
import { renewSortedSets } from './redis-slots.js';

/** Presence keys outlive their longest entry by this much. */
const KEY_TTL_SLACK_MS = 60_000;
const PIPELINE_CHUNK = 1000;
/** A user's presence channel set is forgotten a day after their last join. */
const USER_CHANNELS_TTL_MS = 86_400_000;

function entryJson(e: PresenceEntry): string {
  const o: Record<string, unknown> = { u: e.userId, d: e.device };
  if (e.name !== undefined) o.n = e.name;
  return JSON.stringify(o);
}

function parseEntry(connectionId: string, json: string): PresenceEntry | null {
  try {
    const o = JSON.parse(json) as { u?: unknown; n?: unknown; d?: unknown };
    if (typeof o.u !== 'string') return null;
    const e: PresenceEntry = { connectionId, userId: o.u, device: typeof o.d === 'string' ? o.d : null };
    if (typeof o.n === 'string') e.name = o.n;
    return e;
  } catch {
    return null;
  }
}

/** Members renewed by one ZADD. */
const MEMBERS_PER_COMMAND = 500;

function groupBy<T>(items: readonly T[], keyOf: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = keyOf(item);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(item);
  }
  return groups;
}

async function inChunks<T>(redis: Redis, items: readonly T[], add: (p: ReturnType<Redis['pipeline']>, item: T) => void, doing: string): Promise<void> {
  try {
    for (let i = 0; i < items.length; i += PIPELINE_CHUNK) {
      const p = redis.pipeline();
      for (const item of items.slice(i, i + PIPELINE_CHUNK)) add(p, item);
      await p.exec();
    }
  } catch (err) {
    throw toEngineError(err, doing);
  }
}

export class RedisPresence {
  constructor(
    private readonly redis: Redis,
    private readonly keys: EngineKeys,
  ) {}

  async publishSignal(signal: Signal): Promise<void> {
    const msg: Record<string, string> = { t: signal.tenant, c: signal.channel, k: signal.kind, f: signal.frame };
    if (signal.exceptUser !== undefined) msg.x = signal.exceptUser;
    try {
      await this.redis.publish(this.keys.signals(), JSON.stringify(msg));
    } catch (err) {
      throw toEngineError(err, 'sending a signal');
    }
  }

  /** Listens on its own connection (a subscribed connection can do nothing else). */
  async subscribeSignals(listener: SignalListener): Promise<{ close(): Promise<void> }> {
    const conn = this.redis.duplicate({ enableOfflineQueue: true, commandTimeout: undefined });
    conn.on('error', () => undefined);
    conn.on('message', (_channel: string, message: string) => {
      try {
        const m = JSON.parse(message) as { t: string; c: string; k: string; f: string; x?: string };
        const s: Signal = { tenant: m.t, channel: m.c, kind: m.k, frame: m.f };
        if (m.x !== undefined) s.exceptUser = m.x;
        listener(s);
      } catch {
        // not one of ours
      }
    });
    try {
      await conn.subscribe(this.keys.signals());
    } catch (err) {
      conn.disconnect();
      throw toEngineError(err, 'listening for signals');
    }
    return {
      close: async () => {
        conn.disconnect();
      },
    };
  }

  async join(tenant: string, channel: string, entry: PresenceEntry, ttlMs: number): Promise<{ first: boolean; count: number }> {
    const k = this.keys.presence(tenant, channel);
    const now = Date.now();
    const uchan = this.keys.userChannels(tenant, entry.userId);
    try {
      const [r] = await Promise.all([
        runScript(this.redis, 'presence_join', [k.entries, k.expiries], [
          now, now + ttlMs, entry.connectionId, entry.userId, entryJson(entry), ttlMs + KEY_TTL_SLACK_MS,
        ]) as Promise<[number, number]>,
        this.redis.sadd(uchan, channel),
        this.redis.pexpire(uchan, USER_CHANNELS_TTL_MS),
      ]);
      return { first: Number(r[0]) === 1, count: Number(r[1]) };
    } catch (err) {
      throw toEngineError(err, 'joining presence');
    }
  }

  touch(refs: readonly PresenceRef[], ttlMs: number): Promise<void> {
    const expiry = Date.now() + ttlMs;
    // Grouped by channel: one ZADD with many members and one PEXPIRE pair per channel.
    const groups = groupBy(refs, (r) => `${r.tenant}\u0000${r.channel}`);
    return inChunks(this.redis, [...groups.values()], (p, group) => {
      const k = this.keys.presence(group[0]!.tenant, group[0]!.channel);
      for (let i = 0; i < group.length; i += MEMBERS_PER_COMMAND) {
        const args: Array<string | number> = [];
        for (const r of group.slice(i, i + MEMBERS_PER_COMMAND)) args.push(expiry, r.connectionId);
        p.zadd(k.expiries, 'XX', ...args);
      }
      p.pexpire(k.expiries, ttlMs + KEY_TTL_SLACK_MS);
      p.pexpire(k.entries, ttlMs + KEY_TTL_SLACK_MS);
    }, 'renewing presence');
  }

  async sweep(tenant: string, channel: string): Promise<{ left: PresenceEntry[]; count: number; changed: boolean }> {
    const k = this.keys.presence(tenant, channel);
    let r: unknown[];
    try {
      r = (await runScript(this.redis, 'presence_sweep', [k.entries, k.expiries], [Date.now()])) as unknown[];
    } catch (err) {
      throw toEngineError(err, 'sweeping presence');
    }
    const left: PresenceEntry[] = [];
    for (const json of r.slice(2)) {
      const e = parseEntry('', String(json));
      if (e) left.push(e);
    }
    if (left.length) {
      const p = this.redis.pipeline();
      for (const e of left) p.srem(this.keys.userChannels(tenant, e.userId), channel);
      await p.exec().catch(() => undefined);
    }
    return { left, count: Number(r[0]), changed: Number(r[1]) === 1 };
  }

  async list(tenant: string, channel: string): Promise<PresenceEntry[]> {
    const k = this.keys.presence(tenant, channel);
    let live: string[];
    let all: Record<string, string>;
    try {
      const tx = this.redis.multi();
      tx.zrangebyscore(k.expiries, `(${Date.now()}`, '+inf');
      tx.hgetall(k.entries);
      const res = await tx.exec();
      if (!res) return [];
      live = (res[0]![1] as string[]) ?? [];
      all = (res[1]![1] as Record<string, string>) ?? {};
    } catch (err) {
      throw toEngineError(err, 'listing presence');
    }
    const out: PresenceEntry[] = [];
    for (const conn of live) {
      const json = all[conn];
      const e = json === undefined ? null : parseEntry(conn, json);
      if (e) out.push(e);
    }
    return out;
  }

  async userChannels(tenant: string, userId: string): Promise<string[]> {
    try {
      return await this.redis.smembers(this.keys.userChannels(tenant, userId));
    } catch (err) {
      throw toEngineError(err, 'reading presence');
    }
  }

  /**
   * A renewal (every few seconds, thousands of users per node) goes out in a few
   * zset_renew calls and skips the prune (readers count by score anyway); opening and
   * closing a connection prune the user's expired ones.
   */
  async connectionsTouch(refs: ReadonlyArray<Omit<PresenceRef, 'channel'>>, ttlMs: number, renewal: boolean): Promise<void> {
    const now = Date.now();
    const byKey = groupBy(refs, (r) => this.keys.userConnections(r.tenant, r.userId));
    if (renewal) {
      const ids = new Map([...byKey].map(([key, group]) => [key, group.map((r) => r.connectionId)]));
      try {
        return await renewSortedSets(this.redis, ids, now + ttlMs, ttlMs + KEY_TTL_SLACK_MS, false);
      } catch (err) {
        throw toEngineError(err, 'renewing connections');
      }
    }
    return inChunks(this.redis, [...byKey], (p, [key, group]) => {
      p.zremrangebyscore(key, '-inf', now);
      const args: Array<string | number> = [];
      for (const r of group) args.push(now + ttlMs, r.connectionId);
      p.zadd(key, ...args);
      p.pexpire(key, ttlMs + KEY_TTL_SLACK_MS);
    }, 'renewing connections');
  }


  async userSet(tenant: string, userId: string, state: UserState): Promise<void> {
    const fields: string[] = [];
    if (state.status !== undefined) fields.push('status', state.status);
    if (state.customStatus !== undefined) fields.push('custom_status', JSON.stringify(state.customStatus));
    if (state.device !== undefined) fields.push('device', JSON.stringify(state.device));
    if (state.lastSeen !== undefined) fields.push('last_seen', state.lastSeen);
    if (!fields.length) return;
    try {
      await this.redis.hset(this.keys.user(tenant, userId), ...fields);
    } catch (err) {
      throw toEngineError(err, 'saving presence');
    }
  }

  async usersGet(tenant: string, userIds: readonly string[]): Promise<UserPresence[]> {
    const now = Date.now();
    const p = this.redis.pipeline();
    for (const id of userIds) {
      p.zcount(this.keys.userConnections(tenant, id), `(${now}`, '+inf');
      p.hgetall(this.keys.user(tenant, id));
    }
    let res: Array<[Error | null, unknown]> | null;
    try {
      res = await p.exec();
    } catch (err) {
      throw toEngineError(err, 'reading presence');
    }
    return userIds.map((id, i) => {
      const [e1, count] = res![2 * i]!;
      const [e2, hash] = res![2 * i + 1]!;
      if (e1 || e2) throw toEngineError(e1 ?? e2, 'reading presence');
      const h = (hash ?? {}) as Record<string, string>;
      const u: UserPresence = { id, online: Number(count) > 0 };
      if (h.status === 'online' || h.status === 'away' || h.status === 'busy') u.status = h.status;
      if (h.custom_status !== undefined) u.customStatus = JSON.parse(h.custom_status) as string | null;
      if (h.device !== undefined) u.device = JSON.parse(h.device) as string | null;
      if (h.last_seen !== undefined) u.lastSeen = h.last_seen;
      return u;
    });
  }

  async receiptSet(tenant: string, userId: string, channel: string, kind: ReceiptKind, until: string): Promise<boolean> {
    try {
      return Number(await runScript(this.redis, 'receipt_set', [this.keys.receipts(tenant, userId)], [channel, kind, until])) === 1;
    } catch (err) {
      throw toEngineError(err, 'saving a receipt');
    }
  }

  async receiptsGet(tenant: string, userId: string): Promise<ReadCursor[]> {
    let h: Record<string, string>;
    try {
      h = await this.redis.hgetall(this.keys.receipts(tenant, userId));
    } catch (err) {
      throw toEngineError(err, 'reading receipts');
    }
    return Object.entries(h).map(([channel, v]) => {
      const [d = '', r = ''] = v.split('|');
      return { channel, delivered: d || null, read: r || null };
    });
  }
}
