/**
 * The database copy of read cursors (delivered/read up to an event id, per user and
 * channel). The engine holds the live ones; this copy survives a Redis that keeps
 * nothing on disk, written in batches (the last value per user and channel wins) off
 * the hot path.
 */
import type { Knex } from 'knex';
import { unavailable } from '../errors.js';
import { toDate } from './database.js';

export interface StoredReadCursor {
  channel: string;
  delivered: string | null;
  read: string | null;
  updatedAt: Date;
}

interface Pending {
  tenant: string;
  userId: string;
  channel: string;
  delivered?: string;
  read?: string;
}

export class ReadCursorStore {
  private pending = new Map<string, Pending>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly knex: Knex,
    options: { flushIntervalMs?: number } = {},
  ) {
    this.timer = setInterval(() => void this.flush().catch(() => undefined), options.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  /** Record a cursor that moved (the engine only reports forward moves). */
  receipt(row: { tenant: string; userId: string; channel: string; kind: 'delivered' | 'read'; until: string }): void {
    const key = `${row.tenant}\u0000${row.userId}\u0000${row.channel}`;
    let p = this.pending.get(key);
    if (!p) {
      if (this.pending.size >= 100_000) return; // bounded while the database is away
      this.pending.set(key, (p = { tenant: row.tenant, userId: row.userId, channel: row.channel }));
    }
    if (row.kind === 'read') {
      p.read = row.until;
      p.delivered = row.until;
    } else {
      p.delivered = row.until;
    }
  }

  /** Write what is pending; rows that fail stay pending for the next flush. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write());
    return this.flushing;
  }

  private async write(): Promise<void> {
    if (this.pending.size === 0) return;
    const rows = this.pending;
    this.pending = new Map();
    const now = new Date();
    try {
      await this.knex.transaction(async (trx) => {
        for (const p of rows.values()) {
          const row: Record<string, unknown> = { tenant: p.tenant, user_id: p.userId, channel: p.channel, updated_at: now };
          const merge: string[] = ['updated_at'];
          if (p.delivered !== undefined) (row.delivered_until = p.delivered), merge.push('delivered_until');
          if (p.read !== undefined) (row.read_until = p.read), merge.push('read_until');
          await trx('read_cursors').insert(row).onConflict(['tenant', 'user_id', 'channel']).merge(merge);
        }
      });
    } catch (err) {
      for (const [k, v] of rows) if (!this.pending.has(k)) this.pending.set(k, v);
      throw unavailable('cannot save read cursors', err);
    }
  }

  /** A user's stored cursors. */
  async list(tenant: string, userId: string): Promise<StoredReadCursor[]> {
    const rows: Array<Record<string, unknown>> = await this.knex('read_cursors').where({ tenant, user_id: userId }).orderBy('channel');
    return rows.map((r) => ({
      channel: String(r.channel),
      delivered: (r.delivered_until as string | null) ?? null,
      read: (r.read_until as string | null) ?? null,
      updatedAt: toDate(r.updated_at),
    }));
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush().catch(() => undefined);
  }
}
