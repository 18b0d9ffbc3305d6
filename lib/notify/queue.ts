/**
 * The BullMQ queue of notification deliveries: job kinds, their data, their ids,
 * and the queue's options.
 *
 * A delivery job's id is `<kind>|<tenant>|<channel>|<event id>|<user>` (parts
 * URI-encoded: BullMQ refuses `:` in ids). Adding a job whose id exists does nothing,
 * so a log entry the notifier handles twice never queues (or sends) twice. Event ids
 * are unique per channel only, hence the channel in the id.
 */
import { Queue, type JobsOptions, type QueueOptions } from 'bullmq';
import type { NotificationSettings } from '../config/notifications.js';
import type { LogEvent } from '../engine/engine.js';

export const QUEUE_NAME = 'notifications';

export type PushKind = 'webpush' | 'fcm';
export type DeliveryKind = PushKind | 'email';

export interface DeliveryJobData {
  kind: DeliveryKind;
  tenant: string;
  userId: string;
  notificationId: string;
  /** The id without its kind: another kind's job for the same delivery is `<kind>|<key>`. */
  key: string;
  /** Push jobs: send an email when no push reaches the user. */
  fallback: boolean;
  /** Device types the user turned off. */
  excludedDevices: string[];
  /** Targets already sent to, so a retry skips them. */
  done: string[];
}

export interface DigestJobData {
  kind: 'digest';
  tenant: string;
  userId: string;
  /** Unread notifications created since then (ISO). */
  since: string;
}

export interface DigestRunData {
  kind: 'digest-run';
}

/** The daily pruning of the notification history (`history_days`) and expired subscriptions. */
export interface PruneJobData {
  kind: 'prune';
}

/**
 * A log entry the notifier gave up on (it failed `deliveries` times): a dead letter.
 * Its first run only fails it (`stage: 'dead'`), so that it shows in the
 * dead-letter list; run again by `retry`, it handles the event as the notifier would.
 */
export interface NotifierJobData {
  kind: 'notifier';
  tenant: string;
  event: LogEvent;
  /** Why the notifier gave up (its last error). */
  reason: string;
  deliveries: number;
  stage: 'dead' | 'retry';
}

export type NotifyJobData = DeliveryJobData | DigestJobData | DigestRunData | PruneJobData | NotifierJobData;

export type NotifyQueue = Queue<NotifyJobData>;

/** Where the queue lives. */
export interface QueueConnection {
  /** `redis://…` */
  redisUrl: string;
  /** Prefix of BullMQ's keys, e.g. `sg:bull`. */
  prefix: string;
}

/** Completed jobs are kept this long, so a late redelivery still finds their ids. */
export const KEEP_COMPLETED_SECONDS = 2 * 24 * 60 * 60;
/** The dead-letter list keeps at most this many failed jobs. */
export const KEEP_FAILED = 10_000;

/** The BullMQ prefix for a Streamgate key prefix. */
export function bullPrefix(keyPrefix: string): string {
  return `${keyPrefix}:bull`;
}

/** The key part shared by every job of one (event, recipient). */
export function deliveryKey(tenant: string, channel: string, eventId: string, userId: string): string {
  return [tenant, channel, eventId, userId].map(encodeURIComponent).join('|');
}

export function jobIdOf(kind: DeliveryKind | 'digest' | 'notifier', key: string): string {
  return `${kind}|${key}`;
}

/** The id of the dead letter of a log event the notifier gave up on. */
export function notifierJobId(tenant: string, channel: string, eventId: string): string {
  return jobIdOf('notifier', [tenant, channel, eventId].map(encodeURIComponent).join('|'));
}

/** The options BullMQ connections need: blocking commands must never give up. */
export function connectionOptions(redisUrl: string): QueueOptions['connection'] {
  return { url: redisUrl, maxRetriesPerRequest: null, enableOfflineQueue: true };
}

/** Retries with exponential backoff; completed jobs kept two days, failed ones kept as dead letters. */
export function defaultJobOptions(retry: NotificationSettings['retry']): JobsOptions {
  return {
    attempts: retry.attempts,
    backoff: { type: 'exponential', delay: retry.backoff_ms },
    removeOnComplete: { age: KEEP_COMPLETED_SECONDS },
    removeOnFail: { count: KEEP_FAILED },
  };
}

export function createQueue(connection: QueueConnection, retry: NotificationSettings['retry']): NotifyQueue {
  return new Queue<NotifyJobData>(QUEUE_NAME, {
    connection: connectionOptions(connection.redisUrl),
    prefix: connection.prefix,
    defaultJobOptions: defaultJobOptions(retry),
  });
}
