/**
 * The BullMQ processor of delivery jobs: web push, FCM and email for one
 * notification and one user, with the fallback to email when no push reaches them.
 *
 * A job that throws is retried with exponential backoff; after its last attempt it
 * stays in BullMQ's failed set, the dead-letter list (`dead-letters.ts`). Targets
 * already reached are remembered in the job's data, so a retry sends only to the
 * others, and a delivery recorded as `sent` is never sent again.
 */
import { UnrecoverableError, type Job } from 'bullmq';
import type { NotificationSettings } from '../config/notifications.js';
import type { Notification } from '../store/notifications.js';
import type { EmailSender } from './email-sender.js';
import type { FcmSender } from './fcm-sender.js';
import type { NotificationMetrics } from './metrics.js';
import type { NotifyStores } from './notifier.js';
import { jobIdOf, type DeliveryJobData, type NotifyQueue, type PushKind } from './queue.js';
import { notificationEmail } from './templates.js';
import { PermanentEmailError } from './email-sender.js';
import type { WebPushSender } from './web-push-sender.js';

export interface Senders {
  webpush: WebPushSender | null;
  fcm: FcmSender | null;
  email: EmailSender | null;
}

export interface DeliveryDeps {
  stores: NotifyStores;
  senders: Senders;
  queue: NotifyQueue;
  settings: Pick<NotificationSettings, 'email'>;
  metrics?: NotificationMetrics;
}

/** How a job ended when it did not throw. */
export type DeliveryResult = 'sent' | 'already_sent' | 'no_target' | 'gone';

/** Web push payloads stay well under the 4 KiB push services accept. */
const MAX_PUSH_BODY = 500;

function pushPayload(n: Notification, unread: number): string {
  const url = typeof n.data.url === 'string' && n.data.url.length <= 1024 ? n.data.url : undefined;
  return JSON.stringify({
    id: n.id,
    title: n.title,
    body: n.body.slice(0, MAX_PUSH_BODY),
    channel: n.channel,
    event: n.event,
    event_id: n.eventId,
    category: n.category,
    priority: n.priority,
    created_at: n.createdAt.toISOString(),
    unread,
    ...(url ? { url } : {}),
  });
}

const isFinal = (job: Job): boolean => job.attemptsMade + 1 >= (job.opts.attempts ?? 1);

export class DeliveryProcessor {
  constructor(private readonly deps: DeliveryDeps) {}

  /** The BullMQ processor for `webpush`, `fcm` and `email` jobs. */
  async run(job: Job<DeliveryJobData>): Promise<DeliveryResult> {
    const d = job.data;
    const n = await this.deps.stores.notifications.get(d.tenant, d.notificationId);
    if (!n) return 'gone';
    if (n.delivery[d.kind]?.state === 'sent') return 'already_sent';
    try {
      return d.kind === 'email' ? await this.email(job, n) : await this.push(job, n, d.kind);
    } catch (err) {
      const final = isFinal(job) || err instanceof UnrecoverableError;
      await this.setState(job, final ? 'failed' : 'queued', (err as Error).message);
      if (final) {
        this.deps.metrics?.failed.inc({ channel: d.kind });
        if (d.kind !== 'email') await this.fallback(job);
      }
      throw err;
    }
  }

  private async setState(job: Job<DeliveryJobData>, state: 'sent' | 'failed' | 'queued' | 'no_target', error: string | null): Promise<void> {
    const d = job.data;
    await this.deps.stores.notifications.setDelivery({
      tenant: d.tenant,
      notificationId: d.notificationId,
      channel: d.kind,
      state,
      attempts: job.attemptsMade + 1,
      error,
      jobId: job.id ?? null,
    });
    if (state === 'sent') this.deps.metrics?.sent.inc({ channel: d.kind });
  }

