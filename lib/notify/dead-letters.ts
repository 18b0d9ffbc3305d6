/**
 * The dead-letter list: deliveries that failed their last attempt stay in BullMQ's
 * failed set (at most `KEEP_FAILED`), with their (user-safe) reason; so do log
 * entries the notifier gave up on (kind `notifier`, see `notifier.ts`).
 * `streamgate notifications failed` lists them and `streamgate notifications retry
 * <id|--all>` queues them again with a fresh set of attempts (a `notifier` one
 * handles its event again).
 */
import { createQueue, KEEP_FAILED, type NotifyJobData, type NotifyQueue, type QueueConnection } from './queue.js';
import type { NotificationSettings } from '../config/notifications.js';

export interface FailedDelivery {
  /** The BullMQ job id: what `retry` takes. */
  id: string;
  /** `webpush`, `fcm`, `email`, `digest`, `digest-run`, `prune` or `notifier`. */
  kind: string;
  tenant: string | null;
  userId: string | null;
  notificationId: string | null;
  attempts: number;
  reason: string;
  failedAt: Date | null;
}

type QueuedJob = Awaited<ReturnType<NotifyQueue['getFailed']>>[number];

const present = (j: QueuedJob | undefined | null): j is QueuedJob => Boolean(j);

function describeJob(job: QueuedJob): FailedDelivery {
  const d: NotifyJobData = job.data;
  return {
    id: job.id ?? '',
    kind: d.kind,
    tenant: 'tenant' in d ? d.tenant : null,
    userId: 'userId' in d ? d.userId : null,
    notificationId: 'notificationId' in d ? d.notificationId : null,
    attempts: job.attemptsMade,
    reason: job.failedReason ?? '',
    failedAt: job.finishedOn ? new Date(job.finishedOn) : null,
  };
}

/** Failed deliveries, most recent first. */
export async function listFailed(queue: NotifyQueue, options: { limit?: number; offset?: number } = {}): Promise<{ total: number; failed: FailedDelivery[] }> {
  const limit = Math.max(1, Math.min(1000, Math.floor(options.limit ?? 100)));
  const offset = Math.max(0, Math.floor(options.offset ?? 0));
  const [total, jobs] = await Promise.all([queue.getFailedCount(), queue.getFailed(offset, offset + limit - 1)]);
  return { total, failed: jobs.filter(present).map(describeJob) };
}

const RETRY = { resetAttemptsMade: true, resetAttemptsStarted: true } as const;

/**
 * Queue failed deliveries again with all their attempts: one by job id, or every
 * one (`'all'`). Resolves with how many were queued (0 for an unknown id or a job
 * that has not failed).
 */
export async function retryFailed(queue: NotifyQueue, which: string | 'all'): Promise<number> {
  if (which !== 'all') {
    const job = await queue.getJob(which);
    if (!job || (await job.getState()) !== 'failed') return 0;
    await job.retry('failed', RETRY);
    return 1;
  }
  let retried = 0;
  // Retried jobs leave the failed set, so each page is read from its start.
  for (let round = 0; round * 100 < KEEP_FAILED + 100; round++) {
    const jobs = (await queue.getFailed(0, 99)).filter(present);
    if (jobs.length === 0) break;
    for (const job of jobs) {
      try {
        await job.retry('failed', RETRY);
        retried++;
      } catch {
        // Retried or removed by someone else meanwhile.
      }
    }
  }
  return retried;
}

export interface DeadLetters {
  list(options?: { limit?: number; offset?: number }): Promise<{ total: number; failed: FailedDelivery[] }>;
  retry(which: string | 'all'): Promise<number>;
  close(): Promise<void>;
}

/** The dead-letter list of a deployment, for the CLI. */
export function openDeadLetters(connection: QueueConnection, retry: NotificationSettings['retry']): DeadLetters {
  const queue = createQueue(connection, retry);
  queue.on('error', () => undefined);
  return {
    list: (options) => listFailed(queue, options),
    retry: (which) => retryFailed(queue, which),
    close: () => queue.close(),
  };
}
