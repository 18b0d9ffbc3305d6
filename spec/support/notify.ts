/**
 * What the notification specs share: a Redis engine under a unique prefix, a
 * migrated database with the notification repositories, and a worker
 * configuration pointing at both.
 */
import type { Knex } from 'knex';
import { defaultNotificationSettings, mergeNotificationSettings, notificationsOverrideSchema, type NotificationConfig, type NotificationCredentials } from '../../lib/config/notifications.js';
import { RedisEngine } from '../../lib/engine/redis-engine.js';
import type { NotifyStores } from '../../lib/notify/notifier.js';
import type { WorkerConfig } from '../../lib/notify/worker.js';
import { migrateLatest, openDatabase } from '../../lib/store/database.js';
import { PreferenceStore } from '../../lib/store/notification-preferences.js';
import { NotificationStore } from '../../lib/store/notifications.js';
import { PushTargetStore } from '../../lib/store/push-targets.js';
import { RoomStore } from '../../lib/store/rooms.js';
import type { TestDatabase } from './databases.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from './redis.js';

export const SHARDS = 4;

export interface NotifyEnv {
  prefix: string;
  redisUrl: string;
  engine: RedisEngine;
  knex: Knex;
  rooms: RoomStore;
  stores: NotifyStores & { rooms: RoomStore };
  /** A worker configuration: default settings with `override` merged, and `credentials`. */
  config(override?: unknown, credentials?: Partial<NotificationCredentials>): WorkerConfig;
  close(): Promise<void>;
}

export const noCredentials: NotificationCredentials = { vapid: null, fcm: null, smtpUrl: null, extraCa: null, fcmAddress: null, allowPrivateEndpoints: false };

export async function openNotifyEnv(db: TestDatabase): Promise<NotifyEnv> {
  const prefix = uniquePrefix();
  const redisUrl = testRedisUrl();
  const knex = await openDatabase(db.config);
  await migrateLatest(knex);
  const engine = await RedisEngine.create({
    url: redisUrl,
    keyPrefix: prefix,
    shards: SHARDS,
    logMaxLength: 10_000,
    retention: () => ({ count: 1000, seconds: 3600 }),
  });
  const rooms = new RoomStore(knex);
  const stores = {
    notifications: new NotificationStore(knex),
    preferences: new PreferenceStore(knex),
    targets: new PushTargetStore(knex, { allowPrivateEndpoints: true }),
    rooms,
  };
  return {
    prefix,
    redisUrl,
    engine,
    knex,
    rooms,
    stores,
    config(override, credentials) {
      const settings = mergeNotificationSettings(defaultNotificationSettings(), notificationsOverrideSchema.parse(override ?? {}));
      const notifications: NotificationConfig = { ...settings, credentials: { ...noCredentials, ...credentials } };
      return {
        nodeEnv: 'test',
        redisUrl,
        databaseUrl: db.config.databaseUrl,
        sqliteFile: db.config.sqliteFile,
        databaseSchema: db.config.databaseSchema,
        redis: { key_prefix: prefix, shards: SHARDS, log_max_length: 10_000 },
        namespaces: {},
        defaults: { retention: { count: 1000, seconds: 3600 }, presence: true, typing: true, receipts: false, anonymous: false },
        notifications,
      };
    },
    async close() {
      try {
        await engine.close();
        await knex.destroy();
      } finally {
        await deleteKeysWithPrefix(prefix, redisUrl);
      }
    },
  };
}

/** Polls `check` until it returns a value other than undefined/false; fails after `ms`. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
