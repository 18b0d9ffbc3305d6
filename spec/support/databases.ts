/**
 * Storage suites run once per database: SQLite in a fresh temporary file, PostgreSQL
 * (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`) in a schema of
 * its own, `sgt_<random>`, dropped afterwards. `TEST_DATABASES=sqlite` (or `postgres`)
 * narrows the run.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrateLatest, openDatabase, type DatabaseSettings } from '../../lib/store/database.js';

export type DatabaseName = 'sqlite' | 'postgres';

export interface TestDatabase {
  config: DatabaseSettings;
  cleanup(): Promise<void>;
}

export interface DatabaseTarget {
  name: DatabaseName;
  /** A new, empty database (not migrated). */
  open(): Promise<TestDatabase>;
}

export const postgresUrl = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';

const sqlite: DatabaseTarget = {
  name: 'sqlite',
  async open() {
    const dir = await mkdtemp(join(tmpdir(), 'sgt-'));
    return {
      config: { sqliteFile: join(dir, 'streamgate.sqlite') },
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  },
};

const postgres: DatabaseTarget = {
  name: 'postgres',
  async open() {
    const schema = `sgt_${randomBytes(6).toString('hex')}`;
    return {
      config: { databaseUrl: postgresUrl, databaseSchema: schema, sqliteFile: ':memory:' },
      async cleanup() {
        const admin = knexFactory({ client: 'pg', connection: postgresUrl, pool: { min: 0, max: 1 } });
        try {
          await admin.raw('drop schema if exists ?? cascade', [schema]);
        } finally {
          await admin.destroy();
        }
      },
    };
  },
};

const wanted = (process.env.TEST_DATABASES ?? 'sqlite,postgres').split(',').map((s) => s.trim());

export const databases: readonly DatabaseTarget[] = [sqlite, postgres].filter((d) => wanted.includes(d.name));

/** Declare `fn`'s tests once per database, each inside `describe(<name>)`. */
export function forEachDatabase(fn: (db: DatabaseTarget) => void): void {
  for (const db of databases) describe(db.name, () => fn(db));
}

/** A fresh database of `target` with every migration applied; `cleanup` destroys both. */
export async function openMigrated(target: DatabaseTarget): Promise<{ knex: Knex; db: TestDatabase; cleanup(): Promise<void> }> {
  const db = await target.open();
  const knex = await openDatabase(db.config);
  await migrateLatest(knex);
  return {
    knex,
    db,
    cleanup: async () => {
      await knex.destroy();
      await db.cleanup();
    },
  };
}
