/**
 * The daily digest: a BullMQ job scheduler runs `digest-run` once a day at the
 * configured hour; it queues one `digest` job per user who has unread notifications
 * from the last day, the digest on and an email address; each sends one email
 * listing them. Digest job ids carry the user and the day, so a run repeated the
 * same day queues nothing new.
 */
import type { Job } from 'bullmq';
import type { NotificationSettings } from '../config/notifications.js';
import type { EmailSender } from './email-sender.js';
import type { NotificationMetrics } from './metrics.js';
import type { NotifyStores } from './notifier.js';
import { deliveryKey, jobIdOf, type DigestJobData, type NotifyQueue } from './queue.js';
import { digestEmail } from './templates.js';

export const DIGEST_SCHEDULER_ID = 'daily-digest';
/** A digest covers the notifications of the last day. */
export const DIGEST_WINDOW_MS = 24 * 60 * 60 * 1000;
/** Notifications listed in one digest (the rest are counted). */
export const DIGEST_ITEMS = 20;
const USERS_PER_PAGE = 500;
/** Bounds one run: users beyond this many wait for the next day. */
const MAX_USERS_PER_RUN = 1_000_000;

export interface DigestDeps {
  stores: NotifyStores;
  queue: NotifyQueue;
  email: EmailSender | null;
  settings: Pick<NotificationSettings, 'digest' | 'email'>;
  metrics?: NotificationMetrics;
  now?: () => number;
}

/** Create, change or remove the daily scheduler to match the settings. */
export async function scheduleDigest(queue: NotifyQueue, digest: NotificationSettings['digest']): Promise<void> {
  if (!digest.enabled) {
    await queue.removeJobScheduler(DIGEST_SCHEDULER_ID);
    return;
  }
  await queue.upsertJobScheduler(
    DIGEST_SCHEDULER_ID,
    { pattern: `0 ${digest.hour} * * *`, tz: digest.time_zone },
    { name: 'digest-run', data: { kind: 'digest-run' }, opts: { attempts: 3, backoff: { type: 'exponential', delay: 60_000 } } },
  );
}

/** The local date (`YYYY-MM-DD`) of an instant in a time zone. */
export function localDay(epochMs: number, timeZone: string): string {
  return new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(epochMs));
}

export class Digest {
  private readonly now: () => number;

  constructor(private readonly deps: DigestDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Queue the day's digests; resolves with how many jobs were added. */
  async run(): Promise<number> {
    const { stores, queue, settings } = this.deps;
    if (!this.deps.email) return 0;
    const now = this.now();
    const since = new Date(now - DIGEST_WINDOW_MS);
    const day = localDay(now, settings.digest.time_zone);
    let after: { tenant: string; userId: string } | null = null;
    let queued = 0;
    for (let seen = 0; seen < MAX_USERS_PER_RUN; seen += USERS_PER_PAGE) {
      const page = await stores.notifications.usersWithUnread(since, after, USERS_PER_PAGE);
      if (page.length === 0) break;
      after = page[page.length - 1]!;
      const byTenant = new Map<string, string[]>();
      for (const u of page) {
        const users = byTenant.get(u.tenant);
        if (users) users.push(u.userId);
        else byTenant.set(u.tenant, [u.userId]);
      }
      for (const [tenant, users] of byTenant) {
        const prefs = await stores.preferences.getMany(tenant, users);
        const jobs = users
          .filter((u) => {
            const p = prefs.get(u)!;
            return p.enabled && p.digest && p.email !== null;
          })
          .map((userId) => ({
            name: 'digest' as const,
            data: { kind: 'digest', tenant, userId, since: since.toISOString() } satisfies DigestJobData,
            opts: { jobId: jobIdOf('digest', deliveryKey(tenant, 'digest', day, userId)) },
          }));
        if (jobs.length) await queue.addBulk(jobs);
        queued += jobs.length;
      }
      if (page.length < USERS_PER_PAGE) break;
    }
    return queued;
  }

  /** Send one user's digest; resolves false when there was nothing to send. */
  async send(job: Job<DigestJobData>): Promise<boolean> {
    const { tenant, userId, since } = job.data;
    const { stores, email, settings } = this.deps;
    const prefs = await stores.preferences.get(tenant, userId);
    if (!email || !prefs.enabled || !prefs.digest || !prefs.email) return false;
    const { notifications, total } = await stores.notifications.unreadSince(tenant, userId, new Date(since), DIGEST_ITEMS);
    if (total === 0) return false;
    try {
      await email.send(prefs.email, digestEmail(notifications, total, { baseUrl: settings.email.base_url }));
    } catch (err) {
      if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) this.deps.metrics?.failed.inc({ channel: 'email' });
      throw err;
    }
    this.deps.metrics?.sent.inc({ channel: 'email' });
    return true;
  }
}
