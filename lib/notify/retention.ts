/**
 * Retention: a BullMQ job scheduler runs `prune` once a day; it deletes
 * notifications older than `history_days` (with their delivery states) and web push
 * subscriptions past their `expirationTime`.
 */
import type { NotificationSettings } from '../config/notifications.js';
import type { NotifyStores } from './notifier.js';
import type { NotifyQueue } from './queue.js';

export const PRUNE_SCHEDULER_ID = 'history-prune';
const DAY_MS = 24 * 60 * 60 * 1000;

/** Create (or change) the daily pruning job: 03:17 UTC, away from the digest's round hours. */
export async function schedulePrune(queue: NotifyQueue): Promise<void> {
  await queue.upsertJobScheduler(
    PRUNE_SCHEDULER_ID,
    { pattern: '17 3 * * *', tz: 'UTC' },
    { name: 'prune', data: { kind: 'prune' }, opts: { attempts: 3, backoff: { type: 'exponential', delay: 60_000 } } },
  );
}

export interface PruneResult {
  notifications: number;
  subscriptions: number;
}

/** Run the pruning now. */
export async function prune(stores: Pick<NotifyStores, 'notifications' | 'targets'>, settings: Pick<NotificationSettings, 'history_days'>, now: number = Date.now()): Promise<PruneResult> {
  const notifications = await stores.notifications.pruneBefore(new Date(now - settings.history_days * DAY_MS));
  const subscriptions = await stores.targets.deleteExpiredWebPush(new Date(now));
  return { notifications, subscriptions };
}
