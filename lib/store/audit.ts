/**
 * Connection and publish audit, written off the hot path: rows wait in memory and are
 * inserted in batches every `flushIntervalMs`, or sooner when `flushAt` rows wait.
 * When the database fails the rows stay buffered and the next tick retries them; the
 * buffer is bounded, dropping the oldest rows (counted in `dropped`) rather than
 * growing without limit during an outage.
 */
import type { Knex } from 'knex';
import { unavailable } from '../errors.js';
import { toDate, toNumber, toNumberOrNull } from './database.js';

export type AuditTransport = 'websocket' | 'sse' | 'poll';
export type PublisherKind = 'user' | 'server';

export interface ConnectionAuditEvent {
  tenant: string;
  userId: string;
  connectionId: string;
  transport: AuditTransport;
  ip?: string | null;
  userAgent?: string | null;
  device?: string | null;
  /** When it happened. @default now */
  at?: Date;
}

export interface ConnectionClosedAuditEvent extends ConnectionAuditEvent {
  closeCode: number | null;
  durationMs: number;
}

export interface PublishAuditEvent {
  tenant: string;
  channel: string;
  event: string;
  eventId: string;
  publisherKind: PublisherKind;
  publisherId: string;
  /** When it happened. @default now */
  at?: Date;
}

export interface ConnectionAuditRow {
  id: number;
  tenant: string;
  userId: string;
  connectionId: string;
  kind: 'open' | 'close';
  transport: AuditTransport;
  ip: string | null;
  userAgent: string | null;
  device: string | null;
  closeCode: number | null;
  durationMs: number | null;
  at: Date;
}

export interface PublishAuditRow {
  id: number;
  tenant: string;
  channel: string;
  event: string;
  eventId: string;
  publisherKind: PublisherKind;
  publisherId: string;
  at: Date;
}

export interface AuditWriterOptions {
  /** Time between flushes. @default 1000 */
  flushIntervalMs?: number;
  /** Flush as soon as this many rows wait. @default 500 */
  flushAt?: number;
  /** Most rows kept while the database is failing; the oldest go first. @default 10000 */
  maxBuffered?: number;
  /** Rows per INSERT statement. @default 200 */
  chunkSize?: number;
  /** Called when a background flush fails (the rows stay buffered). */
  onError?: (err: unknown) => void;
}

type AuditTable = 'connection_audit' | 'publish_audit' | 'presence_history';

interface PendingRow {
  table: AuditTable;
  row: Record<string, string | number | Date | null>;
}

/** User agents are client-supplied; capping them bounds the buffer's memory. */
const MAX_USER_AGENT = 512;

const cap = (value: string | null | undefined, max: number): string | null =>
  value === null || value === undefined ? null : value.length > max ? value.slice(0, max) : value;

export class AuditWriter {
  /** Rows lost because the buffer was full (or written after `close`). */
  dropped = 0;

  private buffer: PendingRow[] = [];
  /** Rows taken by the write in progress (they return to `buffer` if it fails). */
  private writingRows = 0;
  private readonly flushAt: number;
  private readonly maxBuffered: number;
  private readonly chunkSize: number;
  private readonly onError: (err: unknown) => void;
  private readonly timer: NodeJS.Timeout;
  private tail: Promise<void> = Promise.resolve();
  private running = 0;
  private failing = false;
  private closed = false;

