/**
 * A subscribed channel's present users, kept from the `members` answer and the
 * presence frames after it. Frames that arrive while an answer is awaited are applied
 * to the old list at once and again on top of the answer, in order, so none is lost to
 * the race between the request and the frames.
 */
import type { MembersResult, PresenceEvent, PresenceStatus, PresenceUser } from './types.js';

const STATUSES: readonly string[] = ['online', 'away', 'busy', 'offline'];

function strOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** The server's `user` object (snake_case) as the SDK's `PresenceUser`; null when it is not one. */
export function toPresenceUser(raw: unknown): PresenceUser | null {
  if (!raw || typeof raw !== 'object') return null;
  const u = raw as Record<string, unknown>;
  if (typeof u.id !== 'string') return null;
  return {
    id: u.id,
    name: strOrNull(u.name),
    status: (typeof u.status === 'string' && STATUSES.includes(u.status) ? u.status : 'online') as PresenceStatus,
    device: strOrNull(u.device),
    customStatus: strOrNull(u.custom_status),
    lastSeen: strOrNull(u.last_seen),
  };
}

/** A presence frame as an event; null when it is malformed. */
export function toPresenceEvent(frame: { channel: string; [key: string]: unknown }): PresenceEvent | null {
  const { channel, action } = frame;
  if (action === 'count') return typeof frame.count === 'number' ? { channel, action, count: frame.count } : null;
  if (action !== 'join' && action !== 'leave' && action !== 'update') return null;
  const user = toPresenceUser(frame.user);
  return user ? { channel, action, user } : null;
}

/** A `members` reply (WebSocket) or answer (HTTP). */
export function toMembersResult(answer: Record<string, unknown>): MembersResult {
  const members = Array.isArray(answer.members) ? answer.members.map(toPresenceUser).filter((u): u is PresenceUser => u !== null) : [];
  return { members, count: typeof answer.count === 'number' ? answer.count : members.length };
}

export class MemberList {
  private readonly users = new Map<string, PresenceUser>();
  private total = 0;
  /** Frames seen since the request in flight was made (null: none in flight). */
  private sinceRequest: PresenceEvent[] | null = null;
  private requestSeq = 0;

  members(): PresenceUser[] {
    return [...this.users.values()];
  }

  get count(): number {
    return this.total;
  }

  has(userId: string): boolean {
    return this.users.has(userId);
  }

  /** A members request is being made: returns its number for `answer`. */
  begin(): number {
    this.sinceRequest = [];
    return ++this.requestSeq;
  }

  /** The answer to request `seq` replaces the list; false when a later request superseded it. */
  answer(seq: number, result: MembersResult): boolean {
    if (seq !== this.requestSeq) return false;
    this.users.clear();
    for (const u of result.members) this.users.set(u.id, u);
    this.total = result.count;
    const seen = this.sinceRequest ?? [];
    this.sinceRequest = null;
    for (const e of seen) this.apply(e);
    return true;
  }

  failed(seq: number): void {
    if (seq === this.requestSeq) this.sinceRequest = null;
  }

  /** A presence frame of the channel; true when the list or count changed. */
  frame(e: PresenceEvent): boolean {
    this.sinceRequest?.push(e);
    return this.apply(e);
  }

  private apply(e: PresenceEvent): boolean {
    if (e.action === 'count') {
      const changed = e.count !== this.total;
      this.total = e.count;
      return changed;
    }
    if (e.action === 'leave') {
      if (!this.users.delete(e.user.id)) return false;
    } else {
      this.users.set(e.user.id, e.user);
    }
    this.total = this.users.size;
    return true;
  }
}
