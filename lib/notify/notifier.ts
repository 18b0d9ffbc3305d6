/**
 * The notifier: the `notifier` consumer group on the shard logs (ARCHITECTURE §2,
 * §6). For each event it decides who is told (the namespace rules), applies each
 * recipient's preferences, stores the in-app notification, announces it on
 * `user:<id>` (`notification.created`), queues the deliveries (push and email; none
 * for users who are online, unless the event is `emergency`), and only then
 * acknowledges the log entry, one entry at a time.
 *
 * Delivery is at least once: an entry left pending by a notifier that died is
 * claimed by another after `claimIdleMs`, and handled again. While a batch is in
 * hand its entries are kept from looking idle, so a slow batch is not claimed by
 * another notifier meanwhile. Everything it does is idempotent per (event,
 * recipient): the notification id and the job ids derive from the tenant, channel,
 * event id and user, and the announcement carries an idempotency key, so handling an
 * entry twice stores, announces and sends once. An entry delivered `maxDeliveries`
 * times without being handled is acknowledged and becomes a dead letter (a failed
 * `notifier` job that `streamgate notifications retry` handles again).
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
import { MemoryNotifierGroup, type NotifierGroupOps } from './notifier-group.js';
import { deliveryKey, jobIdOf, notifierJobId, type DeliveryJobData, type DeliveryKind, type NotifierJobData, type NotifyQueue } from './queue.js';
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
  /**
   * Deliveries of one entry (reads and claims) before the notifier gives up on it:
   * acknowledges it and records a dead letter. @default 5
   */
  maxDeliveries?: number;
  /** Delivery counts, idle refresh and consumer cleanup; in-process counting when absent. */
  group?: NotifierGroupOps;
  /** On start, consumers idle this long with nothing pending are removed from the group. @default 600000 */
  idleConsumerMs?: number;
  /** Errors of the loop (it keeps going, with backoff). */
  onError?: (err: unknown) => void;
}

