/**
 * Rooms and their members. Every query is scoped by tenant; the room id doubles as
 * the channel suffix (`room:<id>`), so ids use the channel alphabet only.
 *
 * The store keeps the data consistent (a room always has an owner, a member appears
 * once); who may ask for what is decided in `lib/auth/room-roles.ts`.
 *
 * `access` (and `role`) sit on the path of every subscribe and publish to `room:<id>`,
 * so answers are cached per process for `cacheTtlMs` (members and non-members alike),
 * bounded to `cacheSize` entries, least recently used first out. Every change made
 * through this instance clears the entries it affects at once; other nodes see a change
 * when their entry expires, so across a cluster a new role, a removal or an archive
 * takes effect within the TTL (5 s by default).
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { badRequest, conflict, notFound, unavailable } from '../errors.js';
import { dialectOf, toDate, toDateOrNull, toJsonObject } from './database.js';

/** Highest first; the same union as `ROOM_ROLES` in `lib/auth/room-roles.ts`. */
export const ROOM_ROLES = ['owner', 'admin', 'member', 'viewer'] as const;

export type RoomRole = (typeof ROOM_ROLES)[number];

export interface Room {
  id: string;
  name: string;
  metadata: Record<string, unknown>;
  archived: boolean;
  archivedAt: Date | null;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
  /** The user's role, in `create` and `listForUser` results. */
  role?: RoomRole;
}

export interface Member {
  userId: string;
  role: RoomRole;
  addedBy: string | null;
  addedAt: Date;
}

export interface RoomAccess {
  role: RoomRole | null;
  archived: boolean;
}

export interface RoomChanges {
  name?: string;
  metadata?: Record<string, unknown>;
}

export interface ListOptions {
  /** Only rooms whose name contains this text, ignoring case. */
  query?: string;
  /** Also list archived rooms. @default false */
  includeArchived?: boolean;
  /** @default 50, at most 200 */
  limit?: number;
  /** @default 0 */
  offset?: number;
}

export interface RoomStoreOptions {
  /** How long an `access` answer is trusted; also how long other nodes take to see a change. @default 5000 */
  cacheTtlMs?: number;
  /** Most (room, user) answers kept. @default 10000 */
  cacheSize?: number;
}

export const MAX_ROOM_NAME = 200;
export const MAX_METADATA_BYTES = 16 * 1024;
export const MAX_USER_ID = 128;
export const MAX_LIST_LIMIT = 200;
export const DEFAULT_LIST_LIMIT = 50;

interface RoomRow {
  id: string;
  tenant: string;
  name: string;
  metadata: string;
  archived_at: unknown;
  created_by: string;
  created_at: unknown;
  updated_at: unknown;
  role?: string;
}

interface MemberRow {
  user_id: string;
  role: string;
  added_by: string | null;
  added_at: unknown;
}

interface CacheEntry {
  expires: number;
  lookup: Promise<RoomAccess | null>;
}

const ROOM_COLUMNS = ['id', 'tenant', 'name', 'metadata', 'archived_at', 'created_by', 'created_at', 'updated_at'] as const;

export function isRoomRole(value: unknown): value is RoomRole {
  return typeof value === 'string' && (ROOM_ROLES as readonly string[]).includes(value);
}

function checkName(name: unknown): string {
  const trimmed = typeof name === 'string' ? name.trim() : '';
  if (trimmed.length < 1 || trimmed.length > MAX_ROOM_NAME) throw badRequest(`name: a string of 1 to ${MAX_ROOM_NAME} characters`);
  return trimmed;
}

function encodeMetadata(metadata: unknown): string {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) throw badRequest('metadata: a JSON object');
  const json = JSON.stringify(metadata);
  if (Buffer.byteLength(json) > MAX_METADATA_BYTES) throw badRequest(`metadata: at most ${MAX_METADATA_BYTES} bytes of JSON`);
  return json;
}


function checkUserId(userId: unknown, field = 'user_id'): string {
  if (typeof userId !== 'string' || userId.length < 1 || userId.length > MAX_USER_ID) {
    throw badRequest(`${field}: a string of 1 to ${MAX_USER_ID} characters`);
  }
  return userId;
}

function checkRole(role: unknown): RoomRole {
  if (!isRoomRole(role)) throw badRequest(`role: one of ${ROOM_ROLES.join(', ')}`);
  return role;
}

