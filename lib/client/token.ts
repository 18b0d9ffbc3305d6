/**
 * The user's token: the current one, a single in-flight refresh, and when to refresh
 * next (from the JWT's `exp`, read without verifying: the server does that).
 */
import { StreamgateClientError } from './errors.js';

/** Refresh this long before `exp`, as the server's `token_expiring` does. */
const REFRESH_BEFORE_MS = 60_000;
/** A token that expires within this is not used for a new connection. */
const MIN_VALIDITY_MS = 5_000;

export class TokenSource {
  private token: string | null;
  private inflight: Promise<string> | null = null;
  /** When the current token was obtained (ms). */
  obtainedAt = Date.now();

  constructor(
    initial: string | undefined,
    private readonly getToken: (() => string | Promise<string>) | undefined,
    /** A getToken that has not answered within this has failed (so a hung one cannot stall the client). */
    private readonly timeoutMs = 15_000,
  ) {
    this.token = initial ?? null;
  }

  get canRefresh(): boolean {
    return this.getToken !== undefined;
  }

  get current(): string | null {
    return this.token;
  }

  /** A token good for a new connection: the current one, or a new one when it is missing or about to expire. */
  async fresh(): Promise<string> {
    if (this.inflight) return this.inflight;
    const exp = this.expiresAt();
    if (this.token && (exp === null || exp - Date.now() > MIN_VALIDITY_MS || !this.getToken)) return this.token;
    return this.refresh();
  }

  /** Ask `getToken` for a new token; concurrent callers share one call. */
  refresh(): Promise<string> {
    if (!this.getToken) {
      return Promise.reject(new StreamgateClientError('unauthorized', 'the token was refused and there is no getToken to renew it'));
    }
    this.inflight ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new StreamgateClientError('timeout', `getToken did not answer within ${this.timeoutMs} ms`)), this.timeoutMs);
        });
        const token = await Promise.race([Promise.resolve().then(this.getToken!), timeout]);
        if (typeof token !== 'string' || token === '') throw new StreamgateClientError('unauthorized', 'getToken returned no token');
        this.token = token;
        this.obtainedAt = Date.now();
        return token;
      } finally {
        clearTimeout(timer);
        this.inflight = null;
      }
    })();
    return this.inflight;
  }

  /** The token's `exp` in ms, or null when it has none or is not a JWT. */
  expiresAt(): number | null {
    const exp = this.token ? jwtClaims(this.token)?.exp : undefined;
    return typeof exp === 'number' ? exp * 1000 : null;
  }

  /** The user the token names (`sub`), or null when it is not a JWT. */
  subject(): string | null {
    const sub = this.token ? jwtClaims(this.token)?.sub : undefined;
    return typeof sub === 'string' ? sub : null;
  }

  /**
   * When to renew: a minute before `exp`, but not before half the token's life, so a
   * short-lived token is not renewed in a loop.
   */
  refreshAt(): number | null {
    const exp = this.expiresAt();
    if (exp === null || !this.getToken) return null;
    return Math.max(exp - REFRESH_BEFORE_MS, this.obtainedAt + (exp - this.obtainedAt) / 2);
  }
}

function jwtClaims(token: string): { exp?: unknown; sub?: unknown } | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims: unknown = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return claims && typeof claims === 'object' ? (claims as { exp?: unknown; sub?: unknown }) : null;
  } catch {
    return null;
  }
}