/** Event data kept with a notification when its JSON is at most this long; else only `url`. */
const MAX_STORED_DATA = 4096;
const MAX_ERROR_BACKOFF_MS = 5000;
const USERS_PER_QUERY = 100;
const ANNOUNCE_CONCURRENCY = 16;
export const DEFAULT_MAX_DELIVERIES = 5;
export const DEFAULT_IDLE_CONSUMER_MS = 10 * 60 * 1000;

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** A recipient whose notification is stored, and whether deliveries may go out. */
interface Planned {
  userId: string;
  plan: DeliveryPlan;
  reason: Reason;
  prefs: NotificationPreferences;
  /** Online (and the event is not an emergency): in-app only. */
  online: boolean;
}

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
  private readonly group: NotifierGroupOps;

  constructor(options: NotifierOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
    this.consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.group = options.group ?? new MemoryNotifierGroup();
  }

  /**
   * Create the group (new deployments start at the log's end), remove the consumers
   * of workers that are gone (idle, nothing pending), and start the loop.
   */
  async start(): Promise<void> {
    if (this.running) return;
    await this.o.engine.ensureGroup(NOTIFIER_GROUP, 'latest');
    try {
      await this.group.removeIdleConsumers(this.consumer, this.o.idleConsumerMs ?? DEFAULT_IDLE_CONSUMER_MS);
    } catch (err) {
      this.o.onError?.(err);
    }
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
        let claimed = false;
        if (Date.now() - lastClaim >= claimIntervalMs) {
          lastClaim = Date.now();
          entries = await engine.claimStale(NOTIFIER_GROUP, this.consumer, { minIdleMs: claimIdleMs, count });
          claimed = entries.length > 0;
        }
        if (entries.length === 0) entries = await engine.readGroup(NOTIFIER_GROUP, this.consumer, { count, blockMs });
        if (entries.length > 0) await this.consume(entries, claimed, claimIdleMs);
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
    if (entries.length === 0) return;
    await this.o.engine.ack(NOTIFIER_GROUP, entries);
    this.group.forget?.(entries);
  }

  /**
   * Handle a batch, acknowledging each entry as soon as it is handled. An entry that
   * failed stays pending, to be claimed again, until it was delivered
   * `maxDeliveries` times: then it is acknowledged and recorded as a dead letter.
   * Meanwhile the entries not yet handled are kept from looking idle.
   */
  private async consume(entries: readonly GroupEntry[], claimed: boolean, claimIdleMs: number): Promise<void> {
    const max = Math.max(1, this.o.maxDeliveries ?? DEFAULT_MAX_DELIVERIES);
    if (claimed) this.group.claimed?.(entries);
    const counts = claimed ? await this.group.deliveries(entries) : entries.map(() => 1);
    let next = 0;
    let touching: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      const rest = entries.slice(next);
      if (rest.length > 0) touching = this.group.touch(this.consumer, rest).catch((err: unknown) => this.o.onError?.(err));
    }, Math.max(20, Math.floor(claimIdleMs / 3)));
    timer.unref();
    try {
      for (; next < entries.length; next++) {
        const entry = entries[next]!;
        const deliveries = counts[next] ?? 1;
        try {
          if (deliveries > max) {
            // Delivered past the limit without an outcome: the workers handling it died or stalled.
            await this.deadLetter(entry, deliveries, 'no worker finished handling it (each died or stalled)');
          } else {
            await this.handle(entry.event);
          }
          await this.ack([entry]);
        } catch (err) {
          this.o.onError?.(err);
          if (deliveries < max) continue;
          try {
            await this.deadLetter(entry, deliveries, errorText(err));
            await this.ack([entry]);
          } catch (e) {
            this.o.onError?.(e);
          }
        }
      }
    } finally {
      clearInterval(timer);
      await touching;
    }
  }

  /** Record a log entry the notifier gives up on: a failed `notifier` job in the dead-letter list. */
  private async deadLetter(entry: GroupEntry, deliveries: number, reason: string): Promise<void> {
    const { event } = entry;
    const data: NotifierJobData = { kind: 'notifier', tenant: event.tenant, event, reason, deliveries, stage: 'dead' };
    await this.o.queue.add('notifier', data, { jobId: notifierJobId(event.tenant, event.channel, event.id), attempts: 1 });
    this.o.onError?.(new Error(`gave up on ${event.tenant} ${event.channel} ${event.id} after ${deliveries} deliveries: ${reason}`));
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
    const users = [...recipients.keys()];
    const online = await this.online(event, users);

    const now = this.now();
    const data = eventData(event);
    const prefs = await this.o.stores.preferences.getMany(event.tenant, users);
    const planned: Planned[] = [];
    const records: NewNotification[] = [];
    for (const userId of users) {
      const reason = recipients.get(userId)!;
      const category = reason === 'mention' ? 'mention' : (rule.category ?? namespaceOf(event.channel));
      const p = prefs.get(userId)!;
      const plan = planDelivery(p, { category, event: event.event, priority: event.priority, defaultQuietHours: this.o.settings.default_quiet_hours, now });
      if (!plan.notify) continue;
      planned.push({ userId, plan, reason, prefs: p, online: online.has(userId) });
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

  /** The users who are online, and so get no push or email; nobody for `emergency` events. */
  private async online(event: LogEvent, users: string[]): Promise<Set<string>> {
    const out = new Set<string>();
    if (event.priority === 'emergency') return out;
    for (let i = 0; i < users.length; i += USERS_PER_QUERY) {
      const presence = await this.o.engine.usersGet(event.tenant, users.slice(i, i + USERS_PER_QUERY));
      for (const u of presence) if (u.online) out.add(u.id);
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
    planned: ReadonlyArray<Planned & { notification: Notification }>,
    created: ReadonlySet<string>,
    now: number,
  ): Promise<void> {
    const { targets, notifications } = this.o.stores;
    const { senders } = this.o;
    const users = planned.filter((p) => !p.online && !p.plan.held).map((p) => p.userId);
    // Device types per user, of the enabled targets each has (a disabled target counts as none).
    const webPushTypes = new Map<string, Set<string>>();
    const fcmTypes = new Map<string, Set<string>>();
    const add = (map: Map<string, Set<string>>, userId: string, type: string) => {
      const set = map.get(userId) ?? new Set<string>();
      set.add(type);
      map.set(userId, set);
    };
    if (senders.webpush) for (const s of await targets.webPushFor(event.tenant, users, new Date(now))) if (s.enabled) add(webPushTypes, s.userId, s.deviceType);
    if (senders.fcm) for (const d of await targets.devicesFor(event.tenant, users)) if (d.enabled) add(fcmTypes, d.userId, d.platform);
    const reachable = (map: Map<string, Set<string>>, userId: string, off: ReadonlySet<string>) => [...(map.get(userId) ?? [])].some((t) => !off.has(t));
    const jobs: Array<{ name: DeliveryKind; data: DeliveryJobData; opts: { jobId: string; delay?: number } }> = [];
    const states: DeliveryUpdate[] = [];
    for (const { userId, plan, prefs, notification, online } of planned) {
      if (online) {
        // Online: the in-app notification (stored and announced) is all they get.
        states.push({ tenant: event.tenant, notificationId: notification.id, channel: 'push', state: 'suppressed', error: 'user online' });
        continue;
      }
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
        // Do-not-disturb: no push, no email; the notification stays in the history and the digest.
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
