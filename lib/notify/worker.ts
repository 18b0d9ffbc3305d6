/**
 * `streamgate worker`: the notifier (consumer group → BullMQ) and the BullMQ worker
 * that sends (web push, FCM, email, daily digest) and prunes the history, in one process. `close()` stops
 * both within a few seconds: the notifier finishes its batch, the BullMQ worker its
 * jobs in flight (past `closeTimeoutMs` they are abandoned, and BullMQ hands them to
 * another worker once their lock expires).
 */
import type { Agent } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import type { Config } from '../config/config.js';
import type { NotificationConfig } from '../config/notifications.js';
import type { Engine } from '../engine/engine.js';
import { RedisEngine } from '../engine/redis-engine.js';
import { namespaceOf } from '../protocol/channel.js';
import { migrateLatest, openDatabase } from '../store/database.js';
import { PreferenceStore } from '../store/notification-preferences.js';
import { NotificationStore } from '../store/notifications.js';
import { PushTargetStore } from '../store/push-targets.js';
import { RoomStore } from '../store/rooms.js';
import { fcmAgent, pushAgent } from './agents.js';
import { DeliveryProcessor, type Senders } from './deliveries.js';
import { Digest, scheduleDigest } from './digest.js';
import { EmailSender } from './email-sender.js';
import { NotifierLagMonitor } from './lag-monitor.js';
import { FcmSender, type FcmSenderOptions } from './fcm-sender.js';
import { NotificationMetrics } from './metrics.js';
import { Notifier, NOTIFIER_GROUP, type NotifierOptions, type NotifyStores } from './notifier.js';
import { RedisNotifierGroup } from './notifier-group.js';
import { bullPrefix, connectionOptions, createQueue, QUEUE_NAME, type DeliveryJobData, type DigestJobData, type NotifierJobData, type NotifyJobData, type NotifyQueue } from './queue.js';
import { prune, schedulePrune } from './retention.js';
import type { RoomMembers } from './rules.js';
import { WebPushSender } from './web-push-sender.js';

/** The parts of the configuration the worker reads. */
export type WorkerConfig = Pick<Config, 'nodeEnv' | 'redisUrl' | 'databaseUrl' | 'sqliteFile' | 'databaseSchema' | 'redis' | 'namespaces' | 'defaults'> & {
  notifications: NotificationConfig;
};

