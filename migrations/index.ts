/**
 * Every migration, in the order it runs. Listed by hand (not read from the directory)
 * so the same code runs under tsx from source and compiled from `dist/`; append new
 * migrations at the end and never rename one that has shipped, since its name is what
 * `knex_migrations` records.
 */
import type { Knex } from 'knex';
import * as foundation from './20261122000000_foundation.js';
import * as collaboration from './20261122010000_collaboration.js';
import * as notifications from './20261122020000_notifications.js';

export interface NamedMigration {
  readonly name: string;
  readonly up: (knex: Knex) => Promise<void>;
  readonly down: (knex: Knex) => Promise<void>;
}

export const migrations: readonly NamedMigration[] = [
  { name: '20261122000000_foundation', up: foundation.up, down: foundation.down },
  { name: '20261122010000_collaboration', up: collaboration.up, down: collaboration.down },
  { name: '20261122020000_notifications', up: notifications.up, down: notifications.down },
];
