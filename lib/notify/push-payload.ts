/**
 * The JSON payload of a web push: what the service worker receives. Push services
 * accept about 4 KiB of encrypted payload, so the JSON is kept under
 * `MAX_PUSH_PAYLOAD_BYTES` (UTF-8 bytes, escapes included) by trimming the body,
 * then the title, and leaving the link out when it does not fit.
 */
import type { Notification } from '../store/notifications.js';

export const MAX_PUSH_PAYLOAD_BYTES = 3000;
/** What the title keeps (escaped bytes) when the body needs the room. */
const TITLE_BUDGET = 512;
/** A longer link is left out rather than cut. */
const MAX_URL_BYTES = 1024;
const ELLIPSIS = '…';

/** Bytes `value` takes inside a JSON string (UTF-8, escapes included). */
export function jsonBytes(value: string): number {
  return Buffer.byteLength(JSON.stringify(value)) - 2;
}

/**
 * `value` cut (at a code point, with `…`) so that it takes at most `maxBytes` inside
 * a JSON string.
 */
export function truncateJsonBytes(value: string, maxBytes: number): string {
  if (jsonBytes(value) <= maxBytes) return value;
  const room = maxBytes - jsonBytes(ELLIPSIS);
  if (room <= 0) return '';
  const points = Array.from(value);
  // The longest prefix that fits: binary search over code points (bounded by log2 n steps).
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (jsonBytes(points.slice(0, mid).join('')) <= room) lo = mid;
    else hi = mid - 1;
  }
  return points.slice(0, lo).join('').trimEnd() + ELLIPSIS;
}

/**
 * The notification's link for the service worker: a path on the app's origin
 * (`/…`, not `//…`), or an absolute `https:`/`http:` URL, as the email link check
 * allows; anything else (`javascript:`, `data:`…) is left out.
 */
export function pushUrl(data: Record<string, unknown>): string | undefined {
  const url = data.url;
  if (typeof url !== 'string' || url.length === 0 || jsonBytes(url) > MAX_URL_BYTES) return undefined;
  if (/[\u0000-\u001f\\]/.test(url)) return undefined;
  if (url.startsWith('/')) return url.startsWith('//') ? undefined : url;
  try {
    const abs = new URL(url);
    return abs.protocol === 'https:' || abs.protocol === 'http:' ? abs.href : undefined;
  } catch {
    return undefined;
  }
}

/** The payload's JSON, at most `maxBytes` (UTF-8) long. */
export function pushPayload(n: Notification, unread: number, maxBytes: number = MAX_PUSH_PAYLOAD_BYTES): string {
  let url = pushUrl(n.data);
  const build = (title: string, body: string, link: string | undefined): string =>
    JSON.stringify({
      id: n.id,
      title,
      body,
      channel: n.channel,
      event: n.event,
      event_id: n.eventId,
      category: n.category,
      priority: n.priority,
      created_at: n.createdAt.toISOString(),
      unread,
      ...(link ? { url: link } : {}),
    });
  const whole = build(n.title, n.body, url);
  if (Buffer.byteLength(whole) <= maxBytes) return whole;
  // Room for title and body once everything else is in.
  let fixed = Buffer.byteLength(build('', '', url));
  if (fixed + 2 * jsonBytes(ELLIPSIS) > maxBytes && url) {
    url = undefined;
    fixed = Buffer.byteLength(build('', '', url));
  }
  const room = Math.max(0, maxBytes - fixed);
  // The body is cut first; the title only beyond its budget, or when the body cannot make room.
  const titleRoom = Math.min(room, Math.max(TITLE_BUDGET, room - jsonBytes(n.body)));
  const title = truncateJsonBytes(n.title, titleRoom);
  const body = truncateJsonBytes(n.body, room - jsonBytes(title));
  const out = build(title, body, url);
  if (Buffer.byteLength(out) <= maxBytes) return out;
  // Only with absurd ids or names: the bare minimum.
  return build(truncateJsonBytes(n.title, 64), '', undefined);
}