export interface WorkerDeps {
  config: WorkerConfig;
  /** The engine to read the log and announce notifications with; made from `config` (and closed) when absent. */
  engine?: Engine;
  /** The database; opened from `config` (and closed) when absent. */
  store?: { knex: Knex; rooms: RoomMembers };
  /** Where the queued/sent/failed counters and the notifier lag gauges go. @default a registry of its own */
  registry?: Registry;
  /** The clock of the notifier and the digest (quiet hours, DND). @default Date.now */
  now?: () => number;
  /** Sender settings that are not credentials (tests, proxies). */
  transports?: {
    webPushAgent?: Agent;
    fcm?: FcmSenderOptions;
    smtp?: string | SMTPTransport.Options;
  };
  notifier?: Partial<Pick<NotifierOptions, 'consumer' | 'batchSize' | 'blockMs' | 'claimIdleMs' | 'claimIntervalMs' | 'maxDeliveries' | 'idleConsumerMs'>>;
  /** How often the notifier lag gauges are refreshed (Redis engines only). @default 5000 */
  lagIntervalMs?: number;
  /** Jobs sent at once. @default 10 */
  concurrency?: number;
  /** Run the notifier here. @default true */
  runNotifier?: boolean;
  /** Run the senders here. @default true */
  runSenders?: boolean;
  /** How long `close` waits for jobs in flight. @default 5000 */
  closeTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface RunningWorker {
  readonly queue: NotifyQueue;
  readonly metrics: NotificationMetrics;
  readonly notifier: Notifier | null;
  /** The notifier lag gauges (null without a Redis engine). */
  readonly lag: NotifierLagMonitor | null;
  close(): Promise<void>;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

async function makeSenders(deps: WorkerDeps): Promise<Senders> {
  const { notifications } = deps.config;
  const creds = notifications.credentials;
  // Connects to public addresses only (port 443 only in production), unless NOTIFY_ALLOW_PRIVATE_ENDPOINTS.
  const webPushAgent = deps.transports?.webPushAgent ?? pushAgent(creds, { production: deps.config.nodeEnv === 'production' });
  const webpush = creds.vapid ? new WebPushSender({ vapid: creds.vapid, agent: webPushAgent }) : null;
  let fcm: FcmSender | null = null;
  if (deps.transports?.fcm) {
    fcm = await FcmSender.create(deps.transports.fcm);
  } else if (creds.fcm) {
    const httpAgent = fcmAgent(creds);
    // HTTP/2 (the default for batches) would not go through the agent.
    fcm = await FcmSender.create({ serviceAccount: creds.fcm, ...(httpAgent ? { httpAgent, legacyHttpTransport: true } : {}) });
  }
  const smtp = deps.transports?.smtp ?? creds.smtpUrl;
  const email = smtp ? new EmailSender({ transport: smtp, from: notifications.email.from }) : null;
  return { webpush, fcm, email };
}

/** Start the notification pipeline; resolves once it runs. */
export async function runWorker(deps: WorkerDeps): Promise<RunningWorker> {
  const { config } = deps;
  const log = deps.log ?? ((line: string) => process.stderr.write(line + '\n'));
  if (!config.redisUrl) throw new Error('streamgate worker needs REDIS_URL (BullMQ and the consumer groups live in Redis)');
  const settings = config.notifications;
  const cleanup: Array<() => Promise<void> | void> = [];
  const closeAll = async () => {
    for (const step of cleanup.reverse()) await Promise.resolve(step()).catch((err: unknown) => log(`streamgate worker: while closing: ${message(err)}`));
  };

  try {
    let knex: Knex;
    let rooms: RoomMembers;
    if (deps.store) {
      knex = deps.store.knex;
      rooms = deps.store.rooms;
    } else {
      const own = await openDatabase(config);
      cleanup.push(() => own.destroy());
      if (config.nodeEnv !== 'production') await migrateLatest(own);
      knex = own;
      rooms = new RoomStore(own);
    }
    let engine: Engine;
    if (deps.engine) {
      engine = deps.engine;
    } else {
      const own = await RedisEngine.create({
        url: config.redisUrl,
        keyPrefix: config.redis.key_prefix,
        shards: config.redis.shards,
        logMaxLength: config.redis.log_max_length,
        retention: (channel) => (config.namespaces[namespaceOf(channel)] ?? config.defaults).retention,
      });
      cleanup.push(() => own.close());
      engine = own;
    }
    const stores: NotifyStores = {
      notifications: new NotificationStore(knex),
      preferences: new PreferenceStore(knex),
      targets: new PushTargetStore(knex),
      rooms,
    };
    const registry = deps.registry ?? new Registry();
    const metrics = new NotificationMetrics(registry);
    const connection = { redisUrl: config.redisUrl, prefix: bullPrefix(config.redis.key_prefix) };
    const queue = createQueue(connection, settings.retry);
    queue.on('error', (err) => log(`streamgate worker: queue: ${message(err)}`));
    cleanup.push(() => queue.close());

    const senders = await makeSenders(deps);
    cleanup.push(() => senders.email?.close());
    cleanup.push(() => senders.fcm?.close());

    // Delivery counts, idle refresh and consumer cleanup of the notifier group, on the
    // engine's shard logs; its lag, pending entries and trim gaps (every worker, so
    // they are watched even when no notifier runs).
    let group: RedisNotifierGroup | undefined;
    let lag: NotifierLagMonitor | null = null;
    if (engine.kind === 'redis') {
      const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: true });
      redis.on('error', () => undefined);
      cleanup.push(() => {
        redis.disconnect();
      });
      await redis.connect();
      if (deps.runNotifier ?? true) group = new RedisNotifierGroup(redis, config.redis.key_prefix, config.redis.shards, NOTIFIER_GROUP);
      const monitor = new NotifierLagMonitor({
        redis,
        keyPrefix: config.redis.key_prefix,
        shards: config.redis.shards,
        group: NOTIFIER_GROUP,
        registry,
        ...(deps.lagIntervalMs !== undefined ? { intervalMs: deps.lagIntervalMs } : {}),
        log,
      });
      lag = monitor;
    }
    const notifierOptions: NotifierOptions = {
      engine,
      stores,
      settings,
      queue,
      metrics,
      senders: { webpush: senders.webpush !== null, fcm: senders.fcm !== null, email: senders.email !== null },
      ...(deps.now ? { now: deps.now } : {}),
      ...(group ? { group } : {}),
      ...deps.notifier,
      onError: (err) => log(`streamgate worker: notifier: ${message(err)}`),
    };

    let notifier: Notifier | null = null;
    if (deps.runNotifier ?? true) {
      notifier = new Notifier(notifierOptions);
      await notifier.start();
      const n = notifier;
      cleanup.push(() => n.stop());
    }

    if (deps.runSenders ?? true) {
      const processor = new DeliveryProcessor({ stores, senders, queue, settings, metrics, log });
      const digest = new Digest({ stores, queue, email: senders.email, settings, metrics, ...(deps.now ? { now: deps.now } : {}) });
      // Dead letters of the notifier, run again by `retry`: handled as the notifier would (never started here).
      const handler = notifier ?? new Notifier(notifierOptions);
      const notifierJob = async (job: Job<NotifierJobData>) => {
        if (job.data.stage === 'dead') {
          // First run: only into the dead-letter list, with the notifier's reason.
          await job.updateData({ ...job.data, stage: 'retry' });
          throw new UnrecoverableError(`the notifier gave up after ${job.data.deliveries} deliveries: ${job.data.reason}`);
        }
        await handler.handle(job.data.event);
        return 'handled';
      };
      const worker = new Worker<NotifyJobData>(
        QUEUE_NAME,
        async (job: Job<NotifyJobData>) => {
          switch (job.data.kind) {
            case 'webpush':
            case 'fcm':
            case 'email':
              return processor.run(job as Job<DeliveryJobData>);
            case 'digest-run':
              return digest.run();
            case 'digest':
              return digest.send(job as Job<DigestJobData>);
            case 'prune': {
              const pruned = await prune(stores, settings, (deps.now ?? Date.now)());
              if (pruned.notifications || pruned.subscriptions) {
                log(`streamgate worker: pruned ${pruned.notifications} notifications older than ${settings.history_days} days and ${pruned.subscriptions} expired subscriptions`);
              }
              return pruned;
            }
            case 'notifier':
              return notifierJob(job as Job<NotifierJobData>);
          }
        },
        { connection: connectionOptions(config.redisUrl), prefix: connection.prefix, concurrency: deps.concurrency ?? 10 },
      );
      worker.on('error', (err) => log(`streamgate worker: ${message(err)}`));
      worker.on('failed', (job, err) => {
        if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) log(`streamgate worker: ${job.id} failed for good: ${err.message}`);
      });
      const timeout = deps.closeTimeoutMs ?? 5000;
      cleanup.push(async () => {
        const closed = worker.close();
        const late = await Promise.race([closed.then(() => false), sleep(timeout, true, { ref: false })]);
        if (late) await worker.close(true);
      });
      await worker.waitUntilReady();
      await scheduleDigest(queue, settings.digest);
      await schedulePrune(queue);
    }

    if (lag) {
      const monitor = lag;
      // After the notifier's start (the group exists), before the connection closes.
      await monitor.start();
      cleanup.push(() => monitor.stop());
    }

    let closing: Promise<void> | null = null;
    return {
      queue,
      metrics,
      notifier,
      lag,
      close: () => (closing ??= closeAll()),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
