/**
 * The in-process engine: one node, nothing to install. The embedded default of
 * `npm start`; it keeps the same contract as the Redis engine (ids, retention,
 * `recovered`, idempotency, live feed, consumer groups) so nothing above the engine
 * can tell them apart, except that it is lost on restart and shared with no other node.
 */
import { unavailable } from '../errors.js';
import { compareIds, idTime } from '../protocol/event-id.js';
import {
  IDEMPOTENCY_TTL_SECONDS,
  type ClaimOptions,
  type Engine,
  type GroupEntry,
  type GroupReadOptions,
  type HistoryQuery,
  type HeldSlots,
  type HistoryResult,
  type LogEvent,
  type LogFeed,
  type LogListener,
  type PublishRequest,
  type PublishResult,
  type RetentionResolver,
  type SlotClaim,
  type Signal,
  type SignalListener,
  type PresenceEntry,
  type PresenceRef,
  type UserState,
  type UserPresence,
  type ReceiptKind,
  type ReadCursor,
} from './engine.js';

export interface MemoryEngineOptions {
  retention: RetentionResolver;
  /** Entries kept in the node log for feeds and consumer groups. @default 100000 */
  logMaxLength?: number;
}

interface ChannelLog {
  events: LogEvent[];
  /** Highest id ever trimmed, or null. */
  trimmed: string | null;
  last: string | null;
}

interface Pending {
  consumer: string;
  deliveredAt: number;
  event: LogEvent;
}

interface Group {
  /** Index into the log of the next entry never delivered to this group. */
  next: number;
  pending: Map<string, Pending>;
}

interface Feed {
  listener: LogListener;
  /** Absolute log index of the next entry to deliver. */
  next: number;
  /** Id of the last event delivered (or the starting position). */
  lastId: string;
  closed: boolean;
}

export class MemoryEngine implements Engine {
  readonly kind = 'memory' as const;
  readonly shards = 1;

  private readonly retention: RetentionResolver;
  private readonly logMaxLength: number;
  private readonly channels = new Map<string, ChannelLog>();
  private readonly idempotency = new Map<string, { id: string; expiresAt: number }>();
  /** The node log; `log[i]` has absolute index `logBase + i`. */
  private log: LogEvent[] = [];
  private logBase = 0;
  private readonly feeds = new Set<Feed>();
  private readonly groups = new Map<string, Group>();
  private readonly groupWaiters = new Set<() => void>();
  private readonly signalListeners = new Set<SignalListener>();
  /** Presence: tenant\0channel → connection id → entry and expiry (ms). */
  private readonly presence = new Map<string, Map<string, { entry: PresenceEntry; expiry: number }>>();
  /** tenant\0user → connection id → expiry (ms). */
  private readonly userConnections = new Map<string, Map<string, number>>();
  private readonly users = new Map<string, UserState>();
  private readonly userChannelSets = new Map<string, Set<string>>();
  private readonly receipts = new Map<string, Map<string, ReadCursor>>();
  /** Connection slots: name → connection id → expiry (ms). */
  private readonly slots = new Map<string, Map<string, number>>();
  private lastMs = 0;
  private lastSeq = 0;
  private flushScheduled = false;
  private closed = false;
  private publishesSinceSweep = 0;
  private lastSweep = Date.now();

  constructor(options: MemoryEngineOptions) {
    this.retention = options.retention;
    this.logMaxLength = options.logMaxLength ?? 100_000;
  }

