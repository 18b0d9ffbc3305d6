/**
 * The storage facade: one knex instance and the repositories built on it.
 */
import type { Knex } from 'knex';
import { unavailable } from '../errors.js';
import { AuditWriter, type AuditWriterOptions } from './audit.js';
import { migrateLatest, openDatabase, type DatabaseSettings } from './database.js';
import { ServerKeyStore, type ServerKeyStoreOptions } from './server-keys.js';
import { RoomStore, type RoomStoreOptions } from './rooms.js';
import { ReadCursorStore } from './read-cursors.js';
import { NotificationStore } from './notifications.js';
import { PreferenceStore } from './notification-preferences.js';
import { PushTargetStore, type PushTargetStoreOptions } from './push-targets.js';

export interface StoreOptions {
  /** Apply pending migrations on open (`streamgate migrate` does it as a release step). @default false */
  migrate?: boolean;
  audit?: AuditWriterOptions;
  keys?: ServerKeyStoreOptions;
  rooms?: RoomStoreOptions;
  pushTargets?: PushTargetStoreOptions;
}

export class Store {
  readonly keys: ServerKeyStore;
  readonly audit: AuditWriter;
  readonly rooms: RoomStore;
  readonly readCursors: ReadCursorStore;
  readonly notifications: NotificationStore;
  readonly notificationPreferences: PreferenceStore;
  readonly pushTargets: PushTargetStore;

  constructor(
    readonly knex: Knex,
    options: Omit<StoreOptions, 'migrate'> = {},
  ) {
    this.keys = new ServerKeyStore(knex, options.keys);
    this.audit = new AuditWriter(knex, options.audit);
    this.rooms = new RoomStore(knex, options.rooms);
    this.readCursors = new ReadCursorStore(knex);
    this.notifications = new NotificationStore(knex);
    this.notificationPreferences = new PreferenceStore(knex);
    this.pushTargets = new PushTargetStore(knex, options.pushTargets);
  }

  /** Open the configured database; rejects with `unavailable` when it cannot be reached. */
  static async open(config: DatabaseSettings, options: StoreOptions = {}): Promise<Store> {
    let knex: Knex;
    try {
      knex = await openDatabase(config);
    } catch (err) {
      throw unavailable('database unavailable', err);
    }
    const store = new Store(knex, options);
    try {
      await store.ping();
      if (options.migrate) await migrateLatest(knex);
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    return store;
  }

  /** A round trip to the database (readiness checks); rejects with `unavailable`. */
  async ping(): Promise<void> {
    try {
      await this.knex.raw('select 1');
    } catch (err) {
      throw unavailable('database unavailable', err);
    }
  }

  /** Write the buffered audit rows, then close the pool. */
  async close(): Promise<void> {
    try {
      await this.audit.close();
      await this.readCursors.close();
    } finally {
      await this.keys.flush();
      await this.knex.destroy();
    }
  }
}
