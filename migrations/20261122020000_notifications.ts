/**
 * Notifications: per-user preferences, push targets (web push subscriptions and FCM
 * device tokens), the notification history with its read state, and the delivery
 * state of each notification per channel.
 *
 * Every row carries its `tenant` and every index starts with it, except
 * `notifications_created_idx`, which serves the daily digest's scan over all
 * tenants. Endpoints and tokens can be long, so their uniqueness is enforced on a
 * SHA-256 of the value, not on the value. JSON is kept in `text` columns on both
 * databases (the repositories encode and decode it). Timestamps as in the
 * foundation migration.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('notification_preferences', (t) => {
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.boolean('enabled').notNullable().defaultTo(true);
    t.text('email').nullable();
    // {"webpush": false, …}
    t.text('channels').notNullable();
    // {"room": false, "mention": {"email": false}, "invoice.paid": true, …}
    t.text('categories').notNullable();
    // {"ios": false, "web": true, …}
    t.text('devices').notNullable();
    t.string('quiet_start', 5).nullable();
    t.string('quiet_end', 5).nullable();
    t.string('time_zone', 64).nullable();
    t.timestamp('dnd_until', { useTz: true }).nullable();
    t.boolean('digest').notNullable().defaultTo(true);
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.unique(['tenant', 'user_id'], { indexName: 'notification_preferences_tenant_user_uq' });
  });

  await knex.schema.createTable('push_subscriptions', (t) => {
    t.string('id', 32).primary();
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.text('endpoint').notNullable();
    t.string('endpoint_hash', 64).notNullable();
    t.text('p256dh').notNullable();
    t.text('auth').notNullable();
    t.string('device_type', 32).notNullable();
    t.text('user_agent').nullable();
    // Per-target switch and name the user gives it (PATCH …/push-subscriptions/{id}).
    t.boolean('enabled').notNullable().defaultTo(true);
    t.string('label', 100).nullable();
    t.timestamp('expires_at', { useTz: true }).nullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.unique(['tenant', 'endpoint_hash'], { indexName: 'push_subscriptions_tenant_endpoint_uq' });
    t.index(['tenant', 'user_id'], 'push_subscriptions_tenant_user_idx');
  });

  await knex.schema.createTable('device_tokens', (t) => {
    t.string('id', 32).primary();
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.text('token').notNullable();
    t.string('token_hash', 64).notNullable();
    t.string('platform', 16).notNullable();
    // Per-device switch and name the user gives it (PATCH …/devices/{id}).
    t.boolean('enabled').notNullable().defaultTo(true);
    t.string('label', 100).nullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.unique(['tenant', 'token_hash'], { indexName: 'device_tokens_tenant_token_uq' });
    t.index(['tenant', 'user_id'], 'device_tokens_tenant_user_idx');
  });

  await knex.schema.createTable('notifications', (t) => {
    // Derived from (tenant, channel, event id, user): a redelivered event finds its row.
    t.string('id', 32).primary();
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.string('channel', 128).notNullable();
    t.string('event', 128).notNullable();
    t.string('event_id', 40).notNullable();
    // A namespace name (up to 128) or a configured category.
    t.string('category', 128).notNullable();
    t.string('priority', 16).notNullable();
    t.text('title').notNullable();
    t.text('body').notNullable();
    t.text('data').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('read_at', { useTz: true }).nullable();
    t.index(['tenant', 'user_id', 'created_at'], 'notifications_tenant_user_created_idx');
    t.index(['tenant', 'user_id', 'read_at'], 'notifications_tenant_user_read_idx');
    t.index(['created_at'], 'notifications_created_idx');
  });

  await knex.schema.createTable('notification_deliveries', (t) => {
    t.string('tenant', 64).notNullable();
    t.string('notification_id', 32).notNullable().references('id').inTable('notifications').onDelete('CASCADE');
    // webpush, fcm, email
    t.string('channel', 16).notNullable();
    // queued, delayed, sent, failed, no_target, suppressed
    t.string('state', 16).notNullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('error').nullable();
    t.text('job_id').nullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.unique(['tenant', 'notification_id', 'channel'], { indexName: 'notification_deliveries_uq' });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('notification_deliveries');
  await knex.schema.dropTableIfExists('notifications');
  await knex.schema.dropTableIfExists('device_tokens');
  await knex.schema.dropTableIfExists('push_subscriptions');
  await knex.schema.dropTableIfExists('notification_preferences');
}