  private async push(job: Job<DeliveryJobData>, n: Notification, kind: PushKind): Promise<DeliveryResult> {
    const d = job.data;
    const { targets } = this.deps.stores;
    const done = new Set(d.done);
    const off = new Set(d.excludedDevices);
    const errors: string[] = [];
    let reached = 0;
    const markDone = async (ids: string[]) => {
      for (const id of ids) done.add(id);
      reached += ids.length;
      await job.updateData({ ...d, done: [...done] });
    };

    if (kind === 'webpush') {
      const sender = this.deps.senders.webpush;
      const subs = sender ? (await targets.webPushFor(d.tenant, [d.userId])).filter((s) => !off.has(s.deviceType) && !done.has(s.id)) : [];
      if (sender && subs.length > 0) {
        const payload = pushPayload(n, await this.deps.stores.notifications.unreadCount(d.tenant, d.userId));
        for (const s of subs) {
          try {
            if ((await sender.send(s, payload, n.priority)) === 'gone') await targets.deleteWebPush(d.tenant, s.id);
            else await markDone([s.id]);
          } catch (err) {
            errors.push((err as Error).message);
          }
        }
      }
    } else {
      const sender = this.deps.senders.fcm;
      const devices = sender ? (await targets.devicesFor(d.tenant, [d.userId])).filter((t) => !off.has(t.platform) && !done.has(t.id)) : [];
      if (sender && devices.length > 0) {
        const outcomes = await sender.send(
          devices.map((t) => t.token),
          {
            title: n.title,
            body: n.body,
            priority: n.priority,
            data: { notification_id: n.id, channel: n.channel, event: n.event, event_id: n.eventId, category: n.category, priority: n.priority },
          },
        );
        const sent: string[] = [];
        for (let i = 0; i < devices.length; i++) {
          const outcome = outcomes[i];
          if (outcome === 'sent') sent.push(devices[i]!.id);
          else if (outcome === 'invalid') await targets.deleteDevice(d.tenant, devices[i]!.id);
          else errors.push(outcome?.message ?? 'no answer from FCM');
        }
        if (sent.length) await markDone(sent);
      }
    }

    if (errors.length > 0 && !isFinal(job)) throw new Error(errors.join('; '));
    if (done.size > 0) {
      await this.setState(job, 'sent', errors.length ? errors.join('; ') : null);
      return 'sent';
    }
    if (errors.length > 0) throw new Error(errors.join('; '));
    // Every target was gone (or none was left): the push cannot reach the user.
    await this.setState(job, 'no_target', reached === 0 ? 'no push target' : null);
    await this.fallback(job);
    return 'no_target';
  }

  /**
   * Email instead, when the job asked for it and no other push channel has reached
   * the user or may still reach them. The job id makes it one email whichever push
   * channel fails last.
   */
  private async fallback(job: Job<DeliveryJobData>): Promise<void> {
    const d = job.data;
    if (!d.fallback) return;
    const states = (await this.deps.stores.notifications.deliveries(d.tenant, [d.notificationId])).get(d.notificationId) ?? {};
    for (const kind of ['webpush', 'fcm'] as const) {
      if (kind === d.kind) continue;
      const s = states[kind]?.state;
      if (s === 'sent' || s === 'queued' || s === 'delayed') return;
    }
    const jobId = jobIdOf('email', d.key);
    await this.deps.stores.notifications.initDeliveries([{ tenant: d.tenant, notificationId: d.notificationId, channel: 'email', state: 'queued', jobId }]);
    await this.deps.queue.add('email', { ...d, kind: 'email', fallback: false, done: [] }, { jobId });
    this.deps.metrics?.queued.inc({ channel: 'email' });
  }

  private async email(job: Job<DeliveryJobData>, n: Notification): Promise<DeliveryResult> {
    const d = job.data;
    const sender = this.deps.senders.email;
    const prefs = await this.deps.stores.preferences.get(d.tenant, d.userId);
    if (!sender || !prefs.email) {
      await this.setState(job, 'no_target', sender ? 'no email address' : 'SMTP is not configured');
      return 'no_target';
    }
    try {
      await sender.send(prefs.email, notificationEmail(n, { baseUrl: this.deps.settings.email.base_url }));
    } catch (err) {
      // A 5xx answer will not change: straight to the dead-letter list.
      if (err instanceof PermanentEmailError) throw new UnrecoverableError(err.message);
      throw err;
    }
    await this.setState(job, 'sent', null);
    return 'sent';
  }
}
