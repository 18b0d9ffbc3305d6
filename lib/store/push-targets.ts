/**
 * Where pushes go: web push subscriptions (a push service endpoint and the browser's
 * keys) and FCM device tokens. Each endpoint or token belongs to one user of a
 * tenant: registering it again (another user signing in on the same browser or
 * phone) moves it to the new user. A user keeps at most `maxPerUser` of each
 * (default 20): registering one more removes the least recently registered.
 *
 * Each target has its own switch (`enabled`) and an optional `label` the user gives
 * it ("Work laptop"): a disabled target stays registered but is never sent to.
 * Registering it again for the same user keeps both; moving it to another user
 * resets them (enabled, no label).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest } from '../errors.js';
import { toDate, toDateOrNull } from './database.js';

export interface WebPushSubscription {
  id: string;
  tenant: string;
  userId: string;
  endpoint: string;
  /** The browser's P-256 public key, base64url. */
  p256dh: string;
  /** The browser's auth secret, base64url. */
  auth: string;
  deviceType: string;
  userAgent: string | null;
  /** False: kept, but never sent to. */
  enabled: boolean;
  /** A name the user gave it; null: none. */
  label: string | null;
  expiresAt: Date | null;
  createdAt: Date;
}

export const DEVICE_PLATFORMS = ['android', 'ios', 'web'] as const;
export type DevicePlatform = (typeof DEVICE_PLATFORMS)[number];

export interface DeviceToken {
  id: string;
  tenant: string;
  userId: string;
  token: string;
  platform: DevicePlatform;
  /** False: kept, but never sent to. */
  enabled: boolean;
  /** A name the user gave it; null: none. */
  label: string | null;
  createdAt: Date;
}

/** A change of one target's switch or label (the fields it names). */
export interface PushTargetPatch {
  enabled?: boolean;
  /** Null removes the label. */
  label?: string | null;
}

export const MAX_LABEL_LENGTH = 100;

export interface NewWebPushSubscription {
  endpoint: string;
  p256dh: string;
  auth: string;
  /** @default 'web' */
  deviceType?: string;
  userAgent?: string | null;
  expiresAt?: Date | null;
}

export interface PushTargetStoreOptions {
  /**
   * Accept endpoints on loopback and private addresses and plain names such as
   * `localhost` (tests, self-hosted push services). Off, only public `https:` hosts
   * are accepted, so the worker cannot be made to post to internal services.
   * @default false
   */
  allowPrivateEndpoints?: boolean;
  /** Web push subscriptions, and FCM tokens, a user keeps; more evict the least recently registered. @default 20 */
  maxPerUser?: number;
}

export const DEFAULT_MAX_TARGETS_PER_USER = 20;

export const MAX_ENDPOINT_LENGTH = 2048;
export const MAX_TOKEN_LENGTH = 4096;
const DEVICE_TYPE = /^[a-z0-9_-]{1,32}$/;
const TOKEN = /^[\x21-\x7e]+$/;
/** No control characters (C0, DEL, C1) nor line or paragraph separators. */
const LABEL_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** Validate a `{enabled, label}` change (`bad_request` naming the field); labels are trimmed, empty ones removed. */
export function parsePushTargetPatch(body: unknown): PushTargetPatch {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('expected a JSON object body (Content-Type: application/json)');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (k !== 'enabled' && k !== 'label') throw badRequest(`unknown field: ${k}`);
  if (b.enabled === undefined && b.label === undefined) throw badRequest('body: give enabled, label or both');
  const patch: PushTargetPatch = {};
  if (b.enabled !== undefined) {
    if (typeof b.enabled !== 'boolean') throw badRequest('enabled: true or false');
    patch.enabled = b.enabled;
  }
  if (b.label !== undefined) {
    if (b.label !== null && typeof b.label !== 'string') throw badRequest('label: a string or null');
    const label = typeof b.label === 'string' ? b.label.trim() : null;
    if (label !== null && ([...label].length > MAX_LABEL_LENGTH || LABEL_FORBIDDEN.test(label))) {
      throw badRequest(`label: at most ${MAX_LABEL_LENGTH} characters, no control characters`);
    }
    patch.label = label === '' ? null : label;
  }
  return patch;
}

