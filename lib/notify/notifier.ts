/**
 * The notifier: the `notifier` consumer group on the shard logs (ARCHITECTURE §2,
 * §6). For each event it decides who is told (the namespace rules), leaves out
 * users who are online (unless the event is `emergency`), applies each recipient's
 * preferences, stores the in-app notification, announces it on `user:<id>`
 * (`notification.created`), queues the deliveries, and only then acknowledges the
 * log entry.
 *
 * Delivery is at least once: an entry left pending by a notifier that died is
 * claimed by another after `claimIdleMs`, and handled again. Everything it does is
 * idempotent per (event, recipient): the notification id and the job ids derive
 * from the tenant, channel, event id and user, and the announcement carries an
 * idempotency key, so handling an entry twice stores, announces and sends once.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DeliveryChannel, NotificationSettings } from '../config/notifications.js';
import type { Engine, GroupEntry, LogEvent } from '../engine/engine.js';
import { isValidChannel, namespaceOf } from '../protocol/channel.js';
import type { NotificationPreferences, PreferenceStore } from '../store/notification-preferences.js';
import { notificationJson, type DeliveryUpdate, type NewNotification, type Notification, type NotificationStore } from '../store/notifications.js';
import type { PushTargetStore } from '../store/push-targets.js';
import { planDelivery, type DeliveryPlan } from './delivery-policy.js';
import type { NotificationMetrics } from './metrics.js';
import { deliveryKey, jobIdOf, type DeliveryJobData, type DeliveryKind, type NotifyQueue } from './queue.js';
import { describe, eventData, matchRule, recipientsOf, type Reason, type RoomMembers } from './rules.js';

export const NOTIFIER_GROUP = 'notifier';
/** The event announcing a stored notification on `user:<id>`. */
export const NOTIFICATION_CREATED = 'notification.created';

/** The repositories the notifier and the delivery worker use. */
export interface NotifyStores {
  notifications: NotificationStore;
  preferences: PreferenceStore;
  targets: PushTargetStore;
  rooms: RoomMembers;
}

export interface NotifierOptions {
  engine: Engine;
  stores: NotifyStores;
  settings: Pick<NotificationSettings, 'rules' | 'default_quiet_hours'>;
  queue: NotifyQueue;
  /** Which senders are configured: deliveries are only queued for those. */
  senders: Readonly<Record<DeliveryChannel, boolean>>;
  metrics?: NotificationMetrics;
  /** The clock (quiet hours, do-not-disturb). @default Date.now */
  now?: () => number;
  /** This notifier's consumer name. @default `<host>-<pid>-<random>` */
  consumer?: string;
  /** Log entries per read. @default 100 */
  batchSize?: number;
  /** How long a read waits for new entries; also how long `stop` may take. @default 1000 */
  blockMs?: number;
  /** Entries another consumer left pending this long are taken over. @default 30000 */
  claimIdleMs?: number;
  /** How often to look for such entries. @default 5000 */
  claimIntervalMs?: number;
  /** Errors of the loop (it keeps going, with backoff). */
  onError?: (err: unknown) => void;
}

/** Event data kept with a notification when its JSON is at most this long; else only `url`. */
const MAX_STORED_DATA = 4096;
const MAX_ERROR_BACKOFF_MS = 5000;
const USERS_PER_QUERY = 100;
const ANNOUNCE_CONCURRENCY = 16;

function storedData(data: Record<string, unknown>, dataJson: string): Record<string, unknown> {
  if (dataJson.length <= MAX_STORED_DATA) return data;
  return typeof data.url === 'string' ? { url: data.url } : {};
}

export class Notifier {
  readonly consumer: string;
  private readonly o: NotifierOptions;
  private readonly now: () => number;
  private running: Promise<void> | null = null;
  private stopping = false;
  private readonly abort = new AbortController();

  constructor(options: NotifierOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    this.consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  }

  /** Create the group (new deployments start at the log's end) and start the loop. */
  async start(): Promise<void> {
    if (this.running) return;
    await this.o.engine.ensureGroup(NOTIFIER_GROUP, 'latest');
    this.running = this.loop();
  }

