/**
 * Reconnection delays: exponential with full jitter (AWS "Exponential Backoff and
 * Jitter"): attempt n waits a random time in [0, min(max, base·2ⁿ)), so a crowd of
 * clients spreads out instead of returning together.
 */

export interface BackoffOptions {
  /** The first ceiling. @default 1000 */
  baseMs?: number;
  /** The largest ceiling. @default 30000 */
  maxMs?: number;
  /** A random number in [0, 1), injectable for tests. @default Math.random */
  random?: () => number;
}

export class Backoff {
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;
  /** How many delays were taken since the last reset. */
  attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = Math.max(1, options.baseMs ?? 1000);
    this.maxMs = Math.max(this.baseMs, options.maxMs ?? 30_000);
    this.random = options.random ?? Math.random;
  }

  /** The ceiling of the next delay. */
  ceiling(): number {
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
  }

  /** The next delay in milliseconds; each call raises the ceiling. */
  next(): number {
    const ceiling = this.ceiling();
    this.attempt++;
    return Math.floor(Math.min(0.999999, Math.max(0, this.random())) * ceiling);
  }

  /** Start again from the base: the connection proved healthy. */
  reset(): void {
    this.attempt = 0;
  }

  /** Skip ahead to at least `attempt` (the server asked us to back off). */
  atLeast(attempt: number): void {
    this.attempt = Math.max(this.attempt, attempt);
  }
}