/** SQLite answers booleans as 0/1. */
const toBool = (v: unknown): boolean => v === true || v === 1 || v === '1' || v === 't' || v === 'true';

const sha256 = (value: string): string => createHash('sha256').update(value).digest('hex');
const newId = (): string => randomBytes(12).toString('base64url');

function base64urlLength(value: unknown): number {
  return typeof value === 'string' && /^[A-Za-z0-9_-]+={0,2}$/.test(value) ? Buffer.from(value, 'base64url').length : -1;
}

/** True for IP literals and names that are not public DNS names. */
function isPrivateHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (!host.includes('.') || host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host.endsWith('.internal')) return true;
  return /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(':');
}

interface SubscriptionRow {
  id: string;
  tenant: string;
  user_id: string;
  endpoint: string;
  p256dh: string;
  auth: string;
  device_type: string;
  user_agent: string | null;
  enabled: unknown;
  label: string | null;
  expires_at: unknown;
  created_at: unknown;
}

interface DeviceRow {
  id: string;
  tenant: string;
  user_id: string;
  token: string;
  platform: string;
  enabled: unknown;
  label: string | null;
  created_at: unknown;
}

function toSubscription(r: SubscriptionRow): WebPushSubscription {
  return {
    id: r.id,
    tenant: r.tenant,
    userId: r.user_id,
    endpoint: r.endpoint,
    p256dh: r.p256dh,
    auth: r.auth,
    deviceType: r.device_type,
    userAgent: r.user_agent ?? null,
    enabled: toBool(r.enabled),
    label: r.label ?? null,
    expiresAt: toDateOrNull(r.expires_at),
    createdAt: toDate(r.created_at),
  };
}

function toDevice(r: DeviceRow): DeviceToken {
  const platform = (DEVICE_PLATFORMS as readonly string[]).includes(r.platform) ? (r.platform as DevicePlatform) : 'android';
  return { id: r.id, tenant: r.tenant, userId: r.user_id, token: r.token, platform, enabled: toBool(r.enabled), label: r.label ?? null, createdAt: toDate(r.created_at) };
}

export class PushTargetStore {
  private readonly allowPrivate: boolean;
  private readonly maxPerUser: number;

  constructor(
    private readonly knex: Knex,
    options: PushTargetStoreOptions = {},
  ) {
    this.allowPrivate = options.allowPrivateEndpoints ?? false;
    this.maxPerUser = Math.max(1, Math.floor(options.maxPerUser ?? DEFAULT_MAX_TARGETS_PER_USER));
  }

  /**
   * Keep the user's `maxPerUser` most recently registered rows of `table` (`keep`
   * always among them); delete the others. Resolves with how many were deleted.
   */
  private async evict(table: 'push_subscriptions' | 'device_tokens', tenant: string, userId: string, keep: string): Promise<number> {
    const rows: Array<{ id: string }> = await this.knex(table)
      .select('id')
      .where({ tenant, user_id: userId })
      .whereNot({ id: keep })
      .orderBy([{ column: 'updated_at', order: 'desc' }, { column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }])
      .offset(this.maxPerUser - 1)
      .limit(1000);
    if (rows.length === 0) return 0;
    return Number(await this.knex(table).where({ tenant, user_id: userId }).whereIn('id', rows.map((r) => r.id)).delete());
  }

  /**
   * On a registration that finds the row: the switch and label stay when the same
   * user registers it again, and are reset when it moves to another user. (SET
   * expressions read the row as it was, on both databases.)
   */
  private keepSwitchForSameUser(table: 'push_subscriptions' | 'device_tokens'): Record<'enabled' | 'label', Knex.Raw> {
    const same = `?? = excluded.??`;
    const bindings = [`${table}.user_id`, 'user_id'];
    return {
      enabled: this.knex.raw(`case when ${same} then ?? else true end`, [...bindings, `${table}.enabled`]),
      label: this.knex.raw(`case when ${same} then ?? else null end`, [...bindings, `${table}.label`]),
    };
  }

