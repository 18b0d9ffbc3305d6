/**
 * Who is told of an event: the namespace rules of the configuration (see
 * `lib/config/notifications.ts`) applied to one log event.
 */
import type { NotificationRule, NotificationSettings } from '../config/notifications.js';
import type { LogEvent } from '../engine/engine.js';
import { namespaceOf } from '../protocol/channel.js';

/** What the notifier needs of the room store. */
export interface RoomMembers {
  members(tenant: string, roomId: string): Promise<ReadonlyArray<{ userId: string }>>;
}

/** Why a user is told: they are in the rule's audience, or the event mentions them. */
export type Reason = 'audience' | 'mention';

/** Events the notifier itself publishes; never a reason to notify. */
export const RESERVED_EVENT_PREFIX = 'notification.';

export const MAX_MENTIONS = 100;
const MAX_USER_ID = 128;
const MENTION_RE = /(^|[^A-Za-z0-9_@.])@([A-Za-z0-9_\-.]{1,128})/g;

function matchesEvent(patterns: readonly string[] | undefined, event: string): boolean {
  if (!patterns) return true;
  return patterns.some((p) => (p.endsWith('*') ? event.startsWith(p.slice(0, -1)) : p === event));
}

/** The first rule of the event's namespace that matches its name and priority, or null. */
export function matchRule(rules: NotificationSettings['rules'], event: Pick<LogEvent, 'channel' | 'event' | 'priority'>): NotificationRule | null {
  if (event.event.startsWith(RESERVED_EVENT_PREFIX)) return null;
  const entry = rules[namespaceOf(event.channel)];
  if (!entry) return null;
  for (const rule of Array.isArray(entry) ? entry : [entry]) {
    if (!matchesEvent(rule.events, event.event)) continue;
    if (rule.priorities && !rule.priorities.includes(event.priority)) continue;
    return rule;
  }
  return null;
}

/** The event's data as an object (or `{}`). */
export function eventData(event: Pick<LogEvent, 'dataJson'>): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(event.dataJson);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/**
 * The users an event mentions: `data.mentions` (user ids, or objects with an `id`)
 * and `@user` words in `data.text`; at most `MAX_MENTIONS`.
 */
export function mentionsOf(data: Record<string, unknown>): string[] {
  const found = new Set<string>();
  const add = (id: unknown) => {
    if (typeof id === 'string' && id.length > 0 && id.length <= MAX_USER_ID && found.size < MAX_MENTIONS) found.add(id);
  };
  if (Array.isArray(data.mentions)) {
    for (const m of data.mentions) add(typeof m === 'object' && m !== null ? (m as { id?: unknown }).id : m);
  }
  if (typeof data.text === 'string') {
    for (const match of data.text.slice(0, 65536).matchAll(MENTION_RE)) add(match[2]!.replace(/\.+$/, ''));
  }
  return [...found];
}

/** The ids after `<namespace>:`, split on `:` (`dm:a:b` → a, b). */
function idsOf(channel: string): string[] {
  const i = channel.indexOf(':');
  return i === -1 ? [] : channel.slice(i + 1).split(':').filter(Boolean);
}

/**
 * The users to tell of `event` under `rule`, each with the reason. The publisher is
 * never told of their own event. `owner` is the id after the namespace
 * (`user:<id>`); `participants` every id after it (`dm:<a>:<b>`); `members` the
 * members of the room whose id follows it (`room:<id>`). Mentions reach only the
 * audience when it is `participants` or `members`, so a mention cannot reach an
 * outsider; with `owner` or `none` they reach whoever is named.
 */
export async function recipientsOf(rule: NotificationRule, event: LogEvent, rooms: RoomMembers): Promise<Map<string, Reason>> {
  let audience: string[] = [];
  switch (rule.notify) {
    case 'owner': {
      const i = event.channel.indexOf(':');
      const owner = i === -1 ? '' : event.channel.slice(i + 1);
      audience = owner ? [owner] : [];
      break;
    }
    case 'participants':
      audience = idsOf(event.channel);
      break;
    case 'members': {
      const i = event.channel.indexOf(':');
      audience = i === -1 ? [] : (await rooms.members(event.tenant, event.channel.slice(i + 1))).map((m) => m.userId);
      break;
    }
    case 'none':
      break;
  }
  const out = new Map<string, Reason>();
  for (const id of audience) out.set(id, 'audience');
  if (rule.mentions) {
    const closed = rule.notify === 'participants' || rule.notify === 'members';
    for (const id of mentionsOf(eventData(event))) {
      if (closed && !out.has(id)) continue;
      out.set(id, 'mention');
    }
  }
  const publisher = event.publisher?.id;
  if (publisher !== undefined) out.delete(publisher);
  return out;
}

const MAX_TITLE = 200;
const MAX_BODY = 1000;

/** The first `max` UTF-16 units of `s`, never ending in half a surrogate pair. */
function cut(s: string, max: number): string {
  if (s.length <= max) return s;
  const last = s.charCodeAt(max - 1);
  return s.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

function text(value: unknown): string | null {
  return typeof value === 'string' && value.trim() ? value.trim() : null;
}

/**
 * The title and body of the notification: `data.title` and `data.body` (or
 * `data.text`) when the event has them, else words built from the event.
 */
export function describe(event: LogEvent, data: Record<string, unknown>, reason: Reason): { title: string; body: string } {
  const who = event.publisher?.name ?? event.publisher?.id ?? null;
  const title =
    text(data.title) ??
    (reason === 'mention' ? `${who ?? 'Someone'} mentioned you in ${event.channel}` : `${event.event} in ${event.channel}${who ? ` from ${who}` : ''}`);
  const body = text(data.body) ?? text(data.text) ?? '';
  return { title: cut(title, MAX_TITLE), body: cut(body, MAX_BODY) };
}
