import { expect } from 'chai';
import type { Knex } from 'knex';
import { AuditWriter } from '../../lib/store/audit.js';
import { toDate } from '../../lib/store/database.js';
import { ReadCursorStore } from '../../lib/store/read-cursors.js';
import { forEachDatabase, openMigrated } from '../support/databases.js';

describe('read cursors and presence history in the database', () => {
  forEachDatabase((target) => {
    let knex: Knex;
    let cleanup: () => Promise<void>;

    before(async () => {
      ({ knex, cleanup } = await openMigrated(target));
    });
    after(async () => {
      await cleanup();
    });

    it('upserts the latest cursor per user and channel in batches, keeping the other kind', async () => {
      const store = new ReadCursorStore(knex, { flushIntervalMs: 60_000 });
      try {
        store.receipt({ tenant: 'acme', userId: 'ann', channel: 'dm:ann:bo', kind: 'delivered', until: '10-0' });
        store.receipt({ tenant: 'acme', userId: 'ann', channel: 'dm:ann:bo', kind: 'delivered', until: '12-0' });
        store.receipt({ tenant: 'acme', userId: 'ann', channel: 'room:1', kind: 'read', until: '5-1' });
        store.receipt({ tenant: 'globex', userId: 'ann', channel: 'dm:ann:bo', kind: 'read', until: '99-0' });
        expect(await store.list('acme', 'ann')).to.deep.equal([]);
        await store.flush();
        let rows = await store.list('acme', 'ann');
        expect(rows.map(({ updatedAt: _, ...r }) => r)).to.deep.equal([
          { channel: 'dm:ann:bo', delivered: '12-0', read: null },
          { channel: 'room:1', delivered: '5-1', read: '5-1' },
        ]);
        expect(rows[0]!.updatedAt).to.be.instanceOf(Date);
        store.receipt({ tenant: 'acme', userId: 'ann', channel: 'dm:ann:bo', kind: 'read', until: '11-0' });
        await store.flush();
        rows = await store.list('acme', 'ann');
        expect(rows[0]).to.include({ channel: 'dm:ann:bo', read: '11-0' });
        expect((await store.list('globex', 'ann')).map((r) => r.read)).to.deep.equal(['99-0']);
      } finally {
        await store.close();
      }
    });

    it('writes presence history through the audit writer', async () => {
      const audit = new AuditWriter(knex, { flushIntervalMs: 60_000 });
      audit.presenceChanged({ tenant: 'acme', userId: 'ann', status: 'busy', device: 'mobile', customStatus: 'in surgery' });
      await audit.close();
      const rows: Array<Record<string, unknown>> = await knex('presence_history').where({ tenant: 'acme', user_id: 'ann' });
      expect(rows).to.have.length(1);
      expect(rows[0]).to.include({ status: 'busy', device: 'mobile', custom_status: 'in surgery' });
      expect(toDate(rows[0]!.at)).to.be.instanceOf(Date);
    });
  });
});
