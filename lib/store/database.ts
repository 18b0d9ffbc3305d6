/**
 * Opening the database (SQLite by default, PostgreSQL when `databaseUrl` is set) and
 * running the migrations through knex's API with a migration source that lists the
 * modules in `migrations/index.ts`, so it works from source and from `dist/` alike.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type { Config } from '../config/config.js';
import { migrations, type NamedMigration } from '../../migrations/index.js';

export type Dialect = 'sqlite' | 'postgres';

export type DatabaseSettings = Pick<Config, 'databaseUrl' | 'sqliteFile' | 'databaseSchema'>;

/** How long SQLite waits for another connection's write lock before failing. */
const SQLITE_BUSY_TIMEOUT_MS = 5000;

class ListedMigrations implements Knex.MigrationSource<NamedMigration> {
  async getMigrations(): Promise<NamedMigration[]> {
    return [...migrations];
  }

  getMigrationName(migration: NamedMigration): string {
    return migration.name;
  }

  async getMigration(migration: NamedMigration): Promise<Knex.Migration> {
    return { up: migration.up, down: migration.down };
  }
}

const migrationConfig = (): Knex.MigratorConfig => ({ migrationSource: new ListedMigrations() });

interface SqliteConnection {
  pragma(source: string): unknown;
}

/**
 * Open a knex instance for the configured database. PostgreSQL gets a small pool and,
 * with `databaseSchema`, a `search_path` of that schema, which is created if missing.
 */
export async function openDatabase(config: DatabaseSettings): Promise<Knex> {
  if (config.databaseUrl) {
    const schema = config.databaseSchema;
    const knex = knexFactory({
      client: 'pg',
      connection: config.databaseUrl,
      ...(schema ? { searchPath: [schema] } : {}),
      pool: { min: 0, max: 5 },
      acquireConnectionTimeout: 10_000,
      migrations: migrationConfig(),
    });
    if (schema) {
      try {
        await knex.raw('create schema if not exists ??', [schema]);
      } catch (err) {
        // Two processes creating the schema at once: the loser sees a duplicate.
        const code = (err as { code?: string }).code;
        if (code !== '42P06' && code !== '23505') {
          await knex.destroy();
          throw err;
        }
      }
    }
    return knex;
  }

  const file = config.sqliteFile;
  if (file !== ':memory:' && !file.startsWith('file:')) mkdirSync(dirname(file), { recursive: true });
  return knexFactory({
    client: 'better-sqlite3',
    connection: { filename: file },
    useNullAsDefault: true,
    pool: {
      afterCreate(conn: SqliteConnection, done: (err: Error | null, conn: SqliteConnection) => void) {
        try {
          conn.pragma('journal_mode = WAL');
          conn.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
          conn.pragma('foreign_keys = ON');
          done(null, conn);
        } catch (err) {
          done(err as Error, conn);
        }
      },
    },
    migrations: migrationConfig(),
  });
}

export function dialectOf(knex: Knex): Dialect {
  const dialect = (knex.client as { dialect?: string }).dialect;
  if (dialect === 'postgresql') return 'postgres';
  if (dialect === 'sqlite3') return 'sqlite';
  throw new Error(`unsupported database dialect: ${String(dialect)}`);
}

/** Apply every pending migration; resolves with the names applied (empty when up to date). */
export async function migrateLatest(knex: Knex): Promise<string[]> {
  const [, applied] = (await knex.migrate.latest(migrationConfig())) as [number, string[]];
  return applied;
}

export interface MigrationStatus {
  completed: string[];
  pending: string[];
}

/** Which migrations have run and which have not. */
export async function migrationStatus(knex: Knex): Promise<MigrationStatus> {
  const source = new ListedMigrations();
  const [completed, pending] = (await knex.migrate.list(migrationConfig())) as [
    Array<{ name: string } | string>,
    NamedMigration[],
  ];
  return {
    completed: completed.map((m) => (typeof m === 'string' ? m : m.name)),
    pending: pending.map((m) => source.getMigrationName(m)),
  };
}

/**
 * A timestamp column as a `Date`: PostgreSQL returns a `Date`, SQLite the integer
 * milliseconds knex bound for a `Date` (or, for values written by SQL such as
 * `CURRENT_TIMESTAMP`, a `YYYY-MM-DD HH:MM:SS` string in UTC).
 */
export function toDate(value: unknown): Date {
  if (value instanceof Date) return value;
  if (typeof value === 'number' || typeof value === 'bigint') return new Date(Number(value));
  if (typeof value === 'string') {
    if (/^\d+$/.test(value)) return new Date(Number(value));
    const sqlUtc = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$/.test(value);
    return new Date(sqlUtc ? value.replace(' ', 'T') + 'Z' : value);
  }
  throw new TypeError(`not a timestamp: ${String(value)}`);
}

export function toDateOrNull(value: unknown): Date | null {
  return value === null || value === undefined ? null : toDate(value);
}

/** An integer column or `count(*)` as a number (pg returns `bigint` and `count` as strings). */
export function toNumber(value: unknown): number {
  const n = Number(value);
  if (value === null || value === undefined || Number.isNaN(n)) throw new TypeError(`not a number: ${String(value)}`);
  return n;
}

export function toNumberOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : toNumber(value);
}

/**
 * A JSON object stored as text (SQLite and PostgreSQL alike); anything else (null, a
 * hand-edited row, an array) reads as `{}`.
 */
export function toJsonObject<T extends object = Record<string, unknown>>(text: unknown): T {
  if (typeof text !== 'string') return {} as T;
  try {
    const value: unknown = JSON.parse(text);
    return (typeof value === 'object' && value !== null && !Array.isArray(value) ? value : {}) as T;
  } catch {
    return {} as T;
  }
}