function toRoom(row: RoomRow): Room {
  const archivedAt = toDateOrNull(row.archived_at);
  const room: Room = {
    id: row.id,
    name: row.name,
    metadata: toJsonObject(row.metadata),
    archived: archivedAt !== null,
    archivedAt,
    createdBy: row.created_by,
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  };
  if (row.role !== undefined && isRoomRole(row.role)) room.role = row.role;
  return room;
}

function toMember(row: MemberRow): Member {
  return { userId: row.user_id, role: row.role as RoomRole, addedBy: row.added_by ?? null, addedAt: toDate(row.added_at) };
}

/** `%` and `_` match literally in a search; `\` is the escape character. */
const likePattern = (text: string): string => `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

const cacheKey = (tenant: string, roomId: string, userId: string): string => `${tenant}\u0000${roomId}\u0000${userId}`;

export class RoomStore {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly ttl: number;
  private readonly maxEntries: number;

  constructor(
    private readonly knex: Knex,
    options: RoomStoreOptions = {},
  ) {
    this.ttl = options.cacheTtlMs ?? 5000;
    this.maxEntries = options.cacheSize ?? 10_000;
  }

  /** Create a room; `createdBy` becomes its first owner. The result carries `role: 'owner'`. */
  async create(tenant: string, input: { name: string; metadata?: Record<string, unknown> }, createdBy: string): Promise<Room> {
    const name = checkName(input.name);
    const metadata = encodeMetadata(input.metadata === undefined ? {} : input.metadata);
    checkUserId(createdBy, 'created_by');
    // 12 random bytes in base64url: 16 characters of the channel alphabet, 96 bits.
    const id = randomBytes(12).toString('base64url');
    const now = new Date();
    await this.knex.transaction(async (trx) => {
      await trx('rooms').insert({
        id,
        tenant,
        name,
        name_folded: name.toLowerCase(),
        metadata,
        archived_at: null,
        created_by: createdBy,
        created_at: now,
        updated_at: now,
      });
      await trx('room_members').insert({ tenant, room_id: id, user_id: createdBy, role: 'owner', added_by: createdBy, added_at: now });
    });
    this.forget(tenant, id, createdBy);
    return {
      id,
      name,
      metadata: toJsonObject(metadata),
      archived: false,
      archivedAt: null,
      createdBy,
      createdAt: now,
      updatedAt: now,
      role: 'owner',
    };
  }

  /** The room, or null when it does not exist in `tenant`. */
  async get(tenant: string, id: string): Promise<Room | null> {
    const row: RoomRow | undefined = await this.knex('rooms').first(...ROOM_COLUMNS).where({ tenant, id });
    return row ? toRoom(row) : null;
  }

  /** Rename and/or replace the metadata (the whole object). */
  async update(tenant: string, id: string, changes: RoomChanges): Promise<Room> {
    if (changes.name === undefined && changes.metadata === undefined) throw badRequest('nothing to change: give name and/or metadata');
    const patch: Record<string, unknown> = { updated_at: new Date() };
    if (changes.name !== undefined) {
      const name = checkName(changes.name);
      patch.name = name;
      patch.name_folded = name.toLowerCase();
    }
    if (changes.metadata !== undefined) patch.metadata = encodeMetadata(changes.metadata);
    await this.knex('rooms').where({ tenant, id }).update(patch);
    const room = await this.get(tenant, id);
    if (!room) throw notFound(`no room ${id}`);
    return room;
  }

  /**
   * Archive (read-only) or unarchive a room. `changed` is false when it already was in
   * that state, so callers announce only real changes.
   */
  async archive(tenant: string, id: string, archived: boolean): Promise<{ room: Room; changed: boolean }> {
    const now = new Date();
    const query = this.knex('rooms').where({ tenant, id });
    if (archived) query.whereNull('archived_at');
    else query.whereNotNull('archived_at');
    const changed = Number(await query.update({ archived_at: archived ? now : null, updated_at: now })) > 0;
    if (changed) this.forgetRoom(tenant, id);
    const room = await this.get(tenant, id);
    if (!room) throw notFound(`no room ${id}`);
    return { room, changed };
  }

  /** Delete a room and its memberships. */
  async delete(tenant: string, id: string): Promise<void> {
    const deleted = await this.knex.transaction(async (trx) => {
      await trx('room_members').where({ tenant, room_id: id }).delete();
      return Number(await trx('rooms').where({ tenant, id }).delete());
    });
    this.forgetRoom(tenant, id);
    if (!deleted) throw notFound(`no room ${id}`);
  }

  /** Add a member; `conflict` when they already are one. */
  async addMember(tenant: string, roomId: string, userId: string, role: RoomRole, addedBy: string | null): Promise<Member> {
    checkUserId(userId);
    checkRole(role);
    const addedAt = new Date();
    try {
      await this.knex.transaction(async (trx) => {
        await this.lockRoom(trx, tenant, roomId);
        await trx('room_members').insert({ tenant, room_id: roomId, user_id: userId, role, added_by: addedBy, added_at: addedAt });
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`${userId} is already a member of room ${roomId}`);
      throw err;
    } finally {
      this.forget(tenant, roomId, userId);
    }
    return { userId, role, addedBy, addedAt };
  }

  /**
   * Change a member's role; resolves with the member and the role they had.
   * `conflict` when it would leave the room without an owner.
   */
  async setRole(tenant: string, roomId: string, userId: string, role: RoomRole): Promise<{ member: Member; previous: RoomRole }> {
    checkRole(role);
    try {
      return await this.knex.transaction(async (trx) => {
        await this.lockRoom(trx, tenant, roomId);
        const row = await this.memberRow(trx, tenant, roomId, userId);
        const previous = row.role as RoomRole;
        if (previous === 'owner' && role !== 'owner') await this.assertAnotherOwner(trx, tenant, roomId);
        if (previous !== role) await trx('room_members').where({ tenant, room_id: roomId, user_id: userId }).update({ role });
        return { member: toMember({ ...row, role }), previous };
      });
    } finally {
      this.forget(tenant, roomId, userId);
    }
  }

  /** Remove a member; resolves with the role they had. `conflict` for the last owner. */
  async removeMember(tenant: string, roomId: string, userId: string): Promise<RoomRole> {
    try {
      return await this.knex.transaction(async (trx) => {
        await this.lockRoom(trx, tenant, roomId);
        const row = await this.memberRow(trx, tenant, roomId, userId);
        if (row.role === 'owner') await this.assertAnotherOwner(trx, tenant, roomId);
        await trx('room_members').where({ tenant, room_id: roomId, user_id: userId }).delete();
        return row.role as RoomRole;
      });
    } finally {
      this.forget(tenant, roomId, userId);
    }
  }

  /** The room's members, earliest first. */
  async members(tenant: string, roomId: string): Promise<Member[]> {
    const rows: MemberRow[] = await this.knex('room_members')
      .select('user_id', 'role', 'added_by', 'added_at')
      .where({ tenant, room_id: roomId })
      .orderBy([{ column: 'added_at' }, { column: 'user_id' }]);
    return rows.map(toMember);
  }

  /** The user's role in the room, or null (not a member, or no such room). Cached: see the file's doc. */
  async role(tenant: string, roomId: string, userId: string): Promise<RoomRole | null> {
    return (await this.access(tenant, roomId, userId))?.role ?? null;
  }

  /**
   * The user's role and whether the room is archived, or null when there is no such
   * room. Cached (see the file's doc) unless `fresh`, which reads the database and
   * refreshes the cache; management routes use it so a demoted admin is refused at once.
   * Rejects with `unavailable` when the database cannot be read.
   */
  access(tenant: string, roomId: string, userId: string, options: { fresh?: boolean } = {}): Promise<RoomAccess | null> {
    const key = cacheKey(tenant, roomId, userId);
    const now = Date.now();
    const cached = this.cache.get(key);
    if (cached && cached.expires > now && !options.fresh) {
      // Re-insert so the Map's order is least recently used first.
      this.cache.delete(key);
      this.cache.set(key, cached);
      return cached.lookup;
    }
    const lookup = this.loadAccess(tenant, roomId, userId);
    const entry: CacheEntry = { expires: now + this.ttl, lookup };
    this.cache.delete(key);
    this.cache.set(key, entry);
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    // A failed lookup is not remembered: the next call asks again.
    lookup.catch(() => {
      if (this.cache.get(key) === entry) this.cache.delete(key);
    });
    return lookup;
  }

  /** The rooms `userId` belongs to, with their role, by name. */
  async listForUser(tenant: string, userId: string, options: ListOptions = {}): Promise<Room[]> {
    const limit = options.limit ?? DEFAULT_LIST_LIMIT;
    const offset = options.offset ?? 0;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) throw badRequest(`limit: an integer from 1 to ${MAX_LIST_LIMIT}`);
    if (!Number.isInteger(offset) || offset < 0) throw badRequest('offset: an integer of 0 or more');
    const query = this.knex('room_members as m')
      .join('rooms as r', function () {
        this.on('r.tenant', '=', 'm.tenant').andOn('r.id', '=', 'm.room_id');
      })
      .select(...ROOM_COLUMNS.map((c) => `r.${c}`), 'm.role')
      .where('m.tenant', tenant)
      .andWhere('m.user_id', userId)
      .orderBy([{ column: 'r.name_folded' }, { column: 'r.id' }])
      .limit(limit)
      .offset(offset);
    if (!options.includeArchived) query.whereNull('r.archived_at');
    if (options.query) query.whereRaw("?? like ? escape '\\'", ['r.name_folded', likePattern(options.query)]);
    const rows: RoomRow[] = await query;
    return rows.map(toRoom);
  }

  /** The ids of every room `userId` belongs to (unread counts, subscriptions). */
  async roomIdsForUser(tenant: string, userId: string): Promise<string[]> {
    const rows: Array<{ room_id: string }> = await this.knex('room_members').select('room_id').where({ tenant, user_id: userId });
    return rows.map((r) => r.room_id);
  }

  /**
   * Drop cached answers for a room: one user's, or everyone's. For changes this
   * instance learns of from elsewhere (room events in the log from other nodes).
   */
  invalidate(tenant: string, roomId: string, userId?: string): void {
    if (userId === undefined) this.forgetRoom(tenant, roomId);
    else this.forget(tenant, roomId, userId);
  }

  private async loadAccess(tenant: string, roomId: string, userId: string): Promise<RoomAccess | null> {
    let row: { archived_at: unknown; role: string | null } | undefined;
    try {
      row = await this.knex('rooms as r')
        .leftJoin('room_members as m', function () {
          this.on('m.tenant', '=', 'r.tenant').andOn('m.room_id', '=', 'r.id').andOnVal('m.user_id', '=', userId);
        })
        .first('r.archived_at', 'm.role')
        .where('r.tenant', tenant)
        .andWhere('r.id', roomId);
    } catch (err) {
      throw unavailable('rooms cannot be read: database unavailable', err);
    }
    if (!row) return null;
    const role = isRoomRole(row.role) ? row.role : null;
    return { role, archived: row.archived_at !== null && row.archived_at !== undefined };
  }

  /**
   * Serialise membership changes of one room: PostgreSQL locks its row until commit, so
   * two owners demoting each other cannot both pass the last-owner check. SQLite runs
   * one write transaction at a time anyway. `not_found` when there is no such room.
   */
  private async lockRoom(trx: Knex.Transaction, tenant: string, roomId: string): Promise<void> {
    const query = trx('rooms').first('id').where({ tenant, id: roomId });
    if (dialectOf(this.knex) === 'postgres') query.forUpdate();
    if (!(await query)) throw notFound(`no room ${roomId}`);
  }

  private async memberRow(trx: Knex.Transaction, tenant: string, roomId: string, userId: string): Promise<MemberRow> {
    const row: MemberRow | undefined = await trx('room_members')
      .first('user_id', 'role', 'added_by', 'added_at')
      .where({ tenant, room_id: roomId, user_id: userId });
    if (!row) throw notFound(`${userId} is not a member of room ${roomId}`);
    return row;
  }

  private async assertAnotherOwner(trx: Knex.Transaction, tenant: string, roomId: string): Promise<void> {
    const row = await trx('room_members').where({ tenant, room_id: roomId, role: 'owner' }).count({ n: '*' }).first();
    if (Number(row?.n ?? 0) <= 1) throw conflict(`room ${roomId} needs an owner: make another member owner first`);
  }

  private forget(tenant: string, roomId: string, userId: string): void {
    this.cache.delete(cacheKey(tenant, roomId, userId));
  }

  /** Archive and delete change every member's answer; they are rare enough for a scan. */
  private forgetRoom(tenant: string, roomId: string): void {
    const prefix = `${tenant}\u0000${roomId}\u0000`;
    for (const key of this.cache.keys()) if (key.startsWith(prefix)) this.cache.delete(key);
  }
}
