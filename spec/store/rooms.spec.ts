import { expect } from 'chai';
import type { Knex } from 'knex';
import { ROOM_ROLES as AUTH_ROLES } from '../../lib/auth/room-roles.js';
import { StreamgateError } from '../../lib/errors.js';
import { isValidChannel } from '../../lib/protocol/channel.js';
import { ROOM_ROLES, RoomStore } from '../../lib/store/rooms.js';
import { forEachDatabase, openMigrated } from '../support/databases.js';

async function rejection(work: Promise<unknown>): Promise<StreamgateError> {
  try {
    await work;
  } catch (err) {
    expect(err).to.be.instanceOf(StreamgateError);
    return err as StreamgateError;
  }
  throw new Error('expected a rejection');
}

describe('RoomStore', () => {
  it('declares the same roles as lib/auth/room-roles', () => {
    expect([...ROOM_ROLES]).to.deep.equal([...AUTH_ROLES]);
  });

  forEachDatabase((target) => {
    let knex: Knex;
    let cleanup: () => Promise<void>;
    let rooms: RoomStore;
    let tenant: string;
    let seq = 0;

    before(async () => {
      ({ knex, cleanup } = await openMigrated(target));
    });

    after(async () => {
      await cleanup();
    });

    beforeEach(() => {
      rooms = new RoomStore(knex);
      tenant = `t${++seq}`;
    });

    it('creates a room with a channel-safe id; the creator is its owner', async () => {
      const before = Date.now();
      const room = await rooms.create(tenant, { name: '  Design  ', metadata: { topic: 'ui', n: [1, 2] } }, 'ann');
      expect(room.id).to.have.length(16);
      expect(isValidChannel(`room:${room.id}`)).to.equal(true);
      expect(room).to.include({ name: 'Design', archived: false, archivedAt: null, createdBy: 'ann', role: 'owner' });
      expect(room.metadata).to.deep.equal({ topic: 'ui', n: [1, 2] });
      expect(room.createdAt.getTime()).to.be.within(before, Date.now());
      expect(await rooms.members(tenant, room.id)).to.deep.equal([{ userId: 'ann', role: 'owner', addedBy: 'ann', addedAt: room.createdAt }]);
      expect(await rooms.role(tenant, room.id, 'ann')).to.equal('owner');
    });

    it('reads a room back with JSON metadata as an object and Dates', async () => {
      const created = await rooms.create(tenant, { name: 'Ops' }, 'ann');
      const room = await rooms.get(tenant, created.id);
      expect(room).to.not.equal(null);
      expect(room!.metadata).to.deep.equal({});
      expect(room!.createdAt).to.be.instanceOf(Date);
      expect(room!.updatedAt).to.be.instanceOf(Date);
      expect(room!.createdAt.getTime()).to.equal(created.createdAt.getTime());
      expect(room!.role).to.equal(undefined);
      const { role: _role, ...rest } = created;
      expect(room).to.deep.equal(rest);
    });

    it('keeps tenants apart', async () => {
      const room = await rooms.create(tenant, { name: 'Ops' }, 'ann');
      expect(await rooms.get('other', room.id)).to.equal(null);
      expect(await rooms.role('other', room.id, 'ann')).to.equal(null);
      expect(await rooms.members('other', room.id)).to.deep.equal([]);
      expect(await rooms.listForUser('other', 'ann')).to.deep.equal([]);
      expect((await rejection(rooms.update('other', room.id, { name: 'x' }))).code).to.equal('not_found');
      expect((await rejection(rooms.addMember('other', room.id, 'bob', 'member', 'ann'))).code).to.equal('not_found');
      expect((await rejection(rooms.delete('other', room.id))).code).to.equal('not_found');
      expect(await rooms.get(tenant, room.id)).to.not.equal(null);
    });

    it('validates names, metadata, roles and user ids', async () => {
      for (const name of ['', '   ', 'x'.repeat(201), 7 as unknown as string]) {
        expect((await rejection(rooms.create(tenant, { name }, 'ann'))).code, String(name)).to.equal('bad_request');
      }
      await rooms.create(tenant, { name: 'x'.repeat(200) }, 'ann');
      for (const metadata of [[], 'text', null, { big: 'x'.repeat(16 * 1024) }] as unknown[]) {
        const err = await rejection(rooms.create(tenant, { name: 'ok', metadata: metadata as Record<string, unknown> }, 'ann'));
        expect(err.code).to.equal('bad_request');
      }
      const room = await rooms.create(tenant, { name: 'ok' }, 'ann');
      expect((await rejection(rooms.addMember(tenant, room.id, 'bob', 'king' as 'owner', 'ann'))).code).to.equal('bad_request');
      expect((await rejection(rooms.addMember(tenant, room.id, '', 'member', 'ann'))).code).to.equal('bad_request');
      expect((await rejection(rooms.update(tenant, room.id, {}))).code).to.equal('bad_request');
    });

    it('renames and replaces metadata, moving updatedAt', async () => {
      const room = await rooms.create(tenant, { name: 'Old', metadata: { a: 1 } }, 'ann');
      await new Promise((r) => setTimeout(r, 5));
      const renamed = await rooms.update(tenant, room.id, { name: 'New' });
      expect(renamed.name).to.equal('New');
      expect(renamed.metadata).to.deep.equal({ a: 1 });
      expect(renamed.updatedAt.getTime()).to.be.greaterThan(room.updatedAt.getTime());
      const meta = await rooms.update(tenant, room.id, { metadata: { b: { c: true } } });
      expect(meta).to.include({ name: 'New' });
      expect(meta.metadata).to.deep.equal({ b: { c: true } });
      expect((await rejection(rooms.update(tenant, 'nope', { name: 'x' }))).code).to.equal('not_found');
    });

    it('archives and unarchives, reporting whether anything changed', async () => {
      const room = await rooms.create(tenant, { name: 'Old' }, 'ann');
      const a = await rooms.archive(tenant, room.id, true);
      expect(a.changed).to.equal(true);
      expect(a.room.archived).to.equal(true);
      expect(a.room.archivedAt).to.be.instanceOf(Date);
      expect((await rooms.archive(tenant, room.id, true)).changed).to.equal(false);
      expect((await rooms.get(tenant, room.id))!.archived).to.equal(true);
      const u = await rooms.archive(tenant, room.id, false);
      expect(u.changed).to.equal(true);
      expect(u.room).to.include({ archived: false, archivedAt: null });
      expect((await rooms.archive(tenant, room.id, false)).changed).to.equal(false);
      expect((await rejection(rooms.archive(tenant, 'nope', true))).code).to.equal('not_found');
    });

    it('adds members once, changes roles and removes them', async () => {
      const room = await rooms.create(tenant, { name: 'R' }, 'ann');
      const bob = await rooms.addMember(tenant, room.id, 'bob', 'viewer', 'ann');
      expect(bob).to.include({ userId: 'bob', role: 'viewer', addedBy: 'ann' });
      expect(bob.addedAt).to.be.instanceOf(Date);
      expect((await rejection(rooms.addMember(tenant, room.id, 'bob', 'member', 'ann'))).code).to.equal('conflict');
      const changed = await rooms.setRole(tenant, room.id, 'bob', 'admin');
      expect(changed.previous).to.equal('viewer');
      expect(changed.member).to.include({ userId: 'bob', role: 'admin' });
      expect(changed.member.addedAt.getTime()).to.equal(bob.addedAt.getTime());
      expect((await rooms.members(tenant, room.id)).map((m) => [m.userId, m.role])).to.deep.equal([
        ['ann', 'owner'],
        ['bob', 'admin'],
      ]);
      expect(await rooms.removeMember(tenant, room.id, 'bob')).to.equal('admin');
      expect(await rooms.role(tenant, room.id, 'bob')).to.equal(null);
      expect((await rejection(rooms.removeMember(tenant, room.id, 'bob'))).code).to.equal('not_found');
      expect((await rejection(rooms.setRole(tenant, room.id, 'bob', 'member'))).code).to.equal('not_found');
      expect((await rejection(rooms.addMember(tenant, 'nope', 'bob', 'member', 'ann'))).code).to.equal('not_found');
    });

    it('never leaves a room without an owner', async () => {
      const room = await rooms.create(tenant, { name: 'R' }, 'ann');
      expect((await rejection(rooms.removeMember(tenant, room.id, 'ann'))).code).to.equal('conflict');
      expect((await rejection(rooms.setRole(tenant, room.id, 'ann', 'admin'))).code).to.equal('conflict');
      await rooms.addMember(tenant, room.id, 'bob', 'owner', 'ann');
      // Two owners demoting each other at once: one of them must stay.
      const settled = await Promise.allSettled([
        rooms.setRole(tenant, room.id, 'ann', 'member'),
        rooms.setRole(tenant, room.id, 'bob', 'member'),
      ]);
      expect(settled.filter((s) => s.status === 'fulfilled')).to.have.length(1);
      const owners = (await rooms.members(tenant, room.id)).filter((m) => m.role === 'owner');
      expect(owners).to.have.length(1);
      expect(await rooms.removeMember(tenant, room.id, owners[0]!.userId === 'ann' ? 'bob' : 'ann')).to.equal('member');
    });

    it('deletes a room with its members', async () => {
      const room = await rooms.create(tenant, { name: 'R' }, 'ann');
      await rooms.addMember(tenant, room.id, 'bob', 'member', 'ann');
      await rooms.delete(tenant, room.id);
      expect(await rooms.get(tenant, room.id)).to.equal(null);
      expect(await rooms.members(tenant, room.id)).to.deep.equal([]);
      expect(await rooms.role(tenant, room.id, 'bob')).to.equal(null);
      expect(await knex('room_members').where({ tenant, room_id: room.id })).to.deep.equal([]);
      expect((await rejection(rooms.delete(tenant, room.id))).code).to.equal('not_found');
    });

    it('lists a user\'s rooms by name with their role, searching case-insensitively', async () => {
      const alpha = await rooms.create(tenant, { name: 'Alpha Team' }, 'ann');
      const beta = await rooms.create(tenant, { name: 'beta team' }, 'bob');
      const gamma = await rooms.create(tenant, { name: 'Gamma ÉQUIPE 100%_done' }, 'ann');
      await rooms.create(tenant, { name: 'Not mine' }, 'bob');
      await rooms.addMember(tenant, beta.id, 'ann', 'viewer', 'bob');
      const all = await rooms.listForUser(tenant, 'ann');
      expect(all.map((r) => [r.id, r.role])).to.deep.equal([
        [alpha.id, 'owner'],
        [beta.id, 'viewer'],
        [gamma.id, 'owner'],
      ]);
      expect(all[0]!.createdAt).to.be.instanceOf(Date);
      expect(all[0]!.metadata).to.deep.equal({});
      expect((await rooms.listForUser(tenant, 'ann', { query: 'TEAM' })).map((r) => r.id)).to.deep.equal([alpha.id, beta.id]);
      expect((await rooms.listForUser(tenant, 'ann', { query: 'équipe' })).map((r) => r.id)).to.deep.equal([gamma.id]);
      // LIKE wildcards match literally.
      expect((await rooms.listForUser(tenant, 'ann', { query: '%' })).map((r) => r.id)).to.deep.equal([gamma.id]);
      expect((await rooms.listForUser(tenant, 'ann', { query: '0%_d' })).map((r) => r.id)).to.deep.equal([gamma.id]);
      expect(await rooms.listForUser(tenant, 'ann', { query: 'a_p' })).to.deep.equal([]);
      expect((await rooms.listForUser(tenant, 'ann', { limit: 1, offset: 1 })).map((r) => r.id)).to.deep.equal([beta.id]);
      expect((await rooms.roomIdsForUser(tenant, 'ann')).sort()).to.deep.equal([alpha.id, beta.id, gamma.id].sort());
      for (const bad of [{ limit: 0 }, { limit: 201 }, { offset: -1 }, { limit: 1.5 }]) {
        expect((await rejection(rooms.listForUser(tenant, 'ann', bad))).code).to.equal('bad_request');
      }
    });

    it('leaves archived rooms out of lists unless asked', async () => {
      const live = await rooms.create(tenant, { name: 'a live' }, 'ann');
      const old = await rooms.create(tenant, { name: 'b old' }, 'ann');
      await rooms.archive(tenant, old.id, true);
      expect((await rooms.listForUser(tenant, 'ann')).map((r) => r.id)).to.deep.equal([live.id]);
      const both = await rooms.listForUser(tenant, 'ann', { includeArchived: true });
      expect(both.map((r) => [r.id, r.archived])).to.deep.equal([
        [live.id, false],
        [old.id, true],
      ]);
      expect(both[1]!.archivedAt).to.be.instanceOf(Date);
    });

    describe('access cache', () => {
      it('answers role and archived state, null for no room', async () => {
        const room = await rooms.create(tenant, { name: 'R' }, 'ann');
        expect(await rooms.access(tenant, room.id, 'ann')).to.deep.equal({ role: 'owner', archived: false });
        expect(await rooms.access(tenant, room.id, 'zed')).to.deep.equal({ role: null, archived: false });
        expect(await rooms.access(tenant, 'nope', 'ann')).to.equal(null);
      });

      it('is invalidated on this instance by every change', async () => {
        const room = await rooms.create(tenant, { name: 'R' }, 'ann');
        expect(await rooms.role(tenant, room.id, 'bob')).to.equal(null); // cached
        await rooms.addMember(tenant, room.id, 'bob', 'viewer', 'ann');
        expect(await rooms.role(tenant, room.id, 'bob')).to.equal('viewer');
        await rooms.setRole(tenant, room.id, 'bob', 'member');
        expect(await rooms.role(tenant, room.id, 'bob')).to.equal('member');
        await rooms.archive(tenant, room.id, true);
        expect(await rooms.access(tenant, room.id, 'bob')).to.deep.equal({ role: 'member', archived: true });
        await rooms.archive(tenant, room.id, false);
        expect(await rooms.access(tenant, room.id, 'bob')).to.deep.equal({ role: 'member', archived: false });
        await rooms.removeMember(tenant, room.id, 'bob');
        expect(await rooms.role(tenant, room.id, 'bob')).to.equal(null);
        expect(await rooms.role(tenant, room.id, 'ann')).to.equal('owner');
        await rooms.delete(tenant, room.id);
        expect(await rooms.access(tenant, room.id, 'ann')).to.equal(null);
      });

      it('serves other instances\' changes after the TTL, or at once when fresh', async () => {
        const other = new RoomStore(knex, { cacheTtlMs: 100 });
        const room = await rooms.create(tenant, { name: 'R' }, 'ann');
        expect(await other.role(tenant, room.id, 'bob')).to.equal(null);
        await rooms.addMember(tenant, room.id, 'bob', 'admin', 'ann');
        expect(await other.role(tenant, room.id, 'bob')).to.equal(null); // still cached
        expect((await other.access(tenant, room.id, 'bob', { fresh: true }))?.role).to.equal('admin');
        await rooms.removeMember(tenant, room.id, 'bob');
        expect(await other.role(tenant, room.id, 'bob')).to.equal('admin'); // refreshed entry, cached again
        await new Promise((r) => setTimeout(r, 120));
        expect(await other.role(tenant, room.id, 'bob')).to.equal(null);
      });

      it('drops a room\'s answers on invalidate (changes seen from other nodes)', async () => {
        const other = new RoomStore(knex);
        const room = await rooms.create(tenant, { name: 'R' }, 'ann');
        await rooms.addMember(tenant, room.id, 'bob', 'member', 'ann');
        expect(await other.role(tenant, room.id, 'bob')).to.equal('member');
        expect(await other.role(tenant, room.id, 'ann')).to.equal('owner');
        await rooms.setRole(tenant, room.id, 'bob', 'viewer');
        await rooms.addMember(tenant, room.id, 'cid', 'owner', 'ann');
        await rooms.setRole(tenant, room.id, 'ann', 'admin');
        other.invalidate(tenant, room.id, 'bob');
        expect(await other.role(tenant, room.id, 'bob')).to.equal('viewer');
        expect(await other.role(tenant, room.id, 'ann')).to.equal('owner'); // still cached
        other.invalidate(tenant, room.id);
        expect(await other.role(tenant, room.id, 'ann')).to.equal('admin');
      });

      it('stays bounded', async () => {
        const small = new RoomStore(knex, { cacheSize: 2 });
        const room = await rooms.create(tenant, { name: 'R' }, 'ann');
        for (const u of ['a', 'b', 'c', 'd']) await small.role(tenant, room.id, u);
        const cache = (small as unknown as { cache: Map<string, unknown> }).cache;
        expect(cache.size).to.equal(2);
      });
    });
  });
});