  /** Finish the batch in hand and stop; resolves within about `blockMs`. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    await this.running;
    this.running = null;
  }

  private async loop(): Promise<void> {
    const { engine } = this.o;
    const count = this.o.batchSize ?? 100;
    const blockMs = this.o.blockMs ?? 1000;
    const claimIdleMs = this.o.claimIdleMs ?? 30_000;
    const claimIntervalMs = this.o.claimIntervalMs ?? 5000;
    let lastClaim = 0;
    let failures = 0;
    while (!this.stopping) {
      try {
        let entries: GroupEntry[] = [];
        if (Date.now() - lastClaim >= claimIntervalMs) {
          lastClaim = Date.now();
          entries = await engine.claimStale(NOTIFIER_GROUP, this.consumer, { minIdleMs: claimIdleMs, count });
        }
        if (entries.length === 0) entries = await engine.readGroup(NOTIFIER_GROUP, this.consumer, { count, blockMs });
        if (entries.length > 0) await this.ack(await this.process(entries));
        failures = 0;
      } catch (err) {
        if (this.stopping) break;
        this.o.onError?.(err);
        failures++;
        const delay = Math.min(MAX_ERROR_BACKOFF_MS, 100 * 2 ** Math.min(failures, 6));
        await sleep(delay, undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
  }

  /** Acknowledge handled entries. */
  async ack(entries: readonly GroupEntry[]): Promise<void> {
    if (entries.length > 0) await this.o.engine.ack(NOTIFIER_GROUP, entries);
  }

  /**
   * Handle entries without acknowledging them; resolves with those handled (an entry
   * that failed stays pending, to be claimed again).
   */
  async process(entries: readonly GroupEntry[]): Promise<GroupEntry[]> {
    const done: GroupEntry[] = [];
    for (const entry of entries) {
      try {
        await this.handle(entry.event);
        done.push(entry);
      } catch (err) {
        this.o.onError?.(err);
      }
    }
    return done;
  }

  /** Everything one event causes. */
  async handle(event: LogEvent): Promise<void> {
    const rule = matchRule(this.o.settings.rules, event);
    if (!rule) return;
    const recipients = await recipientsOf(rule, event, this.o.stores.rooms);
    if (recipients.size === 0) return;
    const users = await this.offline(event, [...recipients.keys()]);
    if (users.length === 0) return;

    const now = this.now();
    const data = eventData(event);
    const prefs = await this.o.stores.preferences.getMany(event.tenant, users);
    const planned: Array<{ userId: string; plan: DeliveryPlan; reason: Reason; prefs: NotificationPreferences }> = [];
    const records: NewNotification[] = [];
    for (const userId of users) {
      const reason = recipients.get(userId)!;
      const category = reason === 'mention' ? 'mention' : (rule.category ?? namespaceOf(event.channel));
      const p = prefs.get(userId)!;
      const plan = planDelivery(p, { category, event: event.event, priority: event.priority, defaultQuietHours: this.o.settings.default_quiet_hours, now });
      if (!plan.notify) continue;
      planned.push({ userId, plan, reason, prefs: p });
      records.push({
        tenant: event.tenant,
        userId,
        channel: event.channel,
        event: event.event,
        eventId: event.id,
        category,
        priority: event.priority,
        ...describe(event, data, reason),
        data: storedData(data, event.dataJson),
        createdAt: new Date(now),
      });
    }
    if (records.length === 0) return;
    const { notifications, created } = await this.o.stores.notifications.record(records);
    const byUser = new Map(notifications.map((n) => [n.userId, n]));
    await this.announce(event.tenant, notifications, created);
    await this.enqueue(event, planned.map((p) => ({ ...p, notification: byUser.get(p.userId)! })).filter((p) => p.notification), created, now);
  }

  /** The users who are offline; everyone for `emergency` events. */
  private async offline(event: LogEvent, users: string[]): Promise<string[]> {
    if (event.priority === 'emergency') return users;
    const out: string[] = [];
    for (let i = 0; i < users.length; i += USERS_PER_QUERY) {
      const presence = await this.o.engine.usersGet(event.tenant, users.slice(i, i + USERS_PER_QUERY));
      for (const u of presence) if (!u.online) out.push(u.id);
    }
    return out;
  }

