/**
 * What a user's preferences make of one notification: whether it exists at all,
 * which delivery channels may carry it, which device types are off, and whether
 * quiet hours delay it or do-not-disturb holds it back. `emergency` events go
 * through quiet hours and do-not-disturb.
 */
import { DELIVERY_CHANNELS, type DeliveryChannel, type QuietHoursSettings } from '../config/notifications.js';
import type { Priority } from '../protocol/frames.js';
import type { NotificationPreferences, QuietHours } from '../store/notification-preferences.js';
import { quietHoursEnd } from './quiet-hours.js';

export interface DeliveryPlan {
  /** False: the user is not told at all (notifications or this category off). */
  notify: boolean;
  /** The delivery channels the preferences allow (email still needs an address). */
  channels: DeliveryChannel[];
  /** Device types the user turned off. */
  excludedDevices: string[];
  /** When quiet hours end (epoch ms): deliver then, not now. Null: now. */
  delayUntil: number | null;
  /** Do-not-disturb holds external delivery back: in-app only (and the digest). */
  held: boolean;
}

export interface PlanContext {
  category: string;
  event: string;
  priority: Priority;
  /** The configured default quiet hours, for users without their own. */
  defaultQuietHours: QuietHoursSettings | null;
  now: number;
}

export function planDelivery(prefs: NotificationPreferences, ctx: PlanContext): DeliveryPlan {
  const none: DeliveryPlan = { notify: false, channels: [], excludedDevices: [], delayUntil: null, held: false };
  if (!prefs.enabled) return none;
  // An entry for the event name wins over one for its category.
  const entry = prefs.categories[ctx.event] ?? prefs.categories[ctx.category];
  if (entry === false) return none;
  const channels = DELIVERY_CHANNELS.filter((c) => prefs.channels[c] !== false && (typeof entry !== 'object' || entry[c] !== false));
  const excludedDevices = Object.entries(prefs.devices)
    .filter(([, on]) => on === false)
    .map(([type]) => type);
  const emergency = ctx.priority === 'emergency';
  const held = !emergency && prefs.dndUntil !== null && prefs.dndUntil.getTime() > ctx.now;
  let delayUntil: number | null = null;
  const quiet: QuietHours | null =
    prefs.quietHours ??
    (ctx.defaultQuietHours
      ? { start: ctx.defaultQuietHours.start, end: ctx.defaultQuietHours.end, timeZone: ctx.defaultQuietHours.time_zone }
      : null);
  if (!emergency && !held && quiet) delayUntil = quietHoursEnd(ctx.now, quiet);
  return { notify: true, channels: held ? [] : channels, excludedDevices, delayUntil, held };
}
