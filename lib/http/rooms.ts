/**
 * The rooms API, mounted at `/v1/rooms`: rooms, their members and roles. Users act
 * with their token; server keys act with every right in their tenant.
 *
 * A user who is not a member of a room gets 404 for it, as if it did not exist. Every
 * change is also announced on the room channel `room:<id>` (`room.created`,
 * `room.updated`, `room.archived`, `room.unarchived`, `room.deleted`, `member.added`,
 * `member.role_changed`, `member.removed`), after the database has it; sessions end a
 * removed member's subscription when they see `member.removed`.
 *
 * Errors are passed on with `next(err)`: the mounting router's error handler
 * (`sendError`) answers them, and routes this router does not know fall through to
 * its 404.
 */
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import type { Principal } from '../auth/principal.js';
import { isRoomRole, mayDeleteRoom, mayInvite, mayManageRoom, mayRemove, maySetRole, type RoomRole } from '../auth/room-roles.js';
import type { PublishRequest } from '../engine/engine.js';
import { StreamgateError, badRequest, conflict, forbidden, notFound, unauthorized } from '../errors.js';
import { appendEvents, type PublishDeps } from '../gateway/publish.js';
import type { PublisherInfo } from '../protocol/frames.js';
import type { ListOptions, Member, Room, RoomStore } from '../store/rooms.js';

export interface RoomsRouterDeps {
  rooms: RoomStore;
  publish: PublishDeps;
  /** Sets `req.principal` (see `createAuthenticator`). */
  authenticate: RequestHandler;
}

/** Room JSON as the API answers it. */
export interface RoomJson {
  id: string;
  name: string;
  metadata: Record<string, unknown>;
  archived: boolean;
  archived_at: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
  role?: RoomRole;
}

export interface MemberJson {
  user_id: string;
  role: RoomRole;
  added_by: string | null;
  added_at: string;
}

/** Who acts on a room, and with which rights. */
interface Standing {
  principal: Principal;
  room: Room;
  /** The acting user, null for a server key. */
  userId: string | null;
  /** The user's role; server keys act as owners. */
  role: RoomRole;
}

export function roomJson(room: Room, role?: RoomRole): RoomJson {
  const json: RoomJson = {
    id: room.id,
    name: room.name,
    metadata: room.metadata,
    archived: room.archived,
    archived_at: room.archivedAt?.toISOString() ?? null,
    created_by: room.createdBy,
    created_at: room.createdAt.toISOString(),
    updated_at: room.updatedAt.toISOString(),
  };
  const r = role ?? room.role;
  if (r !== undefined) json.role = r;
  return json;
}

export function memberJson(m: Member): MemberJson {
  return { user_id: m.userId, role: m.role, added_by: m.addedBy, added_at: m.addedAt.toISOString() };
}

function principalOf(req: Request): Principal {
  if (!req.principal) throw unauthorized('not authenticated');
  return req.principal;
}

/** The JSON body as an object with only `allowed` fields. */
function bodyOf(req: Request, allowed: readonly string[]): Record<string, unknown> {
  const body: unknown = req.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('expected a JSON object body (Content-Type: application/json)');
  }
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw badRequest(`unknown field: ${k}`);
  return body as Record<string, unknown>;
}

function queryString(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw badRequest(`${name}: give it once`);
  return v;
}

function queryInteger(req: Request, name: string): number | undefined {
  const v = queryString(req, name);
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,9}$/.test(v)) throw badRequest(`${name}: a non-negative integer`);
  return Number(v);
}

function queryBoolean(req: Request, name: string): boolean {
  const v = queryString(req, name);
  if (v === undefined || v === '' || v === 'false' || v === '0') return false;
  if (v === 'true' || v === '1') return true;
  throw badRequest(`${name}: true or false`);
}

function roleField(value: unknown, fallback?: RoomRole): RoomRole {
  if (value === undefined && fallback !== undefined) return fallback;
  if (!isRoomRole(value)) throw badRequest('role: one of owner, admin, member, viewer');
  return value;
}

const assertNotArchived = (room: Room): void => {
  if (room.archived) throw conflict(`room ${room.id} is archived: unarchive it first`);
};