  private nextId(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.lastSeq = 0;
    } else {
      this.lastSeq += 1;
    }
    return `${this.lastMs}-${this.lastSeq}`;
  }

  private check(): void {
    if (this.closed) throw unavailable('engine is closed');
  }

  async publish(req: PublishRequest): Promise<PublishResult> {
    this.check();
    const chKey = req.tenant + '\u0000' + req.channel;
    const now = Date.now();
    let idemKey: string | undefined;
    if (req.idempotencyKey) {
      idemKey = chKey + '\u0000' + req.idempotencyKey;
      const hit = this.idempotency.get(idemKey);
      if (hit && hit.expiresAt > now) {
        return { id: hit.id, timestamp: new Date(idTime(hit.id)).toISOString(), duplicate: true };
      }
    }
    const id = this.nextId();
    const event: LogEvent = {
      tenant: req.tenant,
      id,
      channel: req.channel,
      event: req.event,
      dataJson: req.dataJson,
      timestamp: new Date(idTime(id)).toISOString(),
      priority: req.priority ?? 'normal',
      publisher: req.publisher ?? null,
    };
    let ch = this.channels.get(chKey);
    if (!ch) {
      ch = { events: [], trimmed: null, last: null };
      this.channels.set(chKey, ch);
    }
    ch.events.push(event);
    ch.last = id;
    this.trim(ch, req.channel, idTime(id));
    if (idemKey) this.idempotency.set(idemKey, { id, expiresAt: now + IDEMPOTENCY_TTL_SECONDS * 1000 });
    this.appendToLog(event);
    if (++this.publishesSinceSweep >= 1000 || now - this.lastSweep > 60_000) this.sweep(now);
    return { id, timestamp: event.timestamp, duplicate: false };
  }

  /** Keep at least `count` events younger than `seconds`, trimming in small batches. */
  private trim(ch: ChannelLog, channel: string, nowMs: number): void {
    const { count, seconds } = this.retention(channel);
    const slack = Math.min(1000, Math.max(1, Math.floor(count / 10)));
    let drop = 0;
    if (ch.events.length > count + slack) drop = ch.events.length - count;
    const boundary = nowMs - seconds * 1000;
    while (drop < ch.events.length && idTime(ch.events[drop]!.id) < boundary) drop++;
    if (drop > 0) {
      ch.trimmed = ch.events[drop - 1]!.id;
      ch.events.splice(0, drop);
    }
  }

  /**
   * Forget expired idempotency keys and channels idle past their retention (as Redis
   * expires idle channel streams), so ephemeral channels do not leak.
   */
  private sweep(now: number): void {
    this.publishesSinceSweep = 0;
    this.lastSweep = now;
    for (const [k, v] of this.idempotency) if (v.expiresAt <= now) this.idempotency.delete(k);
    for (const [k, ch] of this.channels) {
      const channel = k.slice(k.indexOf('\u0000') + 1);
      if (ch.last !== null && idTime(ch.last) < now - this.retention(channel).seconds * 1000) this.channels.delete(k);
    }
  }

  private appendToLog(event: LogEvent): void {
    this.log.push(event);
    const excess = this.log.length - this.logMaxLength;
    if (excess > 0) {
      this.log.splice(0, excess);
      this.logBase += excess;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushFeeds());
    }
    for (const wake of this.groupWaiters) wake();
    this.groupWaiters.clear();
  }

  private flushFeeds(): void {
    this.flushScheduled = false;
    const end = this.logBase + this.log.length;
    for (const feed of this.feeds) {
      if (feed.closed || feed.next >= end) continue;
      const start = Math.max(feed.next, this.logBase);
      const batch = this.log.slice(start - this.logBase);
      feed.next = end;
      feed.lastId = batch[batch.length - 1]!.id;
      try {
        feed.listener(batch);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  async history(tenant: string, channel: string, query: HistoryQuery): Promise<HistoryResult> {
    this.check();
    const ch = this.channels.get(tenant + '\u0000' + channel);
    if (ch) this.trim(ch, channel, Date.now());
    const events = ch?.events ?? [];
    const position = ch?.last ?? null;
    if (query.since === undefined) {
      return { events: events.slice(Math.max(0, events.length - query.limit)), recovered: true, position };
    }
    const since = query.since;
    let lo = 0;
    let hi = events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareIds(events[mid]!.id, since) <= 0) lo = mid + 1;
      else hi = mid;
    }
    let recovered: boolean;
    if (ch) recovered = ch.trimmed === null || compareIds(since, ch.trimmed) >= 0;
    // No record at all: a real position older than the retention may have lost events.
    else recovered = since === '0-0' || idTime(since) >= Date.now() - this.retention(channel).seconds * 1000;
    return { events: events.slice(lo, lo + query.limit), recovered, position };
  }

  async position(tenant: string, channel: string): Promise<string | null> {
    this.check();
    return this.channels.get(tenant + '\u0000' + channel)?.last ?? null;
  }

  async subscribeLog(from: string[] | 'latest', onEvents: LogListener): Promise<LogFeed> {
    this.check();
    let next = this.logBase + this.log.length;
    const lastId = from === 'latest' ? this.log[this.log.length - 1]?.id ?? '0-0' : from[0] ?? '0-0';
    if (from !== 'latest') {
      const pos = from[0] ?? '0-0';
      let i = 0;
      while (i < this.log.length && compareIds(this.log[i]!.id, pos) <= 0) i++;
      next = this.logBase + i;
      if (next < this.logBase + this.log.length && !this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flushFeeds());
      }
    }
    const feed: Feed = { listener: onEvents, next, lastId, closed: false };
    this.feeds.add(feed);
    return {
      positions: () => [feed.lastId],
      close: async () => {
        feed.closed = true;
        this.feeds.delete(feed);
      },
    };
  }

  private group(name: string): Group {
    const g = this.groups.get(name);
    if (!g) throw unavailable(`no consumer group ${name}: call ensureGroup first`);
    return g;
  }

  async ensureGroup(group: string, start: 'beginning' | 'latest' = 'beginning'): Promise<void> {
    this.check();
    if (this.groups.has(group)) return;
    this.groups.set(group, { next: start === 'beginning' ? this.logBase : this.logBase + this.log.length, pending: new Map() });
  }

  async readGroup(group: string, consumer: string, options: GroupReadOptions = {}): Promise<GroupEntry[]> {
    this.check();
    const count = options.count ?? 100;
    const g = this.group(group);
    const take = (): GroupEntry[] => {
      const start = Math.max(g.next, this.logBase);
      const slice = this.log.slice(start - this.logBase, start - this.logBase + count);
      g.next = start + slice.length;
      const now = Date.now();
      return slice.map((event) => {
        g.pending.set(event.id, { consumer, deliveredAt: now, event });
        return { shard: 0, id: event.id, event };
      });
    };
    let got = take();
    if (got.length || !options.blockMs) return got;
    await new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.groupWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, options.blockMs);
      this.groupWaiters.add(wake);
    });
    got = this.closed ? [] : take();
    return got;
  }

  async ack(group: string, entries: ReadonlyArray<Pick<GroupEntry, 'shard' | 'id'>>): Promise<number> {
    this.check();
    const g = this.group(group);
    let n = 0;
    for (const e of entries) if (g.pending.delete(e.id)) n++;
    return n;
  }

  async claimStale(group: string, consumer: string, options: ClaimOptions): Promise<GroupEntry[]> {
    this.check();
    const g = this.group(group);
    const now = Date.now();
    const out: GroupEntry[] = [];
    for (const [id, p] of g.pending) {
      if (out.length >= (options.count ?? 100)) break;
      if (now - p.deliveredAt < options.minIdleMs) continue;
      p.consumer = consumer;
      p.deliveredAt = now;
      out.push({ shard: 0, id, event: p.event });
    }
    return out;
  }

  async acquireSlots(claims: readonly SlotClaim[], connectionId: string, ttlMs: number): Promise<number> {
    this.check();
    const now = Date.now();
    for (const [i, claim] of claims.entries()) {
      const held = this.slots.get(claim.name);
      if (!held) continue;
      for (const [id, expiry] of held) if (expiry <= now) held.delete(id);
      if (!held.has(connectionId) && held.size >= claim.limit) return i;
    }
    for (const claim of claims) {
      let held = this.slots.get(claim.name);
      if (!held) this.slots.set(claim.name, (held = new Map()));
      held.set(connectionId, now + ttlMs);
    }
    return -1;
  }

  async refreshSlots(held: readonly HeldSlots[], ttlMs: number): Promise<void> {
    this.check();
    const expiry = Date.now() + ttlMs;
    // Only slots still held: a slot released meanwhile stays released (as Redis's ZADD XX).
    for (const h of held) {
      for (const name of h.names) {
        const slot = this.slots.get(name);
        if (slot?.has(h.connectionId)) slot.set(h.connectionId, expiry);
      }
    }
  }

  async releaseSlots(names: readonly string[], connectionId: string): Promise<void> {
    for (const name of names) {
      const held = this.slots.get(name);
      if (!held) continue;
      held.delete(connectionId);
      if (held.size === 0) this.slots.delete(name);
    }
  }

  async publishSignal(signal: Signal): Promise<void> {
    this.check();
    setImmediate(() => {
      for (const l of this.signalListeners) l(signal);
    });
  }

  async subscribeSignals(listener: SignalListener): Promise<{ close(): Promise<void> }> {
    this.check();
    this.signalListeners.add(listener);
    return { close: async () => void this.signalListeners.delete(listener) };
  }

  private presenceOf(tenant: string, channel: string): Map<string, { entry: PresenceEntry; expiry: number }> {
    const k = tenant + '\u0000' + channel;
    let m = this.presence.get(k);
    if (!m) this.presence.set(k, (m = new Map()));
    return m;
  }

  private static distinctLive(m: Map<string, { entry: PresenceEntry; expiry: number }>, now: number): Set<string> {
    const users = new Set<string>();
    for (const p of m.values()) if (p.expiry > now) users.add(p.entry.userId);
    return users;
  }

  async presenceJoin(tenant: string, channel: string, entry: PresenceEntry, ttlMs: number): Promise<{ first: boolean; count: number }> {
    this.check();
    const now = Date.now();
    const m = this.presenceOf(tenant, channel);
    let first = true;
    // Renewing this connection's own live entry (every long-poll does) is no join either.
    for (const p of m.values()) if (p.entry.userId === entry.userId && p.expiry > now) first = false;
    m.set(entry.connectionId, { entry: { ...entry }, expiry: now + ttlMs });
    const uk = tenant + '\u0000' + entry.userId;
    let chans = this.userChannelSets.get(uk);
    if (!chans) this.userChannelSets.set(uk, (chans = new Set()));
    chans.add(channel);
    return { first, count: MemoryEngine.distinctLive(m, now).size };
  }

  async presenceTouch(refs: readonly PresenceRef[], ttlMs: number): Promise<void> {
    this.check();
    const expiry = Date.now() + ttlMs;
    for (const r of refs) {
      const p = this.presence.get(r.tenant + '\u0000' + r.channel)?.get(r.connectionId);
      if (p) p.expiry = expiry;
    }
  }

  async presenceSweep(tenant: string, channel: string): Promise<{ left: PresenceEntry[]; count: number; changed: boolean }> {
    this.check();
    const now = Date.now();
    const m = this.presenceOf(tenant, channel);
    const removed: PresenceEntry[] = [];
    for (const [id, p] of m) {
      if (p.expiry <= now) {
        m.delete(id);
        removed.push(p.entry);
      }
    }
    const live = MemoryEngine.distinctLive(m, now);
    const left = new Map<string, PresenceEntry>();
    for (const e of removed) if (!live.has(e.userId)) left.set(e.userId, e);
    for (const userId of left.keys()) this.userChannelSets.get(tenant + '\u0000' + userId)?.delete(channel);
    if (m.size === 0) this.presence.delete(tenant + '\u0000' + channel);
    return { left: [...left.values()], count: live.size, changed: removed.length > 0 };
  }

  async presenceList(tenant: string, channel: string): Promise<PresenceEntry[]> {
    this.check();
    const now = Date.now();
    const m = this.presence.get(tenant + '\u0000' + channel);
    if (!m) return [];
    return [...m.values()].filter((p) => p.expiry > now).map((p) => ({ ...p.entry }));
  }

  async userChannels(tenant: string, userId: string): Promise<string[]> {
    this.check();
    return [...(this.userChannelSets.get(tenant + '\u0000' + userId) ?? [])];
  }

  async connectionsTouch(refs: ReadonlyArray<Omit<PresenceRef, 'channel'>>, ttlMs: number): Promise<void> {
    this.check();
    const expiry = Date.now() + ttlMs;
    for (const r of refs) {
      const k = r.tenant + '\u0000' + r.userId;
      let m = this.userConnections.get(k);
      if (!m) this.userConnections.set(k, (m = new Map()));
      m.set(r.connectionId, expiry);
    }
  }

  async userSet(tenant: string, userId: string, state: UserState): Promise<void> {
    this.check();
    const k = tenant + '\u0000' + userId;
    const prev = this.users.get(k) ?? {};
    const next: UserState = { ...prev };
    for (const [key, value] of Object.entries(state) as Array<[keyof UserState, never]>) if (value !== undefined) next[key] = value;
    this.users.set(k, next);
  }

  async usersGet(tenant: string, userIds: readonly string[]): Promise<UserPresence[]> {
    this.check();
    const now = Date.now();
    return userIds.map((id) => {
      const k = tenant + '\u0000' + id;
      const conns = this.userConnections.get(k);
      let online = false;
      if (conns) {
        for (const [c, expiry] of conns) {
          if (expiry > now) online = true;
          else conns.delete(c);
        }
      }
      return { ...this.users.get(k), id, online };
    });
  }

  async receiptSet(tenant: string, userId: string, channel: string, kind: ReceiptKind, until: string): Promise<boolean> {
    this.check();
    const k = tenant + '\u0000' + userId;
    let m = this.receipts.get(k);
    if (!m) this.receipts.set(k, (m = new Map()));
    const cur = m.get(channel) ?? { channel, delivered: null, read: null };
    const field = kind === 'read' ? 'read' : 'delivered';
    const prev = cur[field];
    if (prev !== null && compareIds(until, prev) <= 0) return false;
    cur[field] = until;
    // Reading implies delivery.
    if (kind === 'read' && (cur.delivered === null || compareIds(until, cur.delivered) > 0)) cur.delivered = until;
    m.set(channel, cur);
    return true;
  }

  async receiptsGet(tenant: string, userId: string): Promise<ReadCursor[]> {
    this.check();
    return [...(this.receipts.get(tenant + '\u0000' + userId)?.values() ?? [])].map((c) => ({ ...c }));
  }

  async ping(): Promise<void> {
    this.check();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const f of this.feeds) f.closed = true;
    this.feeds.clear();
    for (const wake of this.groupWaiters) wake();
    this.groupWaiters.clear();
  }
}
