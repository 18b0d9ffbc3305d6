/**
 * Server keys: `sgk_<id>_<secret>`, shown once at creation. Only the SHA-256 of the
 * secret is stored; the secret is 32 random bytes, so a fast hash is as strong as a
 * slow one and keeps verification cheap.
 *
 * Lookups are cached per process for `cacheTtlMs` (positive and negative), so a
 * publish costs no database round trip. `revoke` clears this instance's entry at once;
 * other nodes keep accepting a revoked key until their entry expires, so the
 * revocation delay across a cluster is the cache TTL (5 s by default).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, unavailable } from '../errors.js';
import { isValidTenant } from '../protocol/channel.js';
import { toDate, toDateOrNull } from './database.js';

export interface ServerKeyStoreOptions {
  /** How long a lookup (found or not) is trusted; also the revocation delay for other nodes. @default 5000 */
  cacheTtlMs?: number;
  /** Most key ids kept in the cache; the least recently used go first. @default 10000 */
  cacheSize?: number;
}

export interface CreatedServerKey {
  id: string;
  /** The full key: shown once, never stored. */
  key: string;
  tenant: string;
  createdAt: Date;
}

export interface ServerKeyIdentity {
  id: string;
  tenant: string;
}

export interface ServerKeyInfo {
  id: string;
  tenant: string;
  label: string | null;
  createdAt: Date;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

interface CachedKey {
  tenant: string;
  hash: Buffer;
  revoked: boolean;
  lastUsedAt: number;
}

interface CacheEntry {
  expires: number;
  lookup: Promise<CachedKey | null>;
}

interface ServerKeyRow {
  id: string;
  tenant: string;
  secret_hash: string;
  label: string | null;
  created_at: unknown;
  revoked_at: unknown;
  last_used_at: unknown;
}

const KEY_RE = /^sgk_([0-9A-Za-z]{12})_([A-Za-z0-9_-]{43})$/;
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** `last_used_at` is advisory: refresh it at most this often per key and node. */
const TOUCH_INTERVAL_MS = 60_000;

function base62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
      if (byte < 248) out += BASE62[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

const sha256 = (secret: string): Buffer => createHash('sha256').update(secret).digest();

export class ServerKeyStore {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly touches = new Set<Promise<void>>();
  private readonly ttl: number;
  private readonly maxEntries: number;

  constructor(
    private readonly knex: Knex,
    options: ServerKeyStoreOptions = {},
  ) {
    this.ttl = options.cacheTtlMs ?? 5000;
    this.maxEntries = options.cacheSize ?? 10_000;
  }

  /** Create a key for `tenant`. The returned `key` is the only copy of the secret. */
  async create(tenant: string, label?: string): Promise<CreatedServerKey> {
    if (!isValidTenant(tenant)) throw badRequest(`invalid tenant id: ${JSON.stringify(tenant)}`);
    const id = base62(12);
    const secret = randomBytes(32).toString('base64url');
    const createdAt = new Date();
    await this.knex('server_keys').insert({
      id,
      tenant,
      secret_hash: sha256(secret).toString('hex'),
      label: label ?? null,
      created_at: createdAt,
    });
    this.cache.delete(id);
    return { id, key: `sgk_${id}_${secret}`, tenant, createdAt };
  }

  /**
   * The key's id and tenant, or `null` for a malformed, unknown, revoked or wrong key.
   * Rejects with `unavailable` when the database cannot be reached.
   */
  async verify(key: string): Promise<ServerKeyIdentity | null> {
    const match = typeof key === 'string' ? KEY_RE.exec(key) : null;
    if (!match) return null;
    const id = match[1]!;
    const found = await this.lookup(id);
    if (!found || found.revoked) return null;
    if (found.hash.length !== 32 || !timingSafeEqual(sha256(match[2]!), found.hash)) return null;
    const now = Date.now();
    if (now - found.lastUsedAt >= TOUCH_INTERVAL_MS) {
      found.lastUsedAt = now;
      this.touch(id, new Date(now));
    }
    return { id, tenant: found.tenant };
  }

  /** Revoke a key (only within `tenant` when given). False when it was unknown or already revoked. */
  async revoke(id: string, tenant?: string): Promise<boolean> {
    const query = this.knex('server_keys').where({ id }).whereNull('revoked_at');
    if (tenant !== undefined) query.andWhere({ tenant });
    const changed = await query.update({ revoked_at: new Date() });
    this.cache.delete(id);
    return Number(changed) > 0;
  }

  /** The tenant's keys, oldest first, without their hashes. */
  async list(tenant: string): Promise<ServerKeyInfo[]> {
    const rows: ServerKeyRow[] = await this.knex('server_keys')
      .select('id', 'tenant', 'label', 'created_at', 'revoked_at', 'last_used_at')
      .where({ tenant })
      .orderBy([{ column: 'created_at' }, { column: 'id' }]);
    return rows.map((r) => ({
      id: r.id,
      tenant: r.tenant,
      label: r.label ?? null,
      createdAt: toDate(r.created_at),
      revokedAt: toDateOrNull(r.revoked_at),
      lastUsedAt: toDateOrNull(r.last_used_at),
    }));
  }

  /** Wait for pending `last_used_at` updates (before closing the database). */
  async flush(): Promise<void> {
    while (this.touches.size) await Promise.all([...this.touches]);
  }

  private lookup(id: string): Promise<CachedKey | null> {
    const now = Date.now();
    const cached = this.cache.get(id);
    if (cached && cached.expires > now) {
      // Re-insert so the Map's order is least recently used first.
      this.cache.delete(id);
      this.cache.set(id, cached);
      return cached.lookup;
    }
    const lookup = this.load(id);
    const entry: CacheEntry = { expires: now + this.ttl, lookup };
    this.cache.delete(id);
    this.cache.set(id, entry);
    while (this.cache.size > this.maxEntries) {
      this.cache.delete(this.cache.keys().next().value!);
    }
    // A failed lookup must not be remembered: the next verify asks again.
    lookup.catch(() => {
      if (this.cache.get(id) === entry) this.cache.delete(id);
    });
    return lookup;
  }

  private async load(id: string): Promise<CachedKey | null> {
    let row: Pick<ServerKeyRow, 'tenant' | 'secret_hash' | 'revoked_at' | 'last_used_at'> | undefined;
    try {
      row = await this.knex('server_keys')
        .first('tenant', 'secret_hash', 'revoked_at', 'last_used_at')
        .where({ id });
    } catch (err) {
      throw unavailable('server keys cannot be read: database unavailable', err);
    }
    if (!row) return null;
    return {
      tenant: row.tenant,
      hash: Buffer.from(row.secret_hash, 'hex'),
      revoked: row.revoked_at !== null && row.revoked_at !== undefined,
      lastUsedAt: toDateOrNull(row.last_used_at)?.getTime() ?? 0,
    };
  }

  private touch(id: string, at: Date): void {
    const update: Promise<void> = this.knex('server_keys')
      .where({ id })
      .update({ last_used_at: at })
      .then(
        () => undefined,
        () => undefined, // advisory: a failed update is retried on a later use
      )
      .finally(() => this.touches.delete(update));
    this.touches.add(update);
  }
}
