/**
 * The notification history: one row per (event, recipient), its read state, and
 * the delivery state of each row per channel (web push, FCM, email).
 *
 * A notification's id is derived from its tenant, channel, event id and recipient,
 * so recording the same event twice (a log entry redelivered to the notifier) finds
 * the first row instead of adding a second.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { isPriority, type Priority } from '../protocol/frames.js';
import { toDate, toDateOrNull, toJsonObject, toNumber } from './database.js';

export const DELIVERY_STATES = ['queued', 'delayed', 'sent', 'failed', 'no_target', 'suppressed'] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];

export interface DeliveryRecord {
  state: DeliveryState;
  attempts: number;
  error: string | null;
  updatedAt: Date;
}

export interface NewNotification {
  tenant: string;
  userId: string;
  channel: string;
  event: string;
  eventId: string;
  category: string;
  priority: Priority;
  title: string;
  body: string;
  data: Record<string, unknown>;
  createdAt: Date;
}

export interface Notification extends NewNotification {
  id: string;
  readAt: Date | null;
  /** Per delivery channel; filled by `list` and `get`. */
  delivery: Record<string, DeliveryRecord>;
}

export interface HistoryPage {
  notifications: Notification[];
  /** Pass as `before` for the next (older) page; null on the last page. */
  next: { createdAt: Date; id: string } | null;
}

export interface HistoryQuery {
  /** @default 50, at most 200 */
  limit?: number;
  /** Only notifications older than this one (keyset paging). */
  before?: { createdAt: Date; id: string };
  /** Only unread ones. @default false */
  unreadOnly?: boolean;
}

export interface DeliveryUpdate {
  tenant: string;
  notificationId: string;
  channel: string;
  state: DeliveryState;
  attempts?: number;
  error?: string | null;
  jobId?: string | null;
}

export const MAX_HISTORY_LIMIT = 200;
const DEFAULT_HISTORY_LIMIT = 50;
/** Rows per insert: well under SQLite's bound-variable limit. */
const INSERT_CHUNK = 100;
const MAX_ERROR_LENGTH = 1000;

interface NotificationRow {
  id: string;
  tenant: string;
  user_id: string;
  channel: string;
  event: string;
  event_id: string;
  category: string;
  priority: string;
  title: string;
  body: string;
  data: string;
  created_at: unknown;
  read_at: unknown;
}

interface DeliveryRow {
  notification_id: string;
  channel: string;
  state: string;
  attempts: unknown;
  error: string | null;
  updated_at: unknown;
}

/** The id of the notification of `eventId` on `channel` for `userId`: 32 hex digits. */
export function notificationId(tenant: string, channel: string, eventId: string, userId: string): string {
  return createHash('sha256').update(`${tenant}\n${channel}\n${eventId}\n${userId}`).digest('hex').slice(0, 32);
}

function toNotification(row: NotificationRow): Notification {
  return {
    id: row.id,
    tenant: row.tenant,
    userId: row.user_id,
    channel: row.channel,
    event: row.event,
    eventId: row.event_id,
    category: row.category,
    priority: isPriority(row.priority) ? row.priority : 'normal',
    title: row.title,
    body: row.body,
    data: toJsonObject(row.data),
    createdAt: toDate(row.created_at),
    readAt: toDateOrNull(row.read_at),
    delivery: {},
  };
}

