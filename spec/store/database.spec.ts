import { expect } from 'chai';
import type { Knex } from 'knex';
import { StreamgateError } from '../../lib/errors.js';
import { dialectOf, migrateLatest, migrationStatus, openDatabase, toDate } from '../../lib/store/database.js';
import { Store } from '../../lib/store/store.js';
import { migrations } from '../../migrations/index.js';
import { forEachDatabase, type TestDatabase } from '../support/databases.js';

describe('database', () => {
  forEachDatabase((target) => {
    let db: TestDatabase;
    let knex: Knex;

    beforeEach(async () => {
      db = await target.open();
      knex = await openDatabase(db.config);
    });

    afterEach(async () => {
      await knex.destroy();
      await db.cleanup();
    });

    it('reports its dialect', () => {
      expect(dialectOf(knex)).to.equal(target.name);
    });

    it('applies every migration once, then nothing', async () => {
      const names = migrations.map((m) => m.name);
      expect(await migrationStatus(knex)).to.deep.equal({ completed: [], pending: names });
      expect(await migrateLatest(knex)).to.deep.equal(names);
      expect(await migrateLatest(knex)).to.deep.equal([]);
      expect(await migrationStatus(knex)).to.deep.equal({ completed: names, pending: [] });
      for (const table of ['server_keys', 'connection_audit', 'publish_audit']) {
        expect(await knex.schema.hasTable(table), table).to.equal(true);
      }
    });

    it('migrates from a second connection without redoing anything', async () => {
      await migrateLatest(knex);
      const other = await openDatabase(db.config);
      try {
        expect(await migrateLatest(other)).to.deep.equal([]);
      } finally {
        await other.destroy();
      }
    });

    it('reads a stored Date back as the same instant', async () => {
      await migrateLatest(knex);
      const at = new Date('2026-03-01T12:34:56.789Z');
      await knex('server_keys').insert({ id: 'k1', tenant: 't', secret_hash: 'x'.repeat(64), created_at: at });
      const row: { created_at: unknown } = await knex('server_keys').first('created_at').where({ id: 'k1' });
      expect(toDate(row.created_at).toISOString()).to.equal(at.toISOString());
      const later = await knex('server_keys').where('created_at', '>', new Date(at.getTime() - 1)).select('id');
      expect(later).to.have.length(1);
    });

    if (target.name === 'sqlite') {
      it('uses WAL with a busy timeout', async () => {
        const [mode] = (await knex.raw('pragma journal_mode')) as Array<{ journal_mode: string }>;
        const [busy] = (await knex.raw('pragma busy_timeout')) as Array<{ timeout: number }>;
        expect(mode?.journal_mode).to.equal('wal');
        expect(busy?.timeout).to.be.greaterThan(0);
      });
    }

    if (target.name === 'postgres') {
      it('keeps its tables in the configured schema', async () => {
        await migrateLatest(knex);
        const rows: { rows: Array<{ table_name: string }> } = await knex.raw(
          'select table_name from information_schema.tables where table_schema = ? order by table_name',
          [db.config.databaseSchema ?? ""],
        );
        expect(rows.rows.map((r) => r.table_name)).to.include.members(['server_keys', 'connection_audit', 'publish_audit']);
      });
    }
  });
});

describe('Store', () => {
  forEachDatabase((target) => {
    let db: TestDatabase;

    beforeEach(async () => {
      db = await target.open();
    });

    afterEach(async () => {
      await db.cleanup();
    });

    it('opens, migrates, pings and closes', async () => {
      const store = await Store.open(db.config, { migrate: true });
      await store.ping();
      expect((await migrationStatus(store.knex)).pending).to.deep.equal([]);
      const { key } = await store.keys.create('acme');
      expect(await store.keys.verify(key)).to.include({ tenant: 'acme' });
      await store.close();
      const err = await store.ping().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(StreamgateError);
      expect((err as StreamgateError).code).to.equal('unavailable');
    });
  });

  it('rejects with unavailable when PostgreSQL cannot be reached', async () => {
    const err = await Store.open({ databaseUrl: 'postgres://postgres@127.0.0.1:1/none', sqliteFile: ':memory:' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(StreamgateError);
    expect((err as StreamgateError).code).to.equal('unavailable');
  });
});