  constructor(
    private readonly knex: Knex,
    options: AuditWriterOptions = {},
  ) {
    this.flushAt = options.flushAt ?? 500;
    this.maxBuffered = options.maxBuffered ?? 10_000;
    this.chunkSize = options.chunkSize ?? 200;
    this.onError = options.onError ?? (() => {});
    this.timer = setInterval(() => this.background(), options.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  /** Rows not yet written, including those of a write in progress. */
  get buffered(): number {
    return this.buffer.length + this.writingRows;
  }

  connectionOpened(e: ConnectionAuditEvent): void {
    this.push('connection_audit', this.connectionRow(e, 'open', null, null));
  }

  connectionClosed(e: ConnectionClosedAuditEvent): void {
    this.push('connection_audit', this.connectionRow(e, 'close', e.closeCode, Math.round(e.durationMs)));
  }

  published(e: PublishAuditEvent): void {
    this.push('publish_audit', {
      tenant: e.tenant,
      channel: e.channel,
      event: e.event,
      event_id: e.eventId,
      publisher_kind: e.publisherKind,
      publisher_id: e.publisherId,
      at: e.at ?? new Date(),
    });
  }

  /** A user's presence settings changed (status, device, custom status). */
  presenceChanged(e: { tenant: string; userId: string; status: string; device: string | null; customStatus: string | null; at?: Date }): void {
    this.push('presence_history', {
      tenant: e.tenant,
      user_id: e.userId,
      status: e.status,
      device: e.device,
      custom_status: cap(e.customStatus, 512),
      at: e.at ?? new Date(),
    });
  }

  /**
   * Write every buffered row. Rejects with `unavailable` when the database fails; the
   * rows that could not be written stay buffered for the next flush.
   */
  flush(): Promise<void> {
    this.running++;
    const run = this.tail.then(() => this.write()).finally(() => this.running--);
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Stop the timer and write what is buffered; rows recorded afterwards are dropped. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.flush();
  }

  /** The tenant's latest connection events that have been written, newest first. */
  async recentConnections(tenant: string, limit = 100): Promise<ConnectionAuditRow[]> {
    const rows: Array<Record<string, unknown>> = await this.knex('connection_audit')
      .select('*')
      .where({ tenant })
      .orderBy([{ column: 'at', order: 'desc' }, { column: 'id', order: 'desc' }])
      .limit(limit);
    return rows.map((r) => ({
      id: toNumber(r.id),
      tenant: String(r.tenant),
      userId: String(r.user_id),
      connectionId: String(r.connection_id),
      kind: r.kind as ConnectionAuditRow['kind'],
      transport: r.transport as AuditTransport,
      ip: (r.ip as string | null) ?? null,
      userAgent: (r.user_agent as string | null) ?? null,
      device: (r.device as string | null) ?? null,
      closeCode: toNumberOrNull(r.close_code),
      durationMs: toNumberOrNull(r.duration_ms),
      at: toDate(r.at),
    }));
  }

  /** The tenant's latest publishes that have been written, newest first. */
  async recentPublishes(tenant: string, limit = 100): Promise<PublishAuditRow[]> {
    const rows: Array<Record<string, unknown>> = await this.knex('publish_audit')
      .select('*')
      .where({ tenant })
      .orderBy([{ column: 'at', order: 'desc' }, { column: 'id', order: 'desc' }])
      .limit(limit);
    return rows.map((r) => ({
      id: toNumber(r.id),
      tenant: String(r.tenant),
      channel: String(r.channel),
      event: String(r.event),
      eventId: String(r.event_id),
      publisherKind: r.publisher_kind as PublisherKind,
      publisherId: String(r.publisher_id),
      at: toDate(r.at),
    }));
  }

  private connectionRow(
    e: ConnectionAuditEvent,
    kind: 'open' | 'close',
    closeCode: number | null,
    durationMs: number | null,
  ): PendingRow['row'] {
    return {
      tenant: e.tenant,
      user_id: e.userId,
      connection_id: e.connectionId,
      kind,
      transport: e.transport,
      ip: e.ip ?? null,
      user_agent: cap(e.userAgent, MAX_USER_AGENT),
      device: cap(e.device, MAX_USER_AGENT),
      close_code: closeCode,
      duration_ms: durationMs,
      at: e.at ?? new Date(),
    };
  }

  private push(table: AuditTable, row: PendingRow['row']): void {
    if (this.closed) {
      this.dropped++;
      return;
    }
    this.buffer.push({ table, row });
    if (this.buffer.length > this.maxBuffered) {
      this.buffer.shift();
      this.dropped++;
    }
    // While the database is failing, retries wait for the timer instead of every row.
    if (this.buffer.length >= this.flushAt && this.running === 0 && !this.failing) this.background();
  }

  private background(): void {
    if (this.buffer.length === 0 || this.running > 0) return;
    this.flush().catch(this.onError);
  }

  private async write(): Promise<void> {
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    this.writingRows = batch.length;
    let outcome: { failed: PendingRow[]; error: unknown };
    try {
      outcome = await this.insert(batch);
    } finally {
      this.writingRows = 0;
    }
    const { failed, error } = outcome;
    this.failing = failed.length > 0;
    if (!this.failing) return;
    // The failed rows are older than anything recorded meanwhile: put them first.
    this.buffer = failed.concat(this.buffer);
    const excess = this.buffer.length - this.maxBuffered;
    if (excess > 0) {
      this.buffer.splice(0, excess);
      this.dropped += excess;
    }
    throw unavailable('audit rows could not be written: database unavailable', error);
  }

  /** Insert each table's rows in one transaction (so a retry never duplicates); report what failed. */
  private async insert(batch: PendingRow[]): Promise<{ failed: PendingRow[]; error: unknown }> {
    const byTable = new Map<AuditTable, PendingRow[]>();
    for (const p of batch) {
      const list = byTable.get(p.table);
      if (list) list.push(p);
      else byTable.set(p.table, [p]);
    }
    const failed: PendingRow[] = [];
    let error: unknown;
    for (const [table, rows] of byTable) {
      try {
        await this.knex.batchInsert(
          table,
          rows.map((p) => p.row),
          this.chunkSize,
        );
      } catch (err) {
        error ??= err;
        failed.push(...rows);
      }
    }
    return { failed, error };
  }
}
