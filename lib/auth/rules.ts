/**
 * Who may subscribe and publish where (PROTOCOL §3). Server keys act for their tenant
 * with every right; users are judged by the channel's namespace and their claims.
 */
import { forbidden } from '../errors.js';
import { matchesAny, namespaceOf } from '../protocol/channel.js';
import type { Principal, UserPrincipal } from './principal.js';
import { roomIdOf } from './room-roles.js';

/** `dm:<a>:<b>`: the two user ids, or null when the name has not exactly two parts. */
function dmParties(channel: string): [string, string] | null {
  const parts = channel.split(':');
  if (parts.length !== 3 || !parts[1] || !parts[2]) return null;
  return [parts[1], parts[2]];
}

function userMaySubscribe(user: UserPrincipal, channel: string): boolean {
  switch (namespaceOf(channel)) {
    case 'user':
      return channel === `user:${user.userId}`;
    case 'dm': {
      const parties = dmParties(channel);
      return parties !== null && parties.includes(user.userId);
    }
    case 'tenant':
      return channel === 'tenant';
    case 'room':
      // Membership is checked by the room store (ChannelAccess, `roomChannelAccess`).
      return roomIdOf(channel) !== null;
    default:
      return matchesAny(user.channels, channel);
  }
}

function userMayPublish(user: UserPrincipal, channel: string): boolean {
  switch (namespaceOf(channel)) {
    case 'user':
    case 'tenant':
      return false;
    case 'dm': {
      const parties = dmParties(channel);
      return parties !== null && parties.includes(user.userId);
    }
    case 'room':
      return roomIdOf(channel) !== null;
    default:
      return matchesAny(user.publish, channel);
  }
}

export function maySubscribe(principal: Principal, channel: string): boolean {
  return principal.kind === 'server' || userMaySubscribe(principal, channel);
}

export function mayPublish(principal: Principal, channel: string): boolean {
  return principal.kind === 'server' || userMayPublish(principal, channel);
}

export function assertMaySubscribe(principal: Principal, channel: string): void {
  if (!maySubscribe(principal, channel)) throw forbidden(`not allowed to subscribe to ${channel}`);
}

export function assertMayPublish(principal: Principal, channel: string): void {
  if (!mayPublish(principal, channel)) throw forbidden(`not allowed to publish to ${channel}`);
}
