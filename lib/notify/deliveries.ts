/**
 * The BullMQ processor of delivery jobs: web push, FCM and email for one
 * notification and one user, with the fallback to email when no push reaches them.
 *
 * A job that throws is retried with exponential backoff; after its last attempt it
 * stays in BullMQ's failed set, the dead-letter list (`dead-letters.ts`). Targets
 * already reached are remembered in the job's data, so a retry sends only to the
 * others, and a delivery recorded as `sent` is never sent again. Targets the user
 * turned off (per device type, or one by one) are skipped.
 */
import { UnrecoverableError, type Job } from 'bullmq';
import type { NotificationSettings } from '../config/notifications.js';
import type { Notification } from '../store/notifications.js';
import type { EmailSender } from './email-sender.js';
import { fcmPublicReason, type FcmOutcome, type FcmSender } from './fcm-sender.js';
import type { NotificationMetrics } from './metrics.js';
import type { NotifyStores } from './notifier.js';
import { jobIdOf, type DeliveryJobData, type NotifyQueue, type PushKind } from './queue.js';
import { pushPayload } from './push-payload.js';
import { notificationEmail } from './templates.js';
import { emailPublicReason, PermanentEmailError } from './email-sender.js';
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
  /** The worker log: the detail of failures (never stored where users see it). */
  log?: (line: string) => void;
}

/** How a job ended when it did not throw. */
export type DeliveryResult = 'sent' | 'already_sent' | 'no_target' | 'gone';

/** One target's failure: what users may see (`reason`) and what only the worker log gets (`detail`). */
interface Failure {
  reason: string;
  detail: string;
}

/**
 * A delivery that failed: its message is the user-safe reasons (what BullMQ keeps
 * as the dead letter's reason), `detail` the network and server text for the log.
 */
export class DeliveryFailure extends Error {
  readonly detail: string;
  constructor(failures: readonly Failure[]) {
    super([...new Set(failures.map((f) => f.reason))].join('; '));
    this.name = 'DeliveryFailure';
    this.detail = failures.map((f) => f.detail).join('; ');
  }
}

const BLOCKED_REASON = 'the push endpoint is not a public address';

/** The user-safe reason for an error of a `kind` delivery, and its detail. */
function failureOf(err: unknown, kind: DeliveryJobData['kind']): Failure {
  const detail = err instanceof Error ? err.message : String(err);
  const known = (err as { publicReason?: unknown } | null)?.publicReason;
  if (typeof known === 'string') return { reason: known, detail };
  if (kind === 'email') return { reason: emailPublicReason(err), detail };
  if (kind === 'fcm') return { reason: fcmPublicReason(err), detail };
  return { reason: 'the push service could not be reached', detail };
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
      const unrecoverable = err instanceof UnrecoverableError;
      const failure = err instanceof DeliveryFailure ? { reason: err.message, detail: err.detail } : failureOf(unrecoverable && err.cause ? err.cause : err, d.kind);
      this.deps.log?.(`streamgate worker: ${job.id}: attempt ${job.attemptsMade + 1}: ${failure.detail}`);
      const final = isFinal(job) || unrecoverable;
      await this.setState(job, final ? 'failed' : 'queued', failure.reason);
      if (final) {
        this.deps.metrics?.failed.inc({ channel: d.kind });
        if (d.kind !== 'email') await this.fallback(job);
      }
      // BullMQ keeps the message as the dead letter's reason: the user-safe one.
      throw unrecoverable ? new UnrecoverableError(failure.reason) : new DeliveryFailure([failure]);
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
    const errors: Failure[] = [];
    let blocked = 0;
    let reached = 0;
    const markDone = async (ids: string[]) => {
      for (const id of ids) done.add(id);
      reached += ids.length;
      await job.updateData({ ...d, done: [...done] });
    };

    if (kind === 'webpush') {
      const sender = this.deps.senders.webpush;
      const subs = sender ? (await targets.webPushFor(d.tenant, [d.userId])).filter((s) => s.enabled && !off.has(s.deviceType) && !done.has(s.id)) : [];
      if (sender && subs.length > 0) {
        const payload = pushPayload(n, await this.deps.stores.notifications.unreadCount(d.tenant, d.userId));
        for (const s of subs) {
          try {
            const outcome = await sender.send(s, payload, n.priority);
            // 404/410: the subscription expired or was unsubscribed.
            if (outcome === 'gone') await targets.deleteWebPush(d.tenant, s.id);
            else if (outcome === 'blocked') {
              blocked++;
              this.deps.log?.(`streamgate worker: ${job.id}: subscription ${s.id}: refused to connect: not a public address`);
            } else await markDone([s.id]);
          } catch (err) {
            errors.push(failureOf(err, 'webpush'));
          }
        }
      }
    } else {
      const sender = this.deps.senders.fcm;
      const devices = sender ? (await targets.devicesFor(d.tenant, [d.userId])).filter((t) => t.enabled && !off.has(t.platform) && !done.has(t.id)) : [];
      if (sender && devices.length > 0) {
        let outcomes: FcmOutcome[];
        try {
          outcomes = await sender.send(
            devices.map((t) => t.token),
            {
              title: n.title,
              body: n.body,
              priority: n.priority,
              data: { notification_id: n.id, channel: n.channel, event: n.event, event_id: n.eventId, category: n.category, priority: n.priority },
            },
          );
        } catch (err) {
          throw new DeliveryFailure([failureOf(err, 'fcm')]);
        }
        const sent: string[] = [];
        for (let i = 0; i < devices.length; i++) {
          const outcome = outcomes[i];
          if (outcome === 'sent') sent.push(devices[i]!.id);
          else if (outcome === 'invalid') await targets.deleteDevice(d.tenant, devices[i]!.id);
          else errors.push(outcome ? failureOf(outcome, 'fcm') : { reason: 'FCM did not answer', detail: 'no answer from FCM' });
        }
        if (sent.length) await markDone(sent);
      }
    }

    if (errors.length > 0 && !isFinal(job)) throw new DeliveryFailure(errors);
    if (done.size > 0) {
      if (errors.length > 0) {
        const failure = new DeliveryFailure(errors);
        this.deps.log?.(`streamgate worker: ${job.id}: sent, but some targets failed: ${failure.detail}`);
        await this.setState(job, 'sent', failure.message);
      } else {
        await this.setState(job, 'sent', null);
      }
      return 'sent';
    }
    if (errors.length > 0) throw new DeliveryFailure(errors);
    // Every target was gone or refused (or none was left): the push cannot reach the user.
    await this.setState(job, 'no_target', blocked > 0 ? BLOCKED_REASON : reached === 0 ? 'no push target' : null);
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
      if (err instanceof PermanentEmailError) {
        const unrecoverable = new UnrecoverableError(err.message);
        unrecoverable.cause = err;
        throw unrecoverable;
      }
      throw err;
    }
    await this.setState(job, 'sent', null);
    return 'sent';
  }
}
