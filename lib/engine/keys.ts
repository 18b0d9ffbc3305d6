/**
 * Every Redis key name of the engine is built here (ARCHITECTURE §2). The `{s<n>}`
 * hash tag puts a channel's stream, meta hash and idempotency keys in the slot of its
 * shard log, so the publish script touches one slot, also on Redis Cluster.
 */

import { isValidChannel, isValidTenant } from '../protocol/channel.js';
import { badRequest } from '../errors.js';

/**
 * The shard of a channel: FNV-1a (32 bit) over `tenant + "\0" + channel`, mod `shards`.
 * Shared by both engines so a channel lives on the same shard index everywhere.
 */
export function shardOf(tenant: string, channel: string, shards: number): number {
  let h = 0x811c9dc5;
  const s = tenant + '\u0000' + channel;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    // Hash UTF-8 bytes, not UTF-16 units, so the value matches other implementations.
    if (c < 0x80) {
      h = Math.imul(h ^ c, 0x01000193);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    const bytes =
      c < 0x800
        ? [0xc0 | (c >> 6), 0x80 | (c & 0x3f)]
        : c < 0x10000
          ? [0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f)]
          : [0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f)];
    for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  }
  return (h >>> 0) % shards;
}

/** The keys of one channel, all in its shard's slot. */
export interface ChannelKeys {
  shard: number;
  /** The shard log the channel's events are appended to. */
  log: string;
  /** The channel's own capped stream (replay). */
  stream: string;
  /** Hash: `last` = latest id, `trimmed` = highest id ever trimmed. */
  meta: string;
  /** Prefix of the channel's idempotency keys; append the key itself. */
  idemPrefix: string;
}

/** Key names under one prefix (`P`) for `shards` shards. */
export class EngineKeys {
  readonly prefix: string;
  readonly shards: number;

  constructor(prefix: string, shards: number) {
    this.prefix = prefix;
    this.shards = shards;
  }

  /** `P:slots:<name>`: the connections holding a slot under `name` (connection limits). */
  slots(name: string): string {
    return `${this.prefix}:slots:${name}`;
  }

  /** Presence of a channel: `P:{s<n>}:pres:<tenant>:<channel>` (entries) and `…:presx:…` (expiries), one slot. */
  presence(tenant: string, channel: string): { entries: string; expiries: string } {
    const k = this.channel(tenant, channel);
    const name = k.stream.slice(k.stream.indexOf(':ch:') + 4);
    const tag = k.stream.slice(0, k.stream.indexOf(':ch:'));
    return { entries: `${tag}:pres:${name}`, expiries: `${tag}:presx:${name}` };
  }

  /** `P:uconn:<tenant>:<user>`: a user's live connections (zset by expiry). */
  userConnections(tenant: string, userId: string): string {
    return `${this.prefix}:uconn:${tenant}:${userId}`;
  }

  /** `P:uchan:<tenant>:<user>`: channels where the user joined presence (set). */
  userChannels(tenant: string, userId: string): string {
    return `${this.prefix}:uchan:${tenant}:${userId}`;
  }

  /** `P:user:<tenant>:<user>`: a user's own presence settings (hash). */
  user(tenant: string, userId: string): string {
    return `${this.prefix}:user:${tenant}:${userId}`;
  }

  /** `P:rc:<tenant>:<user>`: a user's read cursors (hash: channel → `delivered|read`). */
  receipts(tenant: string, userId: string): string {
    return `${this.prefix}:rc:${tenant}:${userId}`;
  }

  /** The pub/sub channel every node listens to for signals. */
  signals(): string {
    return `${this.prefix}:signals`;
  }

  /** `P:{s<n>}:log` */
  log(shard: number): string {
    return `${this.prefix}:{s${shard}}:log`;
  }

  /** Every shard log, index = shard. */
  logs(): string[] {
    const keys: string[] = [];
    for (let n = 0; n < this.shards; n++) keys.push(this.log(n));
    return keys;
  }

  /**
   * `P:{s<n>}:ch:<tenant>:<channel>`, `P:{s<n>}:meta:<tenant>:<channel>` and
   * `P:{s<n>}:idem:<tenant>:<channel>#`. Tenant ids contain no `:` and channel names
   * no `#`, so the names are unambiguous even though idempotency keys may hold either.
   */
  channel(tenant: string, channel: string): ChannelKeys {
    // Callers validate; this guards the key layout itself against direct engine users.
    if (!isValidTenant(tenant) || !isValidChannel(channel)) throw badRequest('invalid tenant or channel name');
    const shard = shardOf(tenant, channel, this.shards);
    const tag = `${this.prefix}:{s${shard}}`;
    const name = `${tenant}:${channel}`;
    return {
      shard,
      log: `${tag}:log`,
      stream: `${tag}:ch:${name}`,
      meta: `${tag}:meta:${name}`,
      idemPrefix: `${tag}:idem:${name}#`,
    };
  }

  /** `P:{s<n>}:idem:<tenant>:<channel>#<idempotency key>` */
  idem(tenant: string, channel: string, key: string): string {
    return this.channel(tenant, channel).idemPrefix + key;
  }
}
