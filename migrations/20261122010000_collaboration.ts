/**
 * Collaboration: rooms and their members, read cursors (receipts and unread counts)
 * and presence history.
 *
 * Every row carries its `tenant`, and every index starts with it, so one tenant's
 * queries never touch another's rows. Timestamps follow the foundation migration
 * (`timestamptz` on PostgreSQL, integer milliseconds on SQLite; the repositories turn
 * both into `Date`). User ids are `text`: they come from token `sub` claims of any
 * length.
 */
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('rooms', (t) => {
    t.string('id', 32).primary();
    t.string('tenant', 64).notNullable();
    t.text('name').notNullable();
    // The name lowercased by the application, so a search folds case the same way
    // on both databases (SQLite's lower() only folds ASCII).
    t.text('name_folded').notNullable();
    t.text('metadata').notNullable();
    t.timestamp('archived_at', { useTz: true }).nullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.index(['tenant', 'name_folded'], 'rooms_tenant_name_idx');
  });

  await knex.schema.createTable('room_members', (t) => {
    t.string('tenant', 64).notNullable();
    t.string('room_id', 32).notNullable().references('id').inTable('rooms').onDelete('CASCADE');
    t.text('user_id').notNullable();
    t.string('role', 16).notNullable();
    t.text('added_by').nullable();
    t.timestamp('added_at', { useTz: true }).notNullable();
    t.unique(['tenant', 'room_id', 'user_id'], { indexName: 'room_members_tenant_room_user_uq' });
    t.index(['tenant', 'user_id'], 'room_members_tenant_user_idx');
  });

  await knex.schema.createTable('read_cursors', (t) => {
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.string('channel', 128).notNullable();
    t.string('delivered_until', 40).nullable();
    t.string('read_until', 40).nullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.unique(['tenant', 'user_id', 'channel'], { indexName: 'read_cursors_tenant_user_channel_uq' });
  });

  await knex.schema.createTable('presence_history', (t) => {
    t.bigIncrements('id');
    t.string('tenant', 64).notNullable();
    t.text('user_id').notNullable();
    t.string('status', 16).notNullable();
    t.text('device').nullable();
    t.text('custom_status').nullable();
    t.timestamp('at', { useTz: true }).notNullable();
    t.index(['tenant', 'user_id', 'at'], 'presence_history_tenant_user_at_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('presence_history');
  await knex.schema.dropTableIfExists('read_cursors');
  await knex.schema.dropTableIfExists('room_members');
  await knex.schema.dropTableIfExists('rooms');
}
