/**
 * A token bucket refilled at `rate` per second with a burst of `burst`, and the
 * memory of how long its owner has been over it (PROTOCOL §4: 100 frames/s, close
 * 4029 after 5 s over).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  /** Start of the current run of refusals; a second without refusals ends it. */
  private overSince = 0;
  private lastRefusal = 0;

  constructor(
    private readonly rate: number,
    private readonly burst: number = rate,
    now: number = Date.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Take one token; false when the bucket is empty. */
  take(now: number = Date.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    if (now - this.lastRefusal > 1000) this.overSince = now;
    this.lastRefusal = now;
    return false;
  }

  /** How long the owner has been over the limit without a second's pause, in ms. */
  overFor(now: number = Date.now()): number {
    return this.lastRefusal && now - this.lastRefusal <= 1000 ? now - this.overSince : 0;
  }

  /** Seconds until a token is available. */
  retryAfter(): number {
    return Math.max(0, (1 - this.tokens) / this.rate);
  }
}
