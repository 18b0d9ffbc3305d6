import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createAuthenticator } from '../../lib/auth/authenticate.js';
import type { UserPrincipal } from '../../lib/auth/principal.js';
import {
  mayDeleteRoom,
  mayInvite,
  mayManageRoom,
  mayPublish,
  mayRead,
  mayRemove,
  maySetRole,
  mayUseRoomChannel,
  isReservedRoomEvent,
  roomChannelAccess,
  roomIdOf,
  type RoomAccess,
} from '../../lib/auth/room-roles.js';
import type { Engine } from '../../lib/engine/engine.js';
import { StreamgateError, notFound, unavailable } from '../../lib/errors.js';
import { sendError } from '../../lib/http/app.js';
import { createRoomsRouter } from '../../lib/http/rooms.js';
import { RoomStore } from '../../lib/store/rooms.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';

function expectError(res: { status: number; body: any }, status: number, code: string): void {
  expect(res.status, JSON.stringify(res.body)).to.equal(status);
  expect(res.body).to.have.keys('error');
  expect(res.body.error.code).to.equal(code);
  expect(res.body.error.message).to.be.a('string').and.not.empty;
}

describe('rooms HTTP API', function () {
  let g: TestGateway;
  let server: Server;
  let base: string;
  let key: string;
  let otherKey: string;
  const tokens = new Map<string, string>();

  /** A token of tenant `acme` (or `tid`). */
  const as = (user: string, tid = 'acme'): string => {
    const k = `${tid}/${user}`;
    if (!tokens.has(k)) tokens.set(k, g.token({ sub: user, tid, name: user.toUpperCase() }));
    return tokens.get(k)!;
  };
  const api = (method: string, path: string, token: string, body?: unknown) =>
    request(`${base}/v1/rooms${path}`, { method, token, ...(body === undefined ? {} : { body }) });
  /** The room channel's events, read through the gateway with a server key. */
  const events = async (roomId: string, credential = key): Promise<Array<{ event: string; data: any; publisher?: any }>> => {
    const res = await request(`${g.url}/v1/channels/room:${roomId}/events`, { token: credential });
    expect(res.status, JSON.stringify(res.body)).to.equal(200);
    return res.body.events.map((e: any) => ({ event: e.event, data: e.data, ...(e.publisher ? { publisher: e.publisher } : {}) }));
  };
  const lastEvent = async (roomId: string) => (await events(roomId)).at(-1);

  /** A room owned by `ann` with ada (admin), mel (member) and vic (viewer). */
  async function team(name = 'Team'): Promise<string> {
    const created = await api('POST', '/', as('ann'), { name });
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    const id: string = created.body.id;
    for (const [user, role] of [['ada', 'admin'], ['mel', 'member'], ['vic', 'viewer']]) {
      const res = await api('POST', `/${id}/members`, as('ann'), { user_id: user, role });
      expect(res.status, JSON.stringify(res.body)).to.equal(201);
    }
    return id;
  }

  before(async () => {
    g = await startGateway();
    key = await g.serverKey('acme');
    otherKey = await g.serverKey('globex');
    ({ server, base } = await serveRooms(g.gateway.engine));
  });

  after(async () => {
    await stop(server);
    await g.close();
  });

  /** The rooms router on its own port, as the gateway mounts it: `/v1/rooms`, errors through `sendError`. */
  async function serveRooms(engine: Engine): Promise<{ server: Server; base: string }> {
    const app = express();
    app.use(
      '/v1/rooms',
      createRoomsRouter({
        rooms: new RoomStore(g.gateway.store.knex),
        publish: { config: g.gateway.config, engine, metrics: g.gateway.metrics },
        authenticate: createAuthenticator(g.gateway.config.jwt, g.gateway.store.keys),
      }),
    );
    app.use((req: Request, res: Response) => sendError(res, notFound(`no route ${req.method} ${req.path}`)));
    app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => sendError(res, err));
    const s = createServer(app);
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    return { server: s, base: `http://127.0.0.1:${(s.address() as AddressInfo).port}` };
  }

  async function stop(s: Server): Promise<void> {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  describe('rooms', () => {
    it('creates a room: 201, the creator is owner, room.created on the room channel', async () => {
      const res = await api('POST', '/', as('ann'), { name: 'Launch', metadata: { color: 'blue' } });
      expect(res.status).to.equal(201);
      expect(res.body).to.include({ name: 'Launch', archived: false, archived_at: null, created_by: 'ann', role: 'owner' });
      expect(res.body.metadata).to.deep.equal({ color: 'blue' });
      expect(res.body.id).to.match(/^[A-Za-z0-9_-]{16}$/);
      expect(new Date(res.body.created_at).toISOString()).to.equal(res.body.created_at);
      expect(await events(res.body.id)).to.deep.equal([
        {
          event: 'room.created',
          data: { room_id: res.body.id, name: 'Launch', metadata: { color: 'blue' }, user_id: 'ann', role: 'owner', by: 'ann' },
          publisher: { id: 'ann', name: 'ANN' },
        },
      ]);
    });

    it('shows a room with its members to members only', async () => {
      const id = await team();
      const res = await api('GET', `/${id}`, as('vic'));
      expect(res.status).to.equal(200);
      expect(res.body).to.include({ id, name: 'Team', role: 'viewer' });
      expect(res.body.members.map((m: any) => [m.user_id, m.role, m.added_by])).to.deep.equal([
        ['ann', 'owner', 'ann'],
        ['ada', 'admin', 'ann'],
        ['mel', 'member', 'ann'],
        ['vic', 'viewer', 'ann'],
      ]);
      expect((await api('GET', `/${id}/members`, as('mel'))).body.members).to.have.length(4);
      expectError(await api('GET', `/${id}`, as('zed')), 404, 'not_found');
      expectError(await api('GET', `/${id}/members`, as('zed')), 404, 'not_found');
      expectError(await api('GET', '/nosuchroom', as('ann')), 404, 'not_found');
    });

    it('hides rooms from other tenants, whatever the credential', async () => {
      const id = await team();
      expectError(await api('GET', `/${id}`, as('ann', 'globex')), 404, 'not_found');
      expectError(await api('PATCH', `/${id}`, as('ann', 'globex'), { name: 'x' }), 404, 'not_found');
      expectError(await api('DELETE', `/${id}`, as('ann', 'globex')), 404, 'not_found');
      expectError(await api('POST', `/${id}/members`, as('ann', 'globex'), { user_id: 'x' }), 404, 'not_found');
      expectError(await api('GET', `/${id}`, otherKey), 404, 'not_found');
      expectError(await api('DELETE', `/${id}/members/mel`, otherKey), 404, 'not_found');
      expect((await api('GET', '/', as('ann', 'globex'))).body.rooms).to.deep.equal([]);
      expect((await api('GET', `/${id}`, as('ann'))).status).to.equal(200);
    });

    it('a non-member gets 404 for every operation, and nothing changes', async () => {
      const id = await team();
      const zed = as('zed');
      expectError(await api('PATCH', `/${id}`, zed, { name: 'x' }), 404, 'not_found');
      expectError(await api('POST', `/${id}/archive`, zed), 404, 'not_found');
      expectError(await api('DELETE', `/${id}`, zed), 404, 'not_found');
      expectError(await api('POST', `/${id}/members`, zed, { user_id: 'zed' }), 404, 'not_found');
      expectError(await api('PATCH', `/${id}/members/mel`, zed, { role: 'viewer' }), 404, 'not_found');
      expectError(await api('DELETE', `/${id}/members/mel`, zed), 404, 'not_found');
      expectError(await api('DELETE', `/${id}/members/zed`, zed), 404, 'not_found');
      const room = await api('GET', `/${id}`, as('ann'));
      expect(room.body).to.include({ name: 'Team', archived: false });
      expect(room.body.members).to.have.length(4);
    });

    it('renames and sets metadata (admin+), announcing room.updated', async () => {
      const id = await team();
      const res = await api('PATCH', `/${id}`, as('ada'), { name: 'Renamed', metadata: { topic: 'q3' } });
      expect(res.status).to.equal(200);
      expect(res.body).to.include({ name: 'Renamed', role: 'admin' });
      expect(res.body.metadata).to.deep.equal({ topic: 'q3' });
      expect(await lastEvent(id)).to.deep.equal({
        event: 'room.updated',
        data: { room_id: id, name: 'Renamed', metadata: { topic: 'q3' }, by: 'ada' },
        publisher: { id: 'ada', name: 'ADA' },
      });
      await api('PATCH', `/${id}`, as('ann'), { metadata: {} });
      expect((await lastEvent(id))!.data).to.deep.equal({ room_id: id, metadata: {}, by: 'ann' });
      expect((await api('GET', `/${id}`, as('mel'))).body).to.include({ name: 'Renamed' });
    });

    it('refuses bad bodies with 400 and oversized ones with 413', async () => {
      const ann = as('ann');
      expectError(await api('POST', '/', ann, {}), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: '' }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'x'.repeat(201) }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 5 }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'ok', metadata: [1] }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'ok', metadata: null }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'ok', metadata: { s: 'x'.repeat(16 * 1024) } }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'ok', colour: 'red' }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'ok', user_id: 'bob' }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, ['name']), 400, 'bad_request');
      expectError(await request(`${base}/v1/rooms`, { token: ann, rawBody: '{"name":', headers: { 'content-type': 'application/json' } }), 400, 'bad_request');
      expectError(await api('POST', '/', ann, { name: 'ok', metadata: { s: 'x'.repeat(70 * 1024) } }), 413, 'too_large');
      const id = await team();
      expectError(await api('PATCH', `/${id}`, ann, {}), 400, 'bad_request');
      expectError(await api('PATCH', `/${id}`, ann, { name: '  ' }), 400, 'bad_request');
      expectError(await api('POST', `/${id}/members`, ann, { user_id: 'bob', role: 'king' }), 400, 'bad_request');
      expectError(await api('POST', `/${id}/members`, ann, {}), 400, 'bad_request');
      expectError(await api('PATCH', `/${id}/members/mel`, ann, {}), 400, 'bad_request');
      expect((await api('GET', `/${id}`, ann)).body.name).to.equal('Team');
    });

    it('asks for credentials', async () => {
      expectError(await request(`${base}/v1/rooms`), 401, 'unauthorized');
      expectError(await request(`${base}/v1/rooms`, { body: { name: 'x' } }), 401, 'unauthorized');
      expectError(await request(`${base}/v1/rooms`, { token: 'not-a-token' }), 401, 'unauthorized');
    });

    it('deletes a room (owner only), announcing room.deleted', async () => {
      const id = await team();
      expectError(await api('DELETE', `/${id}`, as('ada')), 403, 'forbidden');
      const res = await api('DELETE', `/${id}`, as('ann'));
      expect(res.status).to.equal(204);
      expect(await lastEvent(id)).to.deep.equal({ event: 'room.deleted', data: { room_id: id, by: 'ann' }, publisher: { id: 'ann', name: 'ANN' } });
      expectError(await api('GET', `/${id}`, as('ann')), 404, 'not_found');
      expect((await api('GET', '/', as('mel'))).body.rooms.map((r: any) => r.id)).not.to.include(id);
    });
  });

  describe('listing', () => {
    it('lists the caller\'s rooms by name with their role, with search, archived and paging', async () => {
      const kim = as('kim');
      const ids: Record<string, string> = {};
      for (const name of ['Zeta chat', 'alpha CHAT', 'Beta', 'Old chat']) {
        ids[name] = (await api('POST', '/', as('lee'), { name })).body.id;
        await api('POST', `/${ids[name]}/members`, as('lee'), { user_id: 'kim', role: name === 'Beta' ? 'viewer' : 'member' });
      }
      await api('POST', `/${ids['Old chat']}/archive`, as('lee'));
      await api('POST', '/', as('lee'), { name: 'Not for kim chat' });
      const all = await api('GET', '/', kim);
      expect(all.status).to.equal(200);
      expect(all.body.rooms.map((r: any) => [r.name, r.role])).to.deep.equal([
        ['alpha CHAT', 'member'],
        ['Beta', 'viewer'],
        ['Zeta chat', 'member'],
      ]);
      expect((await api('GET', '/?q=Chat', kim)).body.rooms.map((r: any) => r.name)).to.deep.equal(['alpha CHAT', 'Zeta chat']);
      expect((await api('GET', '/?q=chat&archived=true', kim)).body.rooms.map((r: any) => [r.name, r.archived])).to.deep.equal([
        ['alpha CHAT', false],
        ['Old chat', true],
        ['Zeta chat', false],
      ]);
      expect((await api('GET', '/?limit=1&offset=1', kim)).body.rooms.map((r: any) => r.name)).to.deep.equal(['Beta']);
      expect((await api('GET', '/?user=kim', kim)).body.rooms).to.have.length(3);
      expectError(await api('GET', '/?user=lee', kim), 403, 'forbidden');
      expectError(await api('GET', '/?limit=0', kim), 400, 'bad_request');
      expectError(await api('GET', '/?limit=abc', kim), 400, 'bad_request');
      expectError(await api('GET', '/?archived=maybe', kim), 400, 'bad_request');
    });
  });

  describe('members and roles', () => {
    it('invites (member by default), announcing member.added; 409 for a member', async () => {
      const id = await team();
      const res = await api('POST', `/${id}/members`, as('ada'), { user_id: 'bob' });
      expect(res.status).to.equal(201);
      expect(res.body).to.include({ user_id: 'bob', role: 'member', added_by: 'ada' });
      expect(await lastEvent(id)).to.deep.equal({
        event: 'member.added',
        data: { room_id: id, user_id: 'bob', role: 'member', by: 'ada' },
        publisher: { id: 'ada', name: 'ADA' },
      });
      expect((await api('GET', `/${id}`, as('bob'))).body.role).to.equal('member');
      expectError(await api('POST', `/${id}/members`, as('ann'), { user_id: 'bob', role: 'admin' }), 409, 'conflict');
    });

    it('a viewer reads but may do nothing else except leave', async () => {
      const id = await team();
      const vic = as('vic');
      expect((await api('GET', `/${id}`, vic)).status).to.equal(200);
      expectError(await api('PATCH', `/${id}`, vic, { name: 'x' }), 403, 'forbidden');
      expectError(await api('POST', `/${id}/archive`, vic), 403, 'forbidden');
      expectError(await api('DELETE', `/${id}`, vic), 403, 'forbidden');
      expectError(await api('POST', `/${id}/members`, vic, { user_id: 'bob', role: 'viewer' }), 403, 'forbidden');
      expectError(await api('PATCH', `/${id}/members/vic`, vic, { role: 'member' }), 403, 'forbidden');
      expectError(await api('DELETE', `/${id}/members/mel`, vic), 403, 'forbidden');
      expect((await api('DELETE', `/${id}/members/vic`, vic)).status).to.equal(204);
      expect(await lastEvent(id)).to.deep.equal({
        event: 'member.removed',
        data: { room_id: id, user_id: 'vic', role: 'viewer', by: 'vic' },
        publisher: { id: 'vic', name: 'VIC' },
      });
      expectError(await api('GET', `/${id}`, vic), 404, 'not_found');
    });

    it('a member cannot invite, change roles or remove others', async () => {
      const id = await team();
      const mel = as('mel');
      expectError(await api('POST', `/${id}/members`, mel, { user_id: 'bob' }), 403, 'forbidden');
      expectError(await api('PATCH', `/${id}/members/vic`, mel, { role: 'member' }), 403, 'forbidden');
      expectError(await api('PATCH', `/${id}/members/mel`, mel, { role: 'admin' }), 403, 'forbidden');
      expectError(await api('DELETE', `/${id}/members/vic`, mel), 403, 'forbidden');
      expectError(await api('PATCH', `/${id}`, mel, { name: 'x' }), 403, 'forbidden');
      // Stepping down is allowed.
      expect((await api('PATCH', `/${id}/members/mel`, mel, { role: 'viewer' })).body.role).to.equal('viewer');
    });

    it('an admin manages members and viewers but not owners or admins', async () => {
      const id = await team();
      const ada = as('ada');
      expectError(await api('POST', `/${id}/members`, ada, { user_id: 'bob', role: 'admin' }), 403, 'forbidden');
      expectError(await api('POST', `/${id}/members`, ada, { user_id: 'bob', role: 'owner' }), 403, 'forbidden');
      expectError(await api('PATCH', `/${id}/members/mel`, ada, { role: 'admin' }), 403, 'forbidden');
      expectError(await api('PATCH', `/${id}/members/ann`, ada, { role: 'member' }), 403, 'forbidden');
      expectError(await api('DELETE', `/${id}/members/ann`, ada), 403, 'forbidden');
      expectError(await api('DELETE', `/${id}`, ada), 403, 'forbidden');
      await api('POST', `/${id}/members`, as('ann'), { user_id: 'adi', role: 'admin' });
      expectError(await api('DELETE', `/${id}/members/adi`, ada), 403, 'forbidden');

      const changed = await api('PATCH', `/${id}/members/vic`, ada, { role: 'member' });
      expect(changed.status).to.equal(200);
      expect(changed.body).to.include({ user_id: 'vic', role: 'member' });
      expect(await lastEvent(id)).to.deep.equal({
        event: 'member.role_changed',
        data: { room_id: id, user_id: 'vic', role: 'member', previous_role: 'viewer', by: 'ada' },
        publisher: { id: 'ada', name: 'ADA' },
      });
      expect((await api('DELETE', `/${id}/members/mel`, ada)).status).to.equal(204);
      expect((await lastEvent(id))!.data).to.deep.equal({ room_id: id, user_id: 'mel', role: 'member', by: 'ada' });
      expectError(await api('GET', `/${id}`, as('mel')), 404, 'not_found');
      expectError(await api('DELETE', `/${id}/members/mel`, ada), 404, 'not_found');
      expectError(await api('PATCH', `/${id}/members/nobody`, ada, { role: 'viewer' }), 404, 'not_found');
      // An admin may step down.
      expect((await api('PATCH', `/${id}/members/ada`, ada, { role: 'member' })).body.role).to.equal('member');
      expectError(await api('POST', `/${id}/members`, ada, { user_id: 'bob' }), 403, 'forbidden');
    });

    it('an owner makes and removes owners and admins; the last owner cannot leave', async () => {
      const id = await team();
      const ann = as('ann');
      expectError(await api('DELETE', `/${id}/members/ann`, ann), 409, 'conflict');
      expectError(await api('PATCH', `/${id}/members/ann`, ann, { role: 'admin' }), 409, 'conflict');
      expect((await api('PATCH', `/${id}/members/mel`, ann, { role: 'admin' })).body.role).to.equal('admin');
      expect((await api('DELETE', `/${id}/members/ada`, ann)).status).to.equal(204);
      expect((await api('PATCH', `/${id}/members/mel`, ann, { role: 'owner' })).body.role).to.equal('owner');
      const before = (await events(id)).length;
      // The same role again changes nothing and announces nothing.
      expect((await api('PATCH', `/${id}/members/mel`, ann, { role: 'owner' })).status).to.equal(200);
      expect(await events(id)).to.have.length(before);
      // With a second owner, ann may leave; then mel is the last owner.
      expect((await api('DELETE', `/${id}/members/ann`, ann)).status).to.equal(204);
      expectError(await api('DELETE', `/${id}/members/mel`, as('mel')), 409, 'conflict');
      const room = await api('GET', `/${id}`, as('mel'));
      expect(room.body.members.map((m: any) => [m.user_id, m.role])).to.deep.equal([
        ['mel', 'owner'],
        ['vic', 'viewer'],
      ]);
    });
  });

  describe('archived rooms', () => {
    it('refuse every change but unarchive (and deletion by an owner)', async () => {
      const id = await team();
      expectError(await api('POST', `/${id}/archive`, as('mel')), 403, 'forbidden');
      const archived = await api('POST', `/${id}/archive`, as('ada'));
      expect(archived.status).to.equal(200);
      expect(archived.body.archived).to.equal(true);
      expect(new Date(archived.body.archived_at).getTime()).to.be.closeTo(Date.now(), 5000);
      expect(await lastEvent(id)).to.deep.equal({ event: 'room.archived', data: { room_id: id, by: 'ada' }, publisher: { id: 'ada', name: 'ADA' } });
      const count = (await events(id)).length;

      const ann = as('ann');
      expectError(await api('PATCH', `/${id}`, ann, { name: 'x' }), 409, 'conflict');
      expectError(await api('POST', `/${id}/members`, ann, { user_id: 'bob' }), 409, 'conflict');
      expectError(await api('PATCH', `/${id}/members/mel`, ann, { role: 'admin' }), 409, 'conflict');
      expectError(await api('DELETE', `/${id}/members/mel`, ann), 409, 'conflict');
      expectError(await api('DELETE', `/${id}/members/vic`, as('vic')), 409, 'conflict');
      expectError(await api('PATCH', `/${id}`, key, { name: 'x' }), 409, 'conflict');
      // Archiving again is a no-op: 200, no second event.
      expect((await api('POST', `/${id}/archive`, ann)).status).to.equal(200);
      expect(await events(id)).to.have.length(count);
      // Members still read it.
      const read = await api('GET', `/${id}`, as('vic'));
      expect(read.body).to.include({ archived: true, name: 'Team' });
      expect(read.body.members).to.have.length(4);

      expectError(await api('DELETE', `/${id}/archive`, as('mel')), 403, 'forbidden');
      const unarchived = await api('DELETE', `/${id}/archive`, as('ada'));
      expect(unarchived.body).to.include({ archived: false, archived_at: null });
      expect(await lastEvent(id)).to.deep.equal({ event: 'room.unarchived', data: { room_id: id, by: 'ada' }, publisher: { id: 'ada', name: 'ADA' } });
      expect((await api('PATCH', `/${id}`, ann, { name: 'Back' })).status).to.equal(200);

      await api('POST', `/${id}/archive`, ann);
      expect((await api('DELETE', `/${id}`, ann)).status).to.equal(204);
    });
  });

  describe('server keys', () => {
    it('create for a named owner, list a named user\'s rooms and act with every right', async () => {
      expectError(await api('POST', '/', key, { name: 'Ops' }), 400, 'bad_request');
      const created = await api('POST', '/', key, { name: 'Ops', user_id: 'sam' });
      expect(created.status).to.equal(201);
      expect(created.body).to.include({ created_by: 'sam', role: 'owner' });
      const id = created.body.id;
      expect((await events(id))[0]).to.deep.equal({
        event: 'room.created',
        data: { room_id: id, name: 'Ops', metadata: {}, user_id: 'sam', role: 'owner', by: 'sam' },
        publisher: { id: 'sam' },
      });
      expectError(await api('GET', '/', key), 400, 'bad_request');
      expect((await api('GET', '/?user=sam', key)).body.rooms.map((r: any) => [r.id, r.role])).to.deep.equal([[id, 'owner']]);

      const added = await api('POST', `/${id}/members`, key, { user_id: 'tom', role: 'owner' });
      expect(added.body).to.include({ user_id: 'tom', role: 'owner', added_by: null });
      // A server key's own changes name no publisher and no `by`.
      expect(await lastEvent(id)).to.deep.equal({ event: 'member.added', data: { room_id: id, user_id: 'tom', role: 'owner', by: null } });
      const shown = await api('GET', `/${id}`, key);
      expect(shown.body).not.to.have.property('role');
      expect(shown.body.members).to.have.length(2);
      expect((await api('PATCH', `/${id}`, key, { metadata: { k: 1 } })).body.metadata).to.deep.equal({ k: 1 });
      expect((await api('DELETE', `/${id}/members/sam`, key)).status).to.equal(204);
      expectError(await api('DELETE', `/${id}/members/tom`, key), 409, 'conflict');
      expect((await api('POST', `/${id}/archive`, key)).body.archived).to.equal(true);
      expect((await api('DELETE', `/${id}/archive`, key)).body.archived).to.equal(false);
      expect((await api('DELETE', `/${id}`, key)).status).to.equal(204);
      expect((await lastEvent(id))!.event).to.equal('room.deleted');
    });
  });

  describe('when the log is down', () => {
    it('answers 503 unavailable, saying the change was saved but not announced', async () => {
      const down = { publish: () => Promise.reject(unavailable('redis is unreachable')) } as unknown as Engine;
      const broken = await serveRooms(down);
      try {
        const res = await request(`${broken.base}/v1/rooms`, { token: as('ann'), body: { name: 'Offline' } });
        expectError(res, 503, 'unavailable');
        expect(res.body.error.message).to.match(/saved/);
        const listed = (await api('GET', '/?q=Offline', as('ann'))).body.rooms;
        expect(listed.map((r: any) => r.name)).to.deep.equal(['Offline']);
      } finally {
        await stop(broken.server);
      }
    });
  });

  describe('role rules', () => {
    it('rank owner > admin > member > viewer', () => {
      expect([mayRead(null), mayRead('viewer')]).to.deep.equal([false, true]);
      const open = (role: RoomAccess['role']): RoomAccess => ({ role, archived: false });
      expect([null, 'viewer', 'member', 'admin', 'owner'].map((r) => mayPublish(open(r as RoomAccess['role'])))).to.deep.equal([false, false, true, true, true]);
      expect(mayPublish({ role: 'owner', archived: true })).to.equal(false);
      expect(mayPublish(null)).to.equal(false);
      expect([mayManageRoom('member'), mayManageRoom('admin'), mayDeleteRoom('admin'), mayDeleteRoom('owner')]).to.deep.equal([false, true, false, true]);
      expect([mayInvite('admin', 'member'), mayInvite('admin', 'admin'), mayInvite('owner', 'owner'), mayInvite('member', 'viewer')]).to.deep.equal([true, false, true, false]);
      expect(maySetRole('admin', { self: false, from: 'viewer', to: 'member' })).to.equal(true);
      expect(maySetRole('admin', { self: false, from: 'admin', to: 'member' })).to.equal(false);
      expect(maySetRole('viewer', { self: true, from: 'viewer', to: 'member' })).to.equal(false);
      expect(maySetRole('owner', { self: true, from: 'owner', to: 'viewer' })).to.equal(true);
      expect(mayRemove('member', { self: true, target: 'member' })).to.equal(true);
      expect(mayRemove(null, { self: true, target: 'member' })).to.equal(false);
      expect(mayRemove('admin', { self: false, target: 'owner' })).to.equal(false);
      expect(mayRemove('owner', { self: false, target: 'admin' })).to.equal(true);
      expect(['member.removed', 'room.deleted', 'message.sent', 'roomy'].map(isReservedRoomEvent)).to.deep.equal([true, true, false, false]);
    });

    it('decides subscribe and publish on room channels from the store', async () => {
      const rooms = new RoomStore(g.gateway.store.knex);
      const room = await rooms.create('acme', { name: 'Live' }, 'ann');
      await rooms.addMember('acme', room.id, 'vic', 'viewer', 'ann');
      const user = (id: string): UserPrincipal => ({ kind: 'user', tenant: 'acme', userId: id, roles: [], channels: [], publish: [], expiresAt: Date.now() + 60_000 });
      const channel = `room:${room.id}`;
      expect(roomIdOf(channel)).to.equal(room.id);
      expect([roomIdOf('room:'), roomIdOf('room:a:b'), roomIdOf('team:1')]).to.deep.equal([null, null, null]);
      expect(await mayUseRoomChannel(rooms, user('vic'), channel, 'subscribe')).to.equal(true);
      expect(await mayUseRoomChannel(rooms, user('vic'), channel, 'publish')).to.equal(false);
      expect(await mayUseRoomChannel(rooms, user('ann'), channel, 'publish')).to.equal(true);
      expect(await mayUseRoomChannel(rooms, user('zed'), channel, 'subscribe')).to.equal(false);
      expect(await mayUseRoomChannel(rooms, { ...user('ann'), tenant: 'globex' }, channel, 'subscribe')).to.equal(false);
      expect(await mayUseRoomChannel(rooms, { kind: 'server', tenant: 'acme', keyId: 'k' }, channel, 'publish')).to.equal(true);
      const access = roomChannelAccess(rooms);
      await access.maySubscribe(user('vic'), channel);
      await access.mayPublish(user('zed'), 'team:1'); // not a room: judged elsewhere
      for (const refused of [access.mayPublish(user('vic'), channel), access.maySubscribe(user('zed'), channel)]) {
        const err = await refused.then(() => null, (e: unknown) => e);
        expect(err).to.be.instanceOf(StreamgateError);
        expect((err as StreamgateError).code).to.equal('forbidden');
      }
      await rooms.archive('acme', room.id, true);
      expect(await mayUseRoomChannel(rooms, user('ann'), channel, 'publish')).to.equal(false);
      expect(await mayUseRoomChannel(rooms, user('ann'), channel, 'subscribe')).to.equal(true);
    });
  });
});
