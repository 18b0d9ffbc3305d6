import { expect } from 'chai';
import type { Knex } from 'knex';
import { StreamgateError } from '../../lib/errors.js';
import { AuditWriter, type ConnectionAuditEvent } from '../../lib/store/audit.js';
import { migrateLatest, openDatabase } from '../../lib/store/database.js';
import { forEachDatabase, type TestDatabase } from '../support/databases.js';

/** Poll until `check` passes; for effects of the writer's own timer. */
async function eventually(check: () => Promise<unknown>, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

let seq = 0;
const open = (tenant: string, extra: Partial<ConnectionAuditEvent> = {}): ConnectionAuditEvent => ({
  tenant,
  userId: 'u1',
  connectionId: `c${++seq}`,
  transport: 'websocket',
  ip: '203.0.113.7',
  userAgent: 'Mozilla/5.0',
  ...extra,
});

describe('AuditWriter', () => {
  forEachDatabase((target) => {
    let db: TestDatabase;
    let knex: Knex;
    const writers: AuditWriter[] = [];
    const writer = (options: ConstructorParameters<typeof AuditWriter>[1] = {}): AuditWriter => {
      const w = new AuditWriter(knex, { flushIntervalMs: 60_000, ...options });
      writers.push(w);
      return w;
    };

    before(async () => {
      db = await target.open();
      knex = await openDatabase(db.config);
      await migrateLatest(knex);
    });

    afterEach(async () => {
      await Promise.all(writers.splice(0).map((w) => w.close().catch(() => undefined)));
    });

    after(async () => {
      await knex.destroy();
      await db.cleanup();
    });

    it('writes buffered rows on flush, normalised (Dates and numbers)', async () => {
      const w = writer();
      const at = new Date('2026-05-04T03:02:01.123Z');
      w.connectionOpened(open('norm', { at, device: 'ios' }));
      w.connectionClosed({ ...open('norm', { at: new Date(at.getTime() + 90_000), transport: 'sse' }), closeCode: 4001, durationMs: 90_000.4 });
      w.published({ tenant: 'norm', channel: 'room:1', event: 'msg', eventId: '1700000000000-0', publisherKind: 'server', publisherId: 'k1', at });
      expect(await w.recentConnections('norm', 10)).to.deep.equal([]);
      expect(w.buffered).to.equal(3);

      await w.flush();
      expect(w.buffered).to.equal(0);
      const [closed, opened] = await w.recentConnections('norm', 10);
      expect(opened).to.deep.include({
        tenant: 'norm',
        userId: 'u1',
        kind: 'open',
        transport: 'websocket',
        ip: '203.0.113.7',
        userAgent: 'Mozilla/5.0',
        device: 'ios',
        closeCode: null,
        durationMs: null,
      });
      expect(opened!.at).to.be.instanceOf(Date);
      expect(opened!.at.toISOString()).to.equal(at.toISOString());
      expect(opened!.id).to.be.a('number');
      expect(closed).to.deep.include({ kind: 'close', transport: 'sse', closeCode: 4001, durationMs: 90_000, device: null });
      expect(closed!.at.getTime()).to.equal(at.getTime() + 90_000);

      const [pub] = await w.recentPublishes('norm', 10);
      expect(pub).to.deep.include({
        tenant: 'norm',
        channel: 'room:1',
        event: 'msg',
        eventId: '1700000000000-0',
        publisherKind: 'server',
        publisherId: 'k1',
      });
      expect(pub!.id).to.be.a('number');
      expect(pub!.at).to.be.instanceOf(Date);
      expect(pub!.at.getTime()).to.equal(at.getTime());
    });

    it('keeps tenants apart and honours the limit, newest first', async () => {
      const w = writer();
      for (let i = 0; i < 5; i++) w.connectionOpened(open('iso-a', { at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)) }));
      w.connectionOpened(open('iso-b'));
      await w.flush();
      const rows = await w.recentConnections('iso-a', 3);
      expect(rows.map((r) => r.at.getUTCSeconds())).to.deep.equal([4, 3, 2]);
      expect(await w.recentConnections('iso-b', 10)).to.have.length(1);
    });

    it('flushes on its timer and when enough rows wait', async () => {
      const timed = writer({ flushIntervalMs: 20 });
      timed.connectionOpened(open('timer'));
      await eventually(async () => expect(await timed.recentConnections('timer', 10)).to.have.length(1));

      const sized = writer({ flushAt: 3 });
      for (let i = 0; i < 3; i++) sized.published({ tenant: 'sized', channel: 'c', event: 'e', eventId: `${i}-0`, publisherKind: 'user', publisherId: 'u' });
      await eventually(async () => expect(await sized.recentPublishes('sized', 10)).to.have.length(3));
    });

    it('inserts large batches in chunks', async () => {
      const w = writer({ chunkSize: 50 });
      for (let i = 0; i < 1234; i++) w.published({ tenant: 'bulk', channel: 'c', event: 'e', eventId: `${i}-0`, publisherKind: 'user', publisherId: 'u' });
      await w.flush();
      const [{ n }] = await knex('publish_audit').where({ tenant: 'bulk' }).count({ n: '*' });
      expect(Number(n)).to.equal(1234);
    });

    it('keeps rows through a failing flush and writes them later', async () => {
      const errors: unknown[] = [];
      const w = writer({ flushIntervalMs: 20, onError: (e) => errors.push(e) });
      // A renamed table fails the inserts like an outage would, on both databases.
      await knex.schema.renameTable('connection_audit', 'connection_audit_away');
      try {
        w.connectionOpened(open('outage'));
        w.published({ tenant: 'outage', channel: 'c', event: 'e', eventId: '1-0', publisherKind: 'user', publisherId: 'u' });
        const err = await w.flush().then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(StreamgateError);
        expect((err as StreamgateError).code).to.equal('unavailable');
        // The publish table was fine: only the connection row waits.
        expect(await w.recentPublishes('outage', 10)).to.have.length(1);
        expect(w.buffered).to.equal(1);
        w.connectionClosed({ ...open('outage'), closeCode: 1000, durationMs: 5 });
        await eventually(async () => expect(errors.length).to.be.greaterThan(0));
        expect(w.buffered).to.equal(2);
      } finally {
        await knex.schema.renameTable('connection_audit_away', 'connection_audit');
      }
      await eventually(async () => expect(await w.recentConnections('outage', 10)).to.have.length(2));
      expect(w.buffered).to.equal(0);
      expect(w.dropped).to.equal(0);
      const kinds = (await w.recentConnections('outage', 10)).map((r) => r.kind);
      expect(kinds).to.have.members(['open', 'close']);
    });

    it('bounds the buffer while failing, dropping the oldest rows', async () => {
      const w = writer({ maxBuffered: 3 });
      await knex.schema.renameTable('publish_audit', 'publish_audit_away');
      try {
        for (let i = 0; i < 4; i++) w.published({ tenant: 'bounded', channel: 'c', event: 'e', eventId: `${i}-0`, publisherKind: 'user', publisherId: 'u' });
        expect(w.dropped).to.equal(1);
        await w.flush().catch(() => undefined);
        w.published({ tenant: 'bounded', channel: 'c', event: 'e', eventId: '4-0', publisherKind: 'user', publisherId: 'u' });
        expect(w.buffered).to.equal(3);
        expect(w.dropped).to.equal(2);
      } finally {
        await knex.schema.renameTable('publish_audit_away', 'publish_audit');
      }
      await w.flush();
      const ids = (await w.recentPublishes('bounded', 10)).map((r) => r.eventId);
      expect(ids).to.have.members(['2-0', '3-0', '4-0']);
    });

    it('writes what is buffered on close, and drops rows recorded afterwards', async () => {
      const w = writer();
      w.connectionOpened(open('closing'));
      await w.close();
      expect(await w.recentConnections('closing', 10)).to.have.length(1);
      w.connectionOpened(open('closing'));
      expect(w.dropped).to.equal(1);
      expect(w.buffered).to.equal(0);
    });
  });
});