  /** `notification.created` on each recipient's `user:<id>`, once per notification (idempotency key). */
  private async announce(tenant: string, notifications: readonly Notification[], created: ReadonlySet<string>): Promise<void> {
    const one = async (n: Notification) => {
      const channel = `user:${n.userId}`;
      if (!isValidChannel(channel)) return;
      const unread = await this.o.stores.notifications.unreadCount(tenant, n.userId);
      await this.o.engine.publish({
        tenant,
        channel,
        event: NOTIFICATION_CREATED,
        dataJson: JSON.stringify({ ...notificationJson(n), unread }),
        priority: n.priority,
        publisher: null,
        idempotencyKey: `notification:${n.id}`,
      });
      if (created.has(n.id)) this.o.metrics?.sent.inc({ channel: 'in_app' });
    };
    // A room's members: a few at a time, not one round trip after another.
    for (let i = 0; i < notifications.length; i += ANNOUNCE_CONCURRENCY) {
      await Promise.all(notifications.slice(i, i + ANNOUNCE_CONCURRENCY).map(one));
    }
  }

  private async enqueue(
    event: LogEvent,
    planned: ReadonlyArray<{ userId: string; plan: DeliveryPlan; prefs: NotificationPreferences; notification: Notification }>,
    created: ReadonlySet<string>,
    now: number,
  ): Promise<void> {
    const { targets, notifications } = this.o.stores;
    const { senders } = this.o;
    const users = planned.map((p) => p.userId);
    // Device types per user, of the targets each has.
    const webPushTypes = new Map<string, Set<string>>();
    const fcmTypes = new Map<string, Set<string>>();
    const add = (map: Map<string, Set<string>>, userId: string, type: string) => {
      const set = map.get(userId) ?? new Set<string>();
      set.add(type);
      map.set(userId, set);
    };
    if (senders.webpush) for (const s of await targets.webPushFor(event.tenant, users, new Date(now))) add(webPushTypes, s.userId, s.deviceType);
    if (senders.fcm) for (const d of await targets.devicesFor(event.tenant, users)) add(fcmTypes, d.userId, d.platform);
    const reachable = (map: Map<string, Set<string>>, userId: string, off: ReadonlySet<string>) => [...(map.get(userId) ?? [])].some((t) => !off.has(t));
    const jobs: Array<{ name: DeliveryKind; data: DeliveryJobData; opts: { jobId: string; delay?: number } }> = [];
    const states: DeliveryUpdate[] = [];
    for (const { userId, plan, prefs, notification } of planned) {
      const allowed = new Set(plan.channels);
      const off = new Set(plan.excludedDevices);
      const hasWebPush = allowed.has('webpush') && reachable(webPushTypes, userId, off);
      const hasFcm = allowed.has('fcm') && reachable(fcmTypes, userId, off);
      const emailOk = senders.email && allowed.has('email') && prefs.email !== null;
      const kinds: DeliveryKind[] = [];
      if (hasWebPush) kinds.push('webpush');
      if (hasFcm) kinds.push('fcm');
      if (kinds.length === 0 && emailOk) kinds.push('email');
      const key = deliveryKey(event.tenant, event.channel, event.id, userId);
      if (plan.held) {
        // Do-not-disturb: record what was held back; the digest still lists it.
        states.push({ tenant: event.tenant, notificationId: notification.id, channel: 'push', state: 'suppressed', error: 'do not disturb' });
        continue;
      }
      const delay = plan.delayUntil !== null ? Math.max(0, plan.delayUntil - now) : 0;
      for (const kind of kinds) {
        const jobId = jobIdOf(kind, key);
        states.push({ tenant: event.tenant, notificationId: notification.id, channel: kind, state: delay > 0 ? 'delayed' : 'queued', jobId });
        jobs.push({
          name: kind,
          data: {
            kind,
            tenant: event.tenant,
            userId,
            notificationId: notification.id,
            key,
            fallback: kind !== 'email' && emailOk,
            excludedDevices: plan.excludedDevices,
            done: [],
          },
          opts: delay > 0 ? { jobId, delay } : { jobId },
        });
      }
    }
    // States first: a job that runs at once then finds its row, and never has its
    // `sent` overwritten by a late `queued`.
    await notifications.initDeliveries(states);
    if (jobs.length > 0) await this.o.queue.addBulk(jobs);
    for (const j of jobs) if (created.has(j.data.notificationId)) this.o.metrics?.queued.inc({ channel: j.name });
  }
}
