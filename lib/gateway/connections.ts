/**
 * The node's open sessions: connection limits per user, per IP and per tenant, the one
 * sweeper that drives every session's heartbeat and token expiry (no timer per
 * connection), and closing them all on shutdown.
 */
import type { Config } from '../config/config.js';
import type { Session } from './session.js';

function bump(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}

export class ConnectionRegistry {
  private readonly sessions = new Set<Session>();
  private readonly perUser = new Map<string, number>();
  private readonly perIp = new Map<string, number>();
  private readonly perTenant = new Map<string, number>();
  private sweeper: NodeJS.Timeout | null = null;

  constructor(private readonly config: Config) {}

  get size(): number {
    return this.sessions.size;
  }

  /** Why a new connection must be refused (the close reason for 4009), or null. */
  refusal(tenant: string, userId: string, ip: string): string | null {
    const { limits } = this.config;
    if ((this.perUser.get(tenant + '\u0000' + userId) ?? 0) >= limits.connections_per_user) {
      return `connection limit reached: ${limits.connections_per_user} per user`;
    }
    if ((this.perIp.get(ip) ?? 0) >= limits.connections_per_ip) {
      return `connection limit reached: ${limits.connections_per_ip} per IP address`;
    }
    if (limits.tenant_connections > 0 && (this.perTenant.get(tenant) ?? 0) >= limits.tenant_connections) {
      return `connection limit reached: ${limits.tenant_connections} for the tenant`;
    }
    return null;
  }

  add(session: Session): void {
    this.sessions.add(session);
    bump(this.perUser, session.tenant + '\u0000' + session.principal.userId, 1);
    bump(this.perIp, session.info.ip, 1);
    bump(this.perTenant, session.tenant, 1);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), 250);
      this.sweeper.unref();
    }
  }

  remove(session: Session): void {
    if (!this.sessions.delete(session)) return;
    bump(this.perUser, session.tenant + '\u0000' + session.principal.userId, -1);
    bump(this.perIp, session.info.ip, -1);
    bump(this.perTenant, session.tenant, -1);
    if (this.sessions.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of this.sessions) s.tick(now);
  }

  /** Close every session (shutdown: 1001). */
  closeAll(code: number, reason: string): void {
    for (const s of [...this.sessions]) s.close(code, reason);
  }
}
