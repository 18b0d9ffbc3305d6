/**
 * Each user's notification preferences: on/off overall, per delivery channel, per
 * category or event name (optionally per channel), per device type; quiet hours in
 * the user's time zone; do-not-disturb until a given time; the daily digest; the
 * email address notifications go to. A user without a row has the defaults.
 */
import type { Knex } from 'knex';
import { z } from 'zod';
import { DELIVERY_CHANNELS, quietHoursSchema, type DeliveryChannel } from '../config/notifications.js';
import { badRequest } from '../errors.js';
import { toDate, toDateOrNull, toJsonObject } from './database.js';

export interface QuietHours {
  /** Local `HH:MM`. */
  start: string;
  /** Local `HH:MM`; before `start` when the quiet hours cross midnight. */
  end: string;
  /** IANA time zone. */
  timeZone: string;
}

export type ChannelSwitches = Partial<Record<DeliveryChannel, boolean>>;

export interface NotificationPreferences {
  /** Off: no notification at all, not even in-app. */
  enabled: boolean;
  /** Where email goes; null: no email. */
  email: string | null;
  /** Per delivery channel; absent means on. */
  channels: ChannelSwitches;
  /** Per category or event name: off altogether (`false`), or per channel. Absent means on. */
  categories: Record<string, boolean | ChannelSwitches>;
  /** Per device type (`web`, `android`, `ios`, …); absent means on. */
  devices: Record<string, boolean>;
  /** Null: the configured default quiet hours, if any. */
  quietHours: QuietHours | null;
  dndUntil: Date | null;
  /** The daily digest email of unread notifications. */
  digest: boolean;
  /** Null while the user has never saved preferences. */
  updatedAt: Date | null;
}

export type PreferencesPatch = Partial<Omit<NotificationPreferences, 'updatedAt'>>;

export const MAX_CATEGORY_KEYS = 200;
export const MAX_DEVICE_KEYS = 20;

const KEY = /^[A-Za-z0-9_\-.:@/]{1,128}$/;
const switches = z.strictObject(Object.fromEntries(DELIVERY_CHANNELS.map((c) => [c, z.boolean().optional()])) as Record<DeliveryChannel, z.ZodOptional<z.ZodBoolean>>);

/** The JSON form the HTTP API accepts (snake_case; every field optional). */
const patchSchema = z.strictObject({
  enabled: z.boolean().optional(),
  email: z.email().max(320).nullable().optional(),
  channels: switches.optional(),
  categories: z
    .record(z.string().regex(KEY, 'a category or event name'), z.union([z.boolean(), switches]))
    .refine((r) => Object.keys(r).length <= MAX_CATEGORY_KEYS, `at most ${MAX_CATEGORY_KEYS} entries`)
    .optional(),
  devices: z
    .record(z.string().regex(/^[a-z0-9_-]{1,32}$/, 'a device type'), z.boolean())
    .refine((r) => Object.keys(r).length <= MAX_DEVICE_KEYS, `at most ${MAX_DEVICE_KEYS} entries`)
    .optional(),
  quiet_hours: quietHoursSchema.nullable().optional(),
  dnd_until: z.iso.datetime({ offset: true }).nullable().optional(),
  digest: z.boolean().optional(),
});

/** Parse a preferences body; `email` only when `allowEmail` (server keys). Throws `bad_request`. */
export function parsePreferencesPatch(body: unknown, options: { allowEmail: boolean }): PreferencesPatch {
  const parsed = patchSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw badRequest(`${issue.path.join('.') || 'body'}: ${issue.message}`);
  }
  const b = parsed.data;
  if (b.email !== undefined && !options.allowEmail) throw badRequest('email: set by the application (server key), not by users');
  const patch: PreferencesPatch = {};
  if (b.enabled !== undefined) patch.enabled = b.enabled;
  if (b.email !== undefined) patch.email = b.email;
  if (b.channels !== undefined) patch.channels = b.channels;
  if (b.categories !== undefined) patch.categories = b.categories;
  if (b.devices !== undefined) patch.devices = b.devices;
  if (b.quiet_hours !== undefined) {
    patch.quietHours = b.quiet_hours === null ? null : { start: b.quiet_hours.start, end: b.quiet_hours.end, timeZone: b.quiet_hours.time_zone };
  }
  if (b.dnd_until !== undefined) patch.dndUntil = b.dnd_until === null ? null : new Date(b.dnd_until);
  if (b.digest !== undefined) patch.digest = b.digest;
  return patch;
}