export function createRoomsRouter(deps: RoomsRouterDeps): Router {
  const { rooms } = deps;
  const router = express.Router();
  router.use(deps.authenticate, express.json({ limit: '64kb' }));

  /** The room and the caller's rights in it; 404 for rooms of other tenants and for non-members. */
  async function standing(req: Request): Promise<Standing> {
    const principal = principalOf(req);
    const id = String(req.params.id);
    if (principal.kind === 'server') {
      const room = await rooms.get(principal.tenant, id);
      if (!room) throw notFound(`no room ${id}`);
      return { principal, room, userId: null, role: 'owner' };
    }
    // Fresh, not cached: a member demoted or removed on another node is refused at once.
    const access = await rooms.access(principal.tenant, id, principal.userId, { fresh: true });
    const room = access?.role ? await rooms.get(principal.tenant, id) : null;
    if (!room || !access?.role) throw notFound(`no room ${id}`);
    return { principal, room, userId: principal.userId, role: access.role };
  }

  /** Announce a change on `room:<id>`. The change is already saved, so a failure says so. */
  async function announce(principal: Principal, actor: string | null, roomId: string, event: string, data: Record<string, unknown>): Promise<void> {
    let publisher: PublisherInfo | null = null;
    if (actor !== null) {
      publisher = principal.kind === 'user' && principal.userId === actor && principal.name !== undefined ? { id: actor, name: principal.name } : { id: actor };
    }
    const request: PublishRequest = {
      tenant: principal.tenant,
      channel: `room:${roomId}`,
      event,
      dataJson: JSON.stringify({ room_id: roomId, ...data, by: actor }),
      priority: 'normal',
      publisher,
    };
    try {
      await appendEvents(deps.publish, principal, [request], 'http');
    } catch (err) {
      const e = err instanceof StreamgateError ? err : null;
      throw new StreamgateError(e?.code ?? 'unavailable', `the change was saved, but its ${event} event could not be published: ${e?.message ?? String(err)}`, { cause: err });
    }
  }

  router.post('/', async (req: Request, res: Response) => {
    const principal = principalOf(req);
    const body = bodyOf(req, principal.kind === 'server' ? ['name', 'metadata', 'user_id'] : ['name', 'metadata']);
    let owner: string;
    if (principal.kind === 'server') {
      if (typeof body.user_id !== 'string') throw badRequest('user_id: required with a server key (the room\'s first owner)');
      owner = body.user_id;
    } else {
      owner = principal.userId;
    }
    if (body.metadata !== undefined && (typeof body.metadata !== 'object' || body.metadata === null || Array.isArray(body.metadata))) {
      throw badRequest('metadata: a JSON object');
    }
    const input: { name: string; metadata?: Record<string, unknown> } = { name: body.name as string };
    if (body.metadata !== undefined) input.metadata = body.metadata as Record<string, unknown>;
    const room = await rooms.create(principal.tenant, input, owner);
    await announce(principal, owner, room.id, 'room.created', { name: room.name, metadata: room.metadata, user_id: owner, role: 'owner' });
    res.status(201).json(roomJson(room));
  });

  router.get('/', async (req: Request, res: Response) => {
    const principal = principalOf(req);
    const named = queryString(req, 'user');
    let userId: string;
    if (principal.kind === 'server') {
      if (!named) throw badRequest('user: required with a server key (whose rooms to list)');
      userId = named;
    } else {
      if (named !== undefined && named !== principal.userId) throw forbidden('users list their own rooms only');
      userId = principal.userId;
    }
    const options: ListOptions = { includeArchived: queryBoolean(req, 'archived') };
    const q = queryString(req, 'q');
    if (q) {
      if (q.length > 200) throw badRequest('q: at most 200 characters');
      options.query = q;
    }
    const limit = queryInteger(req, 'limit');
    const offset = queryInteger(req, 'offset');
    if (limit !== undefined) options.limit = limit;
    if (offset !== undefined) options.offset = offset;
    const list = await rooms.listForUser(principal.tenant, userId, options);
    res.json({ rooms: list.map((r) => roomJson(r)) });
  });

  router.get('/:id', async (req: Request, res: Response) => {
    const s = await standing(req);
    const members = await rooms.members(s.principal.tenant, s.room.id);
    res.json({ ...roomJson(s.room, s.userId === null ? undefined : s.role), members: members.map(memberJson) });
  });

  router.patch('/:id', async (req: Request, res: Response) => {
    const s = await standing(req);
    if (!mayManageRoom(s.role)) throw forbidden('renaming or setting metadata needs the admin or owner role');
    assertNotArchived(s.room);
    const body = bodyOf(req, ['name', 'metadata']);
    const changes: { name?: string; metadata?: Record<string, unknown> } = {};
    if (body.name !== undefined) changes.name = body.name as string;
    if (body.metadata !== undefined) {
      if (typeof body.metadata !== 'object' || body.metadata === null || Array.isArray(body.metadata)) throw badRequest('metadata: a JSON object');
      changes.metadata = body.metadata as Record<string, unknown>;
    }
    const room = await rooms.update(s.principal.tenant, s.room.id, changes);
    const data: Record<string, unknown> = {};
    if (changes.name !== undefined) data.name = room.name;
    if (changes.metadata !== undefined) data.metadata = room.metadata;
    await announce(s.principal, s.userId, room.id, 'room.updated', data);
    res.json(roomJson(room, s.userId === null ? undefined : s.role));
  });

  const setArchived = (archived: boolean) => async (req: Request, res: Response) => {
    const s = await standing(req);
    if (!mayManageRoom(s.role)) throw forbidden(`${archived ? 'archiving' : 'unarchiving'} needs the admin or owner role`);
    const { room, changed } = await rooms.archive(s.principal.tenant, s.room.id, archived);
    if (changed) await announce(s.principal, s.userId, room.id, archived ? 'room.archived' : 'room.unarchived', {});
    res.json(roomJson(room, s.userId === null ? undefined : s.role));
  };
  router.post('/:id/archive', setArchived(true));
  router.delete('/:id/archive', setArchived(false));

  router.delete('/:id', async (req: Request, res: Response) => {
    const s = await standing(req);
    if (!mayDeleteRoom(s.role)) throw forbidden('deleting a room needs the owner role');
    await rooms.delete(s.principal.tenant, s.room.id);
    await announce(s.principal, s.userId, s.room.id, 'room.deleted', {});
    res.status(204).end();
  });

  router.get('/:id/members', async (req: Request, res: Response) => {
    const s = await standing(req);
    const members = await rooms.members(s.principal.tenant, s.room.id);
    res.json({ members: members.map(memberJson) });
  });

  router.post('/:id/members', async (req: Request, res: Response) => {
    const s = await standing(req);
    const body = bodyOf(req, ['user_id', 'role']);
    const role = roleField(body.role, 'member');
    if (!mayInvite(s.role, role)) {
      throw forbidden(role === 'owner' || role === 'admin' ? 'only an owner may add owners or admins' : 'inviting needs the admin or owner role');
    }
    assertNotArchived(s.room);
    const member = await rooms.addMember(s.principal.tenant, s.room.id, body.user_id as string, role, s.userId);
    await announce(s.principal, s.userId, s.room.id, 'member.added', { user_id: member.userId, role });
    res.status(201).json(memberJson(member));
  });

  /** The target member's current role; 404 when they are not a member. */
  async function targetRole(s: Standing, userId: string): Promise<RoomRole> {
    const access = await rooms.access(s.principal.tenant, s.room.id, userId, { fresh: true });
    if (!access?.role) throw notFound(`${userId} is not a member of room ${s.room.id}`);
    return access.role;
  }

  router.patch('/:id/members/:userId', async (req: Request, res: Response) => {
    const s = await standing(req);
    const target = String(req.params.userId);
    const role = roleField(bodyOf(req, ['role']).role);
    const from = await targetRole(s, target);
    if (!maySetRole(s.role, { self: s.userId === target, from, to: role })) {
      throw forbidden(s.role === 'owner' || s.role === 'admin' ? 'only an owner may change owners or admins' : 'changing roles needs the admin or owner role');
    }
    assertNotArchived(s.room);
    const { member, previous } = await rooms.setRole(s.principal.tenant, s.room.id, target, role);
    if (previous !== role) {
      await announce(s.principal, s.userId, s.room.id, 'member.role_changed', { user_id: target, role, previous_role: previous });
    }
    res.json(memberJson(member));
  });

  router.delete('/:id/members/:userId', async (req: Request, res: Response) => {
    const s = await standing(req);
    const target = String(req.params.userId);
    const self = s.userId === target;
    const role = await targetRole(s, target);
    if (!mayRemove(s.role, { self, target: role })) {
      throw forbidden(s.role === 'owner' || s.role === 'admin' ? 'only an owner may remove owners or admins' : 'removing members needs the admin or owner role');
    }
    assertNotArchived(s.room);
    const removed = await rooms.removeMember(s.principal.tenant, s.room.id, target);
    await announce(s.principal, s.userId, s.room.id, 'member.removed', { user_id: target, role: removed });
    res.status(204).end();
  });

  return router;
}