  /** Change the switch or label of one of the user's targets; false when the user has no such target. */
  private async updateTarget(table: 'push_subscriptions' | 'device_tokens', tenant: string, userId: string, id: string, patch: PushTargetPatch): Promise<boolean> {
    const values: Record<string, unknown> = {};
    if (patch.enabled !== undefined) values.enabled = patch.enabled;
    if (patch.label !== undefined) values.label = patch.label;
    if (Object.keys(values).length === 0) return (await this.knex(table).first('id').where({ tenant, user_id: userId, id })) !== undefined;
    return Number(await this.knex(table).where({ tenant, user_id: userId, id }).update(values)) > 0;
  }

  /** Validate a subscription (`bad_request` naming the field). */
  checkWebPush(input: NewWebPushSubscription): void {
    if (typeof input.endpoint !== 'string' || input.endpoint.length > MAX_ENDPOINT_LENGTH) {
      throw badRequest(`endpoint: an https URL of at most ${MAX_ENDPOINT_LENGTH} characters`);
    }
    let url: URL;
    try {
      url = new URL(input.endpoint);
    } catch {
      throw badRequest('endpoint: not a URL');
    }
    if (url.protocol !== 'https:') throw badRequest('endpoint: push services are reached over https');
    if (!this.allowPrivate && isPrivateHost(url.hostname)) throw badRequest('endpoint: not a public push service');
    const key = Buffer.from(typeof input.p256dh === 'string' ? input.p256dh : '', 'base64url');
    if (base64urlLength(input.p256dh) !== 65 || key[0] !== 4) throw badRequest('keys.p256dh: an uncompressed P-256 public key, base64url (65 bytes)');
    if (base64urlLength(input.auth) !== 16) throw badRequest('keys.auth: the 16-byte auth secret, base64url');
    if (input.deviceType !== undefined && !DEVICE_TYPE.test(input.deviceType)) throw badRequest('device_type: lowercase letters, digits, _ or - (1 to 32)');
  }

  /** Register (or move to `userId`) a web push subscription. */
  async addWebPush(tenant: string, userId: string, input: NewWebPushSubscription, at: Date = new Date()): Promise<WebPushSubscription> {
    this.checkWebPush(input);
    const endpointHash = sha256(input.endpoint);
    const values = {
      user_id: userId,
      endpoint: input.endpoint,
      p256dh: input.p256dh,
      auth: input.auth,
      device_type: input.deviceType ?? 'web',
      user_agent: input.userAgent ?? null,
      expires_at: input.expiresAt ?? null,
      updated_at: at,
    };
    await this.knex('push_subscriptions')
      .insert({ id: newId(), tenant, endpoint_hash: endpointHash, created_at: at, ...values })
      .onConflict(['tenant', 'endpoint_hash'])
      .merge({ ...values, ...this.keepSwitchForSameUser('push_subscriptions') });
    const row: SubscriptionRow = await this.knex('push_subscriptions').first('*').where({ tenant, endpoint_hash: endpointHash });
    await this.evict('push_subscriptions', tenant, userId, row.id);
    return toSubscription(row);
  }

  /** Remove the user's subscription by endpoint or id; false when there was none. */
  async removeWebPush(tenant: string, userId: string, by: { endpoint: string } | { id: string }): Promise<boolean> {
    const where = 'endpoint' in by ? { tenant, user_id: userId, endpoint_hash: sha256(by.endpoint) } : { tenant, user_id: userId, id: by.id };
    return Number(await this.knex('push_subscriptions').where(where).delete()) > 0;
  }

  /** Turn one of the user's subscriptions on or off, or (re)name it; null when the user has no such subscription. */
  async updateWebPush(tenant: string, userId: string, id: string, patch: PushTargetPatch): Promise<WebPushSubscription | null> {
    if (!(await this.updateTarget('push_subscriptions', tenant, userId, id, patch))) return null;
    const row: SubscriptionRow | undefined = await this.knex('push_subscriptions').first('*').where({ tenant, user_id: userId, id });
    return row ? toSubscription(row) : null;
  }

  /** Delete a subscription its push service no longer knows (404/410). */
  async deleteWebPush(tenant: string, id: string): Promise<boolean> {
    return Number(await this.knex('push_subscriptions').where({ tenant, id }).delete()) > 0;
  }

