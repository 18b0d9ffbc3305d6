/**
 * Per-tenant message quota (`limits.tenant_messages_per_second`, 0 = none), counted on
 * each node: publishes over it are refused with `rate_limited` (HTTP 429 with
 * Retry-After, a WebSocket `error`).
 */
import type { Config } from '../config/config.js';
import { rateLimited } from '../errors.js';
import { TokenBucket } from './rate-limiter.js';

export class TenantQuota {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(private readonly config: Config) {}

  /** Charge `n` messages to `tenant`; throws `rate_limited` when over the quota. */
  charge(tenant: string, n = 1): void {
    const rate = this.config.limits.tenant_messages_per_second;
    if (rate <= 0) return;
    let bucket = this.buckets.get(tenant);
    if (!bucket) {
      if (this.buckets.size > 100_000) this.buckets.clear();
      this.buckets.set(tenant, (bucket = new TokenBucket(rate, rate)));
    }
    for (let i = 0; i < n; i++) {
      if (!bucket.take()) throw rateLimited(`tenant message quota of ${rate} per second exceeded`, bucket.retryAfter());
    }
  }
}
