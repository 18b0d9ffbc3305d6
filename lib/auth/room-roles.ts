/**
 * Who may do what in a room (PROTOCOL §3, rooms): pure functions of the actor's role,
 * so the HTTP routes, the subscribe/publish checks and the tests share one set of rules.
 *
 * Roles rank owner > admin > member > viewer. Any member reads; `member` and up
 * publish while the room is not archived; admins rename, set metadata, archive and
 * manage members, but only an owner makes or removes owners and admins; only an owner
 * deletes. Anyone may leave (remove themselves) or step down to a lower role. Nobody
 * may take away the last owner: that depends on the other members, so `RoomStore`
 * checks it atomically with the change (under a lock of the room row) and answers
 * `conflict`.
 * Server keys act with every right in their tenant: pass them as `owner`.
 */
import { forbidden } from '../errors.js';
import type { Principal, UserPrincipal } from './principal.js';

/**
 * The roles of a room member, highest first. `lib/store/rooms.ts` declares the same
 * union for its column (the store may not import auth); a spec checks they agree.
 */
export const ROOM_ROLES = ['owner', 'admin', 'member', 'viewer'] as const;

export type RoomRole = (typeof ROOM_ROLES)[number];

export const ROLE_RANK: Readonly<Record<RoomRole, number>> = Object.freeze({ owner: 4, admin: 3, member: 2, viewer: 1 });

/** A user's standing in a room: their role (null when not a member) and the room's state. */
export interface RoomAccess {
  role: RoomRole | null;
  archived: boolean;
}

/** What the subscribe/publish checks need of the room store (`RoomStore.access`). */
export interface RoomAccessLookup {
  access(tenant: string, roomId: string, userId: string): Promise<RoomAccess | null>;
}

export function isRoomRole(value: unknown): value is RoomRole {
  return typeof value === 'string' && (ROOM_ROLES as readonly string[]).includes(value);
}

/** Is `role` at least `min`? Null (not a member) is below every role. */
export function atLeast(role: RoomRole | null, min: RoomRole): boolean {
  return role !== null && ROLE_RANK[role] >= ROLE_RANK[min];
}

/** Owners and admins: only an owner may grant, change or take away these roles. */
const isPrivileged = (role: RoomRole): boolean => role === 'owner' || role === 'admin';

/** Read the room, its members and its channel's events: any member. */
export function mayRead(role: RoomRole | null): boolean {
  return role !== null;
}

/** Publish on `room:<id>`: `member` or higher, and never while the room is archived. */
export function mayPublish(access: RoomAccess | null): boolean {
  return access !== null && !access.archived && atLeast(access.role, 'member');
}

/** Rename, set metadata, archive and unarchive: admin or higher. */
export function mayManageRoom(role: RoomRole | null): boolean {
  return atLeast(role, 'admin');
}

/** Delete the room: owners only. */
export function mayDeleteRoom(role: RoomRole | null): boolean {
  return role === 'owner';
}

/** Invite someone with `role`: admin or higher; owners and admins only by an owner. */
export function mayInvite(actor: RoomRole | null, role: RoomRole): boolean {
  if (!atLeast(actor, 'admin')) return false;
  return !isPrivileged(role) || actor === 'owner';
}

/**
 * Change a member's role from `from` to `to`. Admins and owners manage roles (only an
 * owner touches owners and admins, on either side of the change); anyone may step
 * down to a lower role of their own.
 */
export function maySetRole(actor: RoomRole | null, change: { self: boolean; from: RoomRole; to: RoomRole }): boolean {
  if (change.self && actor !== null && ROLE_RANK[change.to] < ROLE_RANK[actor]) return true;
  if (!atLeast(actor, 'admin')) return false;
  return (!isPrivileged(change.from) && !isPrivileged(change.to)) || actor === 'owner';
}

/**
 * Remove a member whose role is `target`: anyone may remove themselves (leave);
 * admins remove members and viewers; only an owner removes owners and admins.
 */
export function mayRemove(actor: RoomRole | null, removal: { self: boolean; target: RoomRole }): boolean {
  if (removal.self) return actor !== null;
  if (!atLeast(actor, 'admin')) return false;
  return !isPrivileged(removal.target) || actor === 'owner';
}

const ROOM_PREFIX = 'room:';

/**
 * `room.*` and `member.*` events on a room channel come from the rooms API only:
 * sessions act on `member.removed`, so a user must not be able to publish one.
 */
export function isReservedRoomEvent(event: string): boolean {
  return event.startsWith('room.') || event.startsWith('member.');
}

/** The room id of a `room:<id>` channel, or null for any other channel (room ids hold no `:`). */
export function roomIdOf(channel: string): string | null {
  if (!channel.startsWith(ROOM_PREFIX)) return null;
  const id = channel.slice(ROOM_PREFIX.length);
  return id.length > 0 && !id.includes(':') ? id : null;
}

/**
 * May `principal` subscribe to (or publish on) the room channel `channel`? Server keys
 * may; a user must be a member (and, to publish, `member` or higher in a room that is
 * not archived). A channel in the `room` namespace that names no room is refused.
 */
export async function mayUseRoomChannel(
  rooms: RoomAccessLookup,
  principal: Principal,
  channel: string,
  action: 'subscribe' | 'publish',
): Promise<boolean> {
  if (principal.kind === 'server') return true;
  const roomId = roomIdOf(channel);
  if (roomId === null) return false;
  const access = await rooms.access(principal.tenant, roomId, principal.userId);
  return action === 'subscribe' ? mayRead(access?.role ?? null) : mayPublish(access);
}

/**
 * The lookup-backed half of the channel rules for `room:` channels, in the shape of the
 * session's `ChannelAccess`: each check resolves, or rejects with `forbidden`. Other
 * channels pass here (the synchronous rules judge them). Answers come from the room
 * store's cache, so a change made on another node applies within its TTL.
 */
export function roomChannelAccess(rooms: RoomAccessLookup): {
  maySubscribe(principal: UserPrincipal, channel: string): Promise<void>;
  mayPublish(principal: UserPrincipal, channel: string): Promise<void>;
} {
  const check = async (principal: UserPrincipal, channel: string, action: 'subscribe' | 'publish'): Promise<void> => {
    if (!channel.startsWith(ROOM_PREFIX)) return;
    if (!(await mayUseRoomChannel(rooms, principal, channel, action))) {
      throw forbidden(action === 'subscribe' ? `not a member of ${channel}` : `not allowed to publish to ${channel}: it needs the member role in a room that is not archived`);
    }
  };
  return {
    maySubscribe: (principal, channel) => check(principal, channel, 'subscribe'),
    mayPublish: (principal, channel) => check(principal, channel, 'publish'),
  };
}