function toDelivery(row: DeliveryRow): DeliveryRecord {
  const state = (DELIVERY_STATES as readonly string[]).includes(row.state) ? (row.state as DeliveryState) : 'failed';
  return { state, attempts: toNumber(row.attempts), error: row.error ?? null, updatedAt: toDate(row.updated_at) };
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export class NotificationStore {
  constructor(private readonly knex: Knex) {}

  /**
   * Store notifications, each once: rows whose id exists already are left as they
   * are. Resolves with every row (new or found) and the ids that were new, as the
   * insert itself reports them (`ON CONFLICT DO NOTHING RETURNING id`), so two
   * notifiers storing the same rows at once never both count them as new.
   */
  async record(items: readonly NewNotification[]): Promise<{ notifications: Notification[]; created: Set<string> }> {
    if (items.length === 0) return { notifications: [], created: new Set() };
    const byId = new Map(items.map((n) => [notificationId(n.tenant, n.channel, n.eventId, n.userId), n]));
    const withIds = [...byId].map(([id, n]) => ({ n, id }));
    const created = new Set<string>();
    for (const part of chunks(withIds, INSERT_CHUNK)) {
      const inserted: Array<{ id: string } | string> = await this.knex('notifications')
        .insert(
          part.map(({ n, id }) => ({
            id,
            tenant: n.tenant,
            user_id: n.userId,
            channel: n.channel,
            event: n.event,
            event_id: n.eventId,
            category: n.category,
            priority: n.priority,
            title: n.title,
            body: n.body,
            data: JSON.stringify(n.data),
            created_at: n.createdAt,
            read_at: null,
          })),
        )
        .onConflict('id')
        .ignore()
        .returning('id');
      for (const r of inserted) created.add(typeof r === 'string' ? r : r.id);
    }
    const notifications: Notification[] = [];
    for (const part of chunks(withIds, INSERT_CHUNK)) {
      const rows: NotificationRow[] = await this.knex('notifications').select('*').whereIn('id', part.map((p) => p.id));
      notifications.push(...rows.map(toNotification));
    }
    return { notifications, created };
  }

  /** One notification (of `userId` when given), with its delivery states. */
  async get(tenant: string, id: string, userId?: string): Promise<Notification | null> {
    const query = this.knex('notifications').first('*').where({ tenant, id });
    if (userId !== undefined) query.andWhere({ user_id: userId });
    const row: NotificationRow | undefined = await query;
    if (!row) return null;
    const n = toNotification(row);
    n.delivery = (await this.deliveries(tenant, [n.id])).get(n.id) ?? {};
    return n;
  }

  /** A user's notifications, newest first, with their delivery states. */
  async list(tenant: string, userId: string, query: HistoryQuery = {}): Promise<HistoryPage> {
    const limit = Math.min(MAX_HISTORY_LIMIT, Math.max(1, Math.floor(query.limit ?? DEFAULT_HISTORY_LIMIT)));
    const q = this.knex('notifications').select('*').where({ tenant, user_id: userId });
    if (query.unreadOnly) q.whereNull('read_at');
    const before = query.before;
    if (before) {
      q.andWhere((w) => {
        w.where('created_at', '<', before.createdAt).orWhere((e) => e.where('created_at', '=', before.createdAt).andWhere('id', '<', before.id));
      });
    }
    const rows: NotificationRow[] = await q.orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(limit + 1);
    const page = rows.slice(0, limit).map(toNotification);
    const states = await this.deliveries(tenant, page.map((n) => n.id));
    for (const n of page) n.delivery = states.get(n.id) ?? {};
    const last = page[page.length - 1];
    return { notifications: page, next: rows.length > limit && last ? { createdAt: last.createdAt, id: last.id } : null };
  }

  /** The badge: how many of the user's notifications are unread. */
  async unreadCount(tenant: string, userId: string): Promise<number> {
    const row = (await this.knex('notifications').where({ tenant, user_id: userId }).whereNull('read_at').count('* as n').first()) as { n: unknown } | undefined;
    return row ? toNumber(row.n) : 0;
  }

  /** Mark these notifications of the user read; resolves with how many were unread. */
  async markRead(tenant: string, userId: string, ids: readonly string[], at: Date = new Date()): Promise<number> {
    let changed = 0;
    for (const part of chunks(ids, INSERT_CHUNK)) {
      changed += Number(await this.knex('notifications').where({ tenant, user_id: userId }).whereIn('id', part).whereNull('read_at').update({ read_at: at }));
    }
    return changed;
  }

  /** Mark every unread notification of the user read (those created up to `until`, when given). */
  async markAllRead(tenant: string, userId: string, until?: Date, at: Date = new Date()): Promise<number> {
    const q = this.knex('notifications').where({ tenant, user_id: userId }).whereNull('read_at');
    if (until) q.andWhere('created_at', '<=', until);
    return Number(await q.update({ read_at: at }));
  }

  /** Create or change the delivery state of a notification on one channel. */
  async setDelivery(update: DeliveryUpdate, at: Date = new Date()): Promise<void> {
    const changes: Record<string, unknown> = { state: update.state, updated_at: at };
    if (update.attempts !== undefined) changes.attempts = update.attempts;
    if (update.error !== undefined) changes.error = update.error === null ? null : update.error.slice(0, MAX_ERROR_LENGTH);
    if (update.jobId !== undefined) changes.job_id = update.jobId;
    await this.knex('notification_deliveries')
      .insert({
        tenant: update.tenant,
        notification_id: update.notificationId,
        channel: update.channel,
        attempts: 0,
        error: null,
        job_id: null,
        ...changes,
      })
      .onConflict(['tenant', 'notification_id', 'channel'])
      .merge(changes);
  }

  /**
   * Record deliveries as queued (or delayed) unless they have a state already: a
   * redelivered event never turns a sent delivery back into a queued one.
   */
  async initDeliveries(updates: readonly DeliveryUpdate[], at: Date = new Date()): Promise<void> {
    for (const part of chunks(updates, INSERT_CHUNK)) {
      await this.knex('notification_deliveries')
        .insert(
          part.map((u) => ({
            tenant: u.tenant,
            notification_id: u.notificationId,
            channel: u.channel,
            state: u.state,
            attempts: u.attempts ?? 0,
            error: u.error ?? null,
            job_id: u.jobId ?? null,
            updated_at: at,
          })),
        )
        .onConflict(['tenant', 'notification_id', 'channel'])
        .ignore();
    }
  }

  /** Delivery states by notification id, then by channel. */
  async deliveries(tenant: string, ids: readonly string[]): Promise<Map<string, Record<string, DeliveryRecord>>> {
    const out = new Map<string, Record<string, DeliveryRecord>>();
    for (const part of chunks(ids, INSERT_CHUNK)) {
      const rows: DeliveryRow[] = await this.knex('notification_deliveries')
        .select('notification_id', 'channel', 'state', 'attempts', 'error', 'updated_at')
        .where({ tenant })
        .whereIn('notification_id', part);
      for (const r of rows) {
        const byChannel = out.get(r.notification_id) ?? {};
        byChannel[r.channel] = toDelivery(r);
        out.set(r.notification_id, byChannel);
      }
    }
    return out;
  }

  /**
   * Delete notifications (and their delivery states) created before `before`,
   * `batch` rows at a time, at most `maxBatches` times; resolves with how many.
   */
  async pruneBefore(before: Date, options: { batch?: number; maxBatches?: number } = {}): Promise<number> {
    const batch = Math.max(1, Math.min(5000, Math.floor(options.batch ?? 1000)));
    const maxBatches = Math.max(1, Math.floor(options.maxBatches ?? 10_000));
    let deleted = 0;
    for (let round = 0; round < maxBatches; round++) {
      const rows: Array<{ tenant: string; id: string }> = await this.knex('notifications').select('tenant', 'id').where('created_at', '<', before).orderBy('created_at').limit(batch);
      if (rows.length === 0) break;
      const ids = rows.map((r) => r.id);
      await this.knex.transaction(async (trx) => {
        for (const part of chunks(ids, INSERT_CHUNK)) {
          await trx('notification_deliveries').whereIn('notification_id', part).delete();
          deleted += Number(await trx('notifications').whereIn('id', part).delete());
        }
      });
      if (rows.length < batch) break;
    }
    return deleted;
  }

  /**
   * Users with unread notifications created since `since`, in (tenant, user) order,
   * `limit` at a time after `after` (keyset paging for the digest).
   */
  async usersWithUnread(since: Date, after: { tenant: string; userId: string } | null, limit: number): Promise<Array<{ tenant: string; userId: string }>> {
    const q = this.knex('notifications').distinct('tenant', 'user_id').whereNull('read_at').andWhere('created_at', '>=', since);
    if (after) {
      q.andWhere((w) => {
        w.where('tenant', '>', after.tenant).orWhere((e) => e.where('tenant', '=', after.tenant).andWhere('user_id', '>', after.userId));
      });
    }
    const rows: Array<{ tenant: string; user_id: string }> = await q.orderBy([{ column: 'tenant' }, { column: 'user_id' }]).limit(limit);
    return rows.map((r) => ({ tenant: r.tenant, userId: r.user_id }));
  }

  /** The user's unread notifications created since `since`, newest first, and how many there are in all. */
  async unreadSince(tenant: string, userId: string, since: Date, limit: number): Promise<{ notifications: Notification[]; total: number }> {
    const base = () => this.knex('notifications').where({ tenant, user_id: userId }).whereNull('read_at').andWhere('created_at', '>=', since);
    const rows: NotificationRow[] = await base().select('*').orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(limit);
    const count = (await base().count('* as n').first()) as { n: unknown } | undefined;
    return { notifications: rows.map(toNotification), total: count ? toNumber(count.n) : 0 };
  }
}

/** The JSON form of a notification (HTTP answers, `notification.created` events). */
export function notificationJson(n: Notification): Record<string, unknown> {
  const delivery: Record<string, unknown> = {};
  for (const [channel, d] of Object.entries(n.delivery)) {
    delivery[channel] = { state: d.state, attempts: d.attempts, error: d.error, updated_at: d.updatedAt.toISOString() };
  }
  return {
    id: n.id,
    channel: n.channel,
    event: n.event,
    event_id: n.eventId,
    category: n.category,
    priority: n.priority,
    title: n.title,
    body: n.body,
    data: n.data,
    created_at: n.createdAt.toISOString(),
    read_at: n.readAt?.toISOString() ?? null,
    delivery,
  };
}