  /** Delete subscriptions past their `expirationTime` (every tenant); resolves with how many. */
  async deleteExpiredWebPush(now: Date = new Date()): Promise<number> {
    return Number(await this.knex('push_subscriptions').whereNotNull('expires_at').andWhere('expires_at', '<=', now).delete());
  }

  /** The subscriptions of these users, oldest first, disabled ones included; expired ones are left out. */
  async webPushFor(tenant: string, userIds: readonly string[], now: Date = new Date()): Promise<WebPushSubscription[]> {
    const out: WebPushSubscription[] = [];
    for (let i = 0; i < userIds.length; i += 100) {
      const rows: SubscriptionRow[] = await this.knex('push_subscriptions')
        .select('*')
        .where({ tenant })
        .whereIn('user_id', userIds.slice(i, i + 100))
        .andWhere((w) => w.whereNull('expires_at').orWhere('expires_at', '>', now))
        .orderBy([{ column: 'created_at' }, { column: 'id' }]);
      out.push(...rows.map(toSubscription));
    }
    return out;
  }

  /** Validate a device token registration. */
  checkDevice(token: unknown, platform: unknown): { token: string; platform: DevicePlatform } {
    if (typeof token !== 'string' || token.length < 1 || token.length > MAX_TOKEN_LENGTH || !TOKEN.test(token)) {
      throw badRequest(`token: the FCM registration token (1 to ${MAX_TOKEN_LENGTH} printable characters)`);
    }
    if (!(DEVICE_PLATFORMS as readonly unknown[]).includes(platform)) throw badRequest(`platform: one of ${DEVICE_PLATFORMS.join(', ')}`);
    return { token, platform: platform as DevicePlatform };
  }

  /** Register (or move to `userId`) an FCM registration token. */
  async addDevice(tenant: string, userId: string, token: string, platform: DevicePlatform, at: Date = new Date()): Promise<DeviceToken> {
    this.checkDevice(token, platform);
    const tokenHash = sha256(token);
    const values = { user_id: userId, token, platform, updated_at: at };
    await this.knex('device_tokens')
      .insert({ id: newId(), tenant, token_hash: tokenHash, created_at: at, ...values })
      .onConflict(['tenant', 'token_hash'])
      .merge({ ...values, ...this.keepSwitchForSameUser('device_tokens') });
    const row: DeviceRow = await this.knex('device_tokens').first('*').where({ tenant, token_hash: tokenHash });
    await this.evict('device_tokens', tenant, userId, row.id);
    return toDevice(row);
  }

  /** Remove the user's device by token or id; false when there was none. */
  async removeDevice(tenant: string, userId: string, by: { token: string } | { id: string }): Promise<boolean> {
    const where = 'token' in by ? { tenant, user_id: userId, token_hash: sha256(by.token) } : { tenant, user_id: userId, id: by.id };
    return Number(await this.knex('device_tokens').where(where).delete()) > 0;
  }

  /** Turn one of the user's devices on or off, or (re)name it; null when the user has no such device. */
  async updateDevice(tenant: string, userId: string, id: string, patch: PushTargetPatch): Promise<DeviceToken | null> {
    if (!(await this.updateTarget('device_tokens', tenant, userId, id, patch))) return null;
    const row: DeviceRow | undefined = await this.knex('device_tokens').first('*').where({ tenant, user_id: userId, id });
    return row ? toDevice(row) : null;
  }

  /** Delete a token FCM answered as unregistered or invalid. */
  async deleteDevice(tenant: string, id: string): Promise<boolean> {
    return Number(await this.knex('device_tokens').where({ tenant, id }).delete()) > 0;
  }

  /** The device tokens of these users, oldest first, disabled ones included. */
  async devicesFor(tenant: string, userIds: readonly string[]): Promise<DeviceToken[]> {
    const out: DeviceToken[] = [];
    for (let i = 0; i < userIds.length; i += 100) {
      const rows: DeviceRow[] = await this.knex('device_tokens')
        .select('*')
        .where({ tenant })
        .whereIn('user_id', userIds.slice(i, i + 100))
        .orderBy([{ column: 'created_at' }, { column: 'id' }]);
      out.push(...rows.map(toDevice));
    }
    return out;
  }
}
