/**
 * The node's open sessions: connection limits per user, per IP and per tenant
 * (counted across every node through the engine's slots), the one sweeper that drives
 * every session's heartbeat and token expiry (no timer per connection), and closing
 * them all on shutdown.
 */
import type { Config } from '../config/config.js';
import type { Engine, SlotClaim } from '../engine/engine.js';
import type { Session } from './session.js';

/**
 * A slot lives this long unless its node refreshes it: how long a dead node's
 * connections still count against the limits. Refreshing renews one key per user
 * (per-user limits), so it runs only as often as the TTL needs (two may fail).
 */
export const SLOT_TTL_MS = 60_000;
const SLOT_REFRESH_MS = 20_000;
const SWEEP_MS = 250;

export interface Admission {
  /** Null when admitted; else why not (the 4009 close reason). */
  refusal: string | null;
  /** The slot names held, to pass to `add`. */
  slots: string[];
}

export class ConnectionRegistry {
  private readonly sessions = new Map<Session, readonly string[]>();
  private sweeper: NodeJS.Timeout | null = null;
  private lastRefresh = Date.now();
  private refreshing = false;

  constructor(
    private readonly config: Config,
    private readonly engine: Engine,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  /**
   * Take the connection's slots under the per-user, per-IP and per-tenant limits.
   * Rejects with `unavailable` when the engine cannot count.
   */
  async admit(tenant: string, userId: string, ip: string, connectionId: string): Promise<Admission> {
    const { limits } = this.config;
    const claims: SlotClaim[] = [
      { name: `user:${tenant}:${userId}`, limit: limits.connections_per_user },
      { name: `ip:${ip}`, limit: limits.connections_per_ip },
    ];
    const reasons = [`${limits.connections_per_user} per user`, `${limits.connections_per_ip} per IP address`];
    if (limits.tenant_connections > 0) {
      claims.push({ name: `tenant:${tenant}`, limit: limits.tenant_connections });
      reasons.push(`${limits.tenant_connections} for the tenant`);
    }
    const full = await this.engine.acquireSlots(claims, connectionId, SLOT_TTL_MS);
    const slots = claims.map((c) => c.name);
    if (full === -1) return { refusal: null, slots };
    return { refusal: `connection limit reached: ${reasons[full]}`, slots: [] };
  }

  /** Give back slots of a connection that never became a session. */
  release(slots: readonly string[], connectionId: string): void {
    this.engine.releaseSlots(slots, connectionId).catch(() => undefined);
  }

  add(session: Session, slots: readonly string[]): void {
    this.sessions.set(session, slots);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
      this.sweeper.unref();
    }
  }

  /** Forget a session; false when it was never added (long-polls are not). */
  remove(session: Session): boolean {
    const slots = this.sessions.get(session);
    if (!slots) return false;
    this.sessions.delete(session);
    this.release(slots, session.id);
    if (this.sessions.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
    return true;
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of this.sessions.keys()) s.tick(now);
    if (now - this.lastRefresh >= SLOT_REFRESH_MS && !this.refreshing) {
      this.lastRefresh = now;
      this.refreshing = true;
      const held = [...this.sessions].map(([s, names]) => ({ names, connectionId: s.id }));
      // A failed refresh is retried on the next round; slots outlive two missed rounds.
      this.engine
        .refreshSlots(held, SLOT_TTL_MS)
        .catch(() => undefined)
        .finally(() => (this.refreshing = false));
    }
  }

  /** Close every session (shutdown: 1001), after writing what waits for them. */
  closeAll(code: number, reason: string): void {
    for (const s of [...this.sessions.keys()]) s.closeGracefully(code, reason);
  }

  /** Shutdown has begun: stop reading frames from every session. */
  stopReading(): void {
    for (const s of this.sessions.keys()) s.stopReading();
  }
}
