/**
 * Presence (ARCHITECTURE §4): one entry per connection and channel, renewed by this
 * node, so several tabs and devices aggregate and a dead node's users leave by
 * themselves. A closed connection's entry lingers for a grace period, so a reconnect
 * sends no leave/join pair. Leaves are found by sweeping expired entries; exactly one
 * sweeping node gets each, and announces it to every node through a signal.
 */
import type { Principal } from '../auth/principal.js';
import { namespaceSettings, type Config } from '../config/config.js';
import type { Engine, PresenceEntry, PresenceRef, Signal, UserPresence } from '../engine/engine.js';
import { Throttle } from './throttle.js';

/** Sweeps for expired entries run this often (a leave is announced at most this late). */
const SWEEP_MS = 1_000;
/** Channels swept at once (pipelined on the Redis connection). */
const SWEEP_CONCURRENCY = 64;

export type Status = 'online' | 'away' | 'busy';

export interface PresenceUser {
  id: string;
  name: string | null;
  status: Status | 'offline';
  device: string | null;
  custom_status: string | null;
  last_seen: string | null;
}

/** What presence needs of a connection. */
export interface PresenceHolder {
  readonly id: string;
  readonly principal: { tenant: string; userId: string; name?: string };
  /**
   * `presenceTtlMs` is set for a connection that the client's next request renews (a
   * long-poll): its entries last that long, and a short one ends without rewriting them.
   */
  readonly info: { device: string | null; presenceTtlMs?: number };
  /** When the connection opened (ms). */
  readonly openedAt: number;
}

/**
 * A long-poll ending sooner than this after it began leaves its entries as its start
 * set them (they still last past the next poll's deadline) and only notes last_seen,
 * at most once per LAST_SEEN_WRITE_MS per user: a client polling several times a
 * second would otherwise rewrite its presence on every answer.
 */
export const SHORT_POLL_MS = 5_000;
const LAST_SEEN_WRITE_MS = 10_000;

export interface PresenceHistory {
  presenceChanged(row: { tenant: string; userId: string; status: string; device: string | null; customStatus: string | null; at?: Date }): void;
}

export interface PresenceDeps {
  config: Config;
  engine: Engine;
  history?: PresenceHistory;
}

function userObject(id: string, name: string | null, state: UserPresence | undefined, online: boolean, device: string | null): PresenceUser {
  return {
    id,
    name,
    status: online ? state?.status ?? 'online' : 'offline',
    device: state?.device ?? device,
    custom_status: state?.customStatus ?? null,
    last_seen: online ? new Date().toISOString() : state?.lastSeen ?? null,
  };
}

function key(tenant: string, channel: string): string {
  return tenant + '\u0000' + channel;
}

export class Presence {
  /** This node's entries: connection → its channels with presence. */
  private readonly held = new Map<PresenceHolder, Set<string>>();
  /** Channels this node sweeps: those it has held entries in lately. */
  private readonly swept = new Map<string, { tenant: string; channel: string; quietSince: number | null }>();
  private readonly updates = new Throttle(2);
  /** Users whose last_seen this node wrote lately at the end of a short poll: when. */
  private readonly lastSeenWrites = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private lastRenew = Date.now();
  private busy = false;
  private renewing = false;

  constructor(private readonly deps: PresenceDeps) {}

  enabled(channel: string): boolean {
    return namespaceSettings(this.deps.config, channel).presence;
  }

  private anonymous(channel: string): boolean {
    return namespaceSettings(this.deps.config, channel).anonymous;
  }

