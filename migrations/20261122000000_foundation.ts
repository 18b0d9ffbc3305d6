/**
 * Server keys, connection audit and publish audit.
 *
 * Timestamps are `timestamptz` on PostgreSQL (read back as `Date`) and, on SQLite,
 * the integer milliseconds that knex's better-sqlite3 client binds for a `Date`; the
 * repository layer turns both into `Date`. Free-form strings that arrive from clients
 * (user ids, user agents, connection ids) are `text` so one long value can never make
 * a whole audit batch fail on a length limit.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('server_keys', (t) => {
    t.string('id', 32).primary();
    t.string('tenant', 64).notNullable();
    t.string('secret_hash', 64).notNullable();
    t.text('label').nullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('revoked_at', { useTz: true }).nullable();
    t.timestamp('last_used_at', { useTz: true }).nullable();
    t.index(['tenant', 'created_at'], 'server_keys_tenant_created_idx');
  });

  await knex.schema.createTable('connection_audit', (t) => {
    t.bigIncrements('id');
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.text('connection_id').notNullable();
    t.string('kind', 16).notNullable();
    t.string('transport', 16).notNullable();
    t.text('ip').nullable();
    t.text('user_agent').nullable();
    t.text('device').nullable();
    t.integer('close_code').nullable();
    t.bigInteger('duration_ms').nullable();
    t.timestamp('at', { useTz: true }).notNullable();
    t.index(['tenant', 'at'], 'connection_audit_tenant_at_idx');
    t.index(['tenant', 'user_id', 'at'], 'connection_audit_tenant_user_at_idx');
  });

  await knex.schema.createTable('publish_audit', (t) => {
    t.bigIncrements('id');
    t.string('tenant', 64).notNullable();
    t.string('channel', 128).notNullable();
    t.string('event', 128).notNullable();
    t.string('event_id', 40).notNullable();
    t.string('publisher_kind', 16).notNullable();
    t.text('publisher_id').notNullable();
    t.timestamp('at', { useTz: true }).notNullable();
    t.index(['tenant', 'at'], 'publish_audit_tenant_at_idx');
    t.index(['tenant', 'channel', 'at'], 'publish_audit_tenant_channel_at_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('publish_audit');
  await knex.schema.dropTableIfExists('connection_audit');
  await knex.schema.dropTableIfExists('server_keys');
}