/** The JSON form of preferences (the HTTP API's answer). */
export function preferencesJson(p: NotificationPreferences): Record<string, unknown> {
  return {
    enabled: p.enabled,
    email: p.email,
    channels: p.channels,
    categories: p.categories,
    devices: p.devices,
    quiet_hours: p.quietHours ? { start: p.quietHours.start, end: p.quietHours.end, time_zone: p.quietHours.timeZone } : null,
    dnd_until: p.dndUntil?.toISOString() ?? null,
    digest: p.digest,
    updated_at: p.updatedAt?.toISOString() ?? null,
  };
}

export function defaultPreferences(): NotificationPreferences {
  return { enabled: true, email: null, channels: {}, categories: {}, devices: {}, quietHours: null, dndUntil: null, digest: true, updatedAt: null };
}

interface PreferencesRow {
  user_id: string;
  enabled: unknown;
  email: string | null;
  channels: string;
  categories: string;
  devices: string;
  quiet_start: string | null;
  quiet_end: string | null;
  time_zone: string | null;
  dnd_until: unknown;
  digest: unknown;
  updated_at: unknown;
}

/** SQLite answers booleans as 0/1. */
const toBool = (v: unknown): boolean => v === true || v === 1 || v === '1' || v === 't' || v === 'true';

function toPreferences(row: PreferencesRow): NotificationPreferences {
  return {
    enabled: toBool(row.enabled),
    email: row.email ?? null,
    channels: toJsonObject<ChannelSwitches>(row.channels),
    categories: toJsonObject<Record<string, boolean | ChannelSwitches>>(row.categories),
    devices: toJsonObject<Record<string, boolean>>(row.devices),
    quietHours: row.quiet_start && row.quiet_end && row.time_zone ? { start: row.quiet_start, end: row.quiet_end, timeZone: row.time_zone } : null,
    dndUntil: toDateOrNull(row.dnd_until),
    digest: toBool(row.digest),
    updatedAt: toDate(row.updated_at),
  };
}

export class PreferenceStore {
  constructor(private readonly knex: Knex) {}

  /** A user's preferences (the defaults when they never saved any). */
  async get(tenant: string, userId: string): Promise<NotificationPreferences> {
    return (await this.getMany(tenant, [userId])).get(userId)!;
  }

  /** Preferences of many users of one tenant, one query per 100 users. */
  async getMany(tenant: string, userIds: readonly string[]): Promise<Map<string, NotificationPreferences>> {
    const out = new Map<string, NotificationPreferences>();
    const unique = [...new Set(userIds)];
    for (let i = 0; i < unique.length; i += 100) {
      const rows: PreferencesRow[] = await this.knex('notification_preferences').select('*').where({ tenant }).whereIn('user_id', unique.slice(i, i + 100));
      for (const r of rows) out.set(r.user_id, toPreferences(r));
    }
    for (const id of unique) if (!out.has(id)) out.set(id, defaultPreferences());
    return out;
  }

  /** Change the fields `patch` names (the others keep their values); resolves with the result. */
  async update(tenant: string, userId: string, patch: PreferencesPatch, at: Date = new Date()): Promise<NotificationPreferences> {
    return this.knex.transaction(async (trx) => {
      const row: PreferencesRow | undefined = await trx('notification_preferences').first('*').where({ tenant, user_id: userId });
      const current = row ? toPreferences(row) : defaultPreferences();
      const next: NotificationPreferences = { ...current, ...patch, updatedAt: at };
      const values = {
        enabled: next.enabled,
        email: next.email,
        channels: JSON.stringify(next.channels),
        categories: JSON.stringify(next.categories),
        devices: JSON.stringify(next.devices),
        quiet_start: next.quietHours?.start ?? null,
        quiet_end: next.quietHours?.end ?? null,
        time_zone: next.quietHours?.timeZone ?? null,
        dnd_until: next.dndUntil,
        digest: next.digest,
        updated_at: at,
      };
      await trx('notification_preferences')
        .insert({ tenant, user_id: userId, ...values })
        .onConflict(['tenant', 'user_id'])
        .merge(values);
      return next;
    });
  }
}