  private start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), SWEEP_MS);
    this.timer.unref();
  }

  /** A connection (of any transport) opened: its user is online. */
  /** A live entry lasts this long unless renewed (`presence.timeout_ms`). */
  private get ttlMs(): number {
    return this.deps.config.presence.timeout_ms;
  }

  /** Renewals come often enough that two may fail before an entry lapses. */
  private get renewMs(): number {
    return Math.max(500, Math.floor(this.ttlMs / 3));
  }

  async connected(holder: PresenceHolder, ttlMs = this.ttlMs): Promise<void> {
    if (!this.held.has(holder)) this.held.set(holder, new Set());
    this.start();
    const { tenant, userId } = holder.principal;
    await this.deps.engine.connectionsTouch([{ tenant, userId, connectionId: holder.id }], ttlMs);
  }

  /** A connection ended: its entries linger for `graceMs`, then expire and are swept. */
  async disconnected(holder: PresenceHolder, graceMs = this.deps.config.presence.grace_ms): Promise<void> {
    const channels = this.held.get(holder);
    if (!channels) return;
    this.held.delete(holder);
    const { tenant, userId } = holder.principal;
    if (holder.info.presenceTtlMs !== undefined && Date.now() - holder.openedAt < SHORT_POLL_MS) {
      const k = key(tenant, userId);
      const now = Date.now();
      if (now - (this.lastSeenWrites.get(k) ?? 0) < LAST_SEEN_WRITE_MS) return;
      this.lastSeenWrites.set(k, now);
      await this.deps.engine.userSet(tenant, userId, { lastSeen: new Date(now).toISOString() });
      return;
    }
    const refs: PresenceRef[] = [...channels].map((channel) => ({ tenant, channel, connectionId: holder.id, userId }));
    await Promise.all([
      refs.length ? this.deps.engine.presenceTouch(refs, graceMs) : Promise.resolve(),
      this.deps.engine.connectionsTouch([{ tenant, userId, connectionId: holder.id }], graceMs),
      this.deps.engine.userSet(tenant, userId, { lastSeen: new Date().toISOString() }),
    ]);
  }

  /** The connection subscribed to a presence channel: join it, announcing a first join. */
  async join(holder: PresenceHolder, channel: string, ttlMs = this.ttlMs): Promise<void> {
    if (!this.enabled(channel)) return;
    const { tenant, userId, name } = holder.principal;
    let channels = this.held.get(holder);
    if (!channels) this.held.set(holder, (channels = new Set()));
    // A connection subscribing again is already present: renew, announce nothing.
    const again = channels.has(channel);
    channels.add(channel);
    this.swept.set(key(tenant, channel), { tenant, channel, quietSince: null });
    this.start();
    const entry: PresenceEntry = { connectionId: holder.id, userId, device: holder.info.device };
    if (name !== undefined) entry.name = name;
    const { first, count } = await this.deps.engine.presenceJoin(tenant, channel, entry, ttlMs);
    if (!first || again) return;
    this.deps.history?.presenceChanged({ tenant, userId, status: 'online', device: holder.info.device, customStatus: null });
    if (this.anonymous(channel)) return this.signalCount(tenant, channel, count);
    const [state] = await this.deps.engine.usersGet(tenant, [userId]);
    const user = userObject(userId, name ?? null, state, true, holder.info.device);
    // Others learn of the join; the joining user knows already.
    await this.signal(tenant, channel, { type: 'presence', channel, action: 'join', user }, userId);
  }

  /** The connection unsubscribed: its entry goes at once (the leave follows the sweep). */
  async leave(holder: PresenceHolder, channel: string): Promise<void> {
    const channels = this.held.get(holder);
    if (!channels?.delete(channel)) return;
    const { tenant, userId } = holder.principal;
    await this.deps.engine.presenceTouch([{ tenant, channel, connectionId: holder.id, userId }], 0);
    await this.sweep(tenant, channel);
  }

  /** Renewals and sweeps run side by side: a slow sweep never delays a renewal. */
  private tick(): void {
    const now = Date.now();
    if (!this.renewing && now - this.lastRenew >= this.renewMs) {
      this.lastRenew = now;
      this.renewing = true;
      void this.renew().finally(() => (this.renewing = false));
    }
    if (!this.busy) {
      this.busy = true;
      void this.sweepAll(now).finally(() => (this.busy = false));
    }
  }

  private async renew(): Promise<void> {
    // Grouped by TTL: a held long-poll keeps its own (longer) one.
    const byTtl = new Map<number, { refs: PresenceRef[]; conns: Array<Omit<PresenceRef, 'channel'>> }>();
    for (const [h, channels] of this.held) {
      const ttl = h.info.presenceTtlMs ?? this.ttlMs;
      let group = byTtl.get(ttl);
      if (!group) byTtl.set(ttl, (group = { refs: [], conns: [] }));
      const { tenant, userId } = h.principal;
      group.conns.push({ tenant, userId, connectionId: h.id });
      for (const channel of channels) group.refs.push({ tenant, channel, connectionId: h.id, userId });
    }
    const now = Date.now();
    for (const [k, at] of this.lastSeenWrites) if (now - at >= LAST_SEEN_WRITE_MS) this.lastSeenWrites.delete(k);
    try {
      await Promise.all(
        [...byTtl].flatMap(([ttl, { refs, conns }]) => [
          refs.length ? this.deps.engine.presenceTouch(refs, ttl) : undefined,
          this.deps.engine.connectionsTouch(conns, ttl, { renewal: true }),
        ]),
      );
    } catch {
      // Redis trouble: the next renewal tries again; entries outlive two missed ones.
    }
  }

  private async sweepAll(now: number): Promise<void> {
    const all = [...this.swept];
    for (let i = 0; i < all.length; i += SWEEP_CONCURRENCY) {
      await Promise.all(
        all.slice(i, i + SWEEP_CONCURRENCY).map(async ([k, s]) => {
          const count = await this.sweep(s.tenant, s.channel).catch(() => -1);
          // Forget channels that have been empty for a while; a join brings them back.
          if (count === 0) {
            s.quietSince ??= now;
            if (now - s.quietSince > this.ttlMs * 2) this.swept.delete(k);
          } else if (count > 0) {
            s.quietSince = null;
          }
        }),
      );
    }
  }

  /** Remove expired entries and announce the users who left. Resolves the users still present. */
  private async sweep(tenant: string, channel: string): Promise<number> {
    const { left, count, changed } = await this.deps.engine.presenceSweep(tenant, channel);
    if (!changed || left.length === 0) return count;
    if (this.anonymous(channel)) {
      await this.signalCount(tenant, channel, count);
      return count;
    }
    const states = await this.deps.engine.usersGet(tenant, left.map((e) => e.userId));
    const now = new Date().toISOString();
    await Promise.all(
      left.map(async (e, i) => {
        const user = userObject(e.userId, e.name ?? null, states[i], false, e.device);
        // A user whose node died never said goodbye: the leave is their last sighting.
        if (!states[i]?.online) {
          user.last_seen = states[i]?.lastSeen ?? now;
          if (!states[i]?.lastSeen) await this.deps.engine.userSet(tenant, e.userId, { lastSeen: now });
          this.deps.history?.presenceChanged({ tenant, userId: e.userId, status: 'offline', device: e.device, customStatus: null });
        } else {
          user.last_seen ??= now;
        }
        return this.signal(tenant, channel, { type: 'presence', channel, action: 'leave', user });
      }),
    );
    return count;
  }

  private signalCount(tenant: string, channel: string, count: number): Promise<void> {
    return this.signal(tenant, channel, { type: 'presence', channel, action: 'count', count });
  }

  private signal(tenant: string, channel: string, frame: object, exceptUser?: string): Promise<void> {
    const signal: Signal = { tenant, channel, kind: 'presence', frame: JSON.stringify(frame) };
    if (exceptUser !== undefined) signal.exceptUser = exceptUser;
    return this.deps.engine.publishSignal(signal);
  }

  /** `members`: the channel's present users (only a count in anonymous namespaces). */
  async members(tenant: string, channel: string): Promise<{ members: PresenceUser[]; count: number }> {
    const entries = await this.deps.engine.presenceList(tenant, channel);
    const byUser = new Map<string, PresenceEntry>();
    for (const e of entries) if (!byUser.has(e.userId)) byUser.set(e.userId, e);
    if (this.anonymous(channel)) return { members: [], count: byUser.size };
    const ids = [...byUser.keys()];
    const states = ids.length ? await this.deps.engine.usersGet(tenant, ids) : [];
    const members = ids.map((id, i) => userObject(id, byUser.get(id)!.name ?? null, states[i], true, byUser.get(id)!.device));
    return { members, count: members.length };
  }

  /** Many users' presence at once (one round trip). */
  async users(tenant: string, ids: readonly string[]): Promise<Array<Omit<PresenceUser, 'name'>>> {
    const states = await this.deps.engine.usersGet(tenant, ids);
    return states.map((s) => {
      const u = userObject(s.id, null, s, s.online, s.device ?? null);
      return { id: u.id, status: u.status, last_seen: u.last_seen, device: u.device, custom_status: u.custom_status };
    });
  }

  /**
   * Set a user's own status, custom status or device; at most 2 updates per second per
   * user reach the channels (the last one wins), and only their subscribers.
   */
  async setStatus(principal: Principal & { kind: 'user' }, patch: { status?: Status; customStatus?: string | null; device?: string | null }): Promise<void> {
    const { tenant, userId } = principal;
    const state: { status?: Status; customStatus?: string | null; device?: string | null } = {};
    if (patch.status !== undefined) state.status = patch.status;
    if (patch.customStatus !== undefined) state.customStatus = patch.customStatus;
    if (patch.device !== undefined) state.device = patch.device;
    await this.deps.engine.userSet(tenant, userId, state);
    const [after] = await this.deps.engine.usersGet(tenant, [userId]);
    this.deps.history?.presenceChanged({
      tenant,
      userId,
      status: after?.status ?? 'online',
      device: after?.device ?? null,
      customStatus: after?.customStatus ?? null,
    });
    this.updates.submit(`${tenant}\u0000${userId}`, () => void this.announceUpdate(principal).catch(() => undefined));
  }

  private async announceUpdate(principal: Principal & { kind: 'user' }): Promise<void> {
    const { tenant, userId } = principal;
    const [channels, [state]] = await Promise.all([this.deps.engine.userChannels(tenant, userId), this.deps.engine.usersGet(tenant, [userId])]);
    const user = userObject(userId, principal.name ?? null, state, state?.online ?? false, state?.device ?? null);
    await Promise.all(
      channels
        .filter((c) => this.enabled(c) && !this.anonymous(c))
        .map((channel) => this.signal(tenant, channel, { type: 'presence', channel, action: 'update', user })),
    );
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.updates.clear();
  }
}
