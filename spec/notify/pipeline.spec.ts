/**
 * The notification pipeline end to end, against real Redis (unique prefix), real
 * BullMQ and a real SQLite database: events published to the log come out of the
 * loopback stand-ins of a web push service, FCM and an SMTP server.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import type { NotificationCredentials, VapidCredentials } from '../../lib/config/notifications.js';
import type { PublishRequest } from '../../lib/engine/engine.js';
import { EngineKeys } from '../../lib/engine/keys.js';
import { listFailed, retryFailed } from '../../lib/notify/dead-letters.js';
import { Notifier, NOTIFIER_GROUP, NOTIFICATION_CREATED, type NotifierOptions } from '../../lib/notify/notifier.js';
import { RedisNotifierGroup } from '../../lib/notify/notifier-group.js';
import { MAX_PUSH_PAYLOAD_BYTES } from '../../lib/notify/push-payload.js';
import { bullPrefix, createQueue } from '../../lib/notify/queue.js';
import { PRUNE_SCHEDULER_ID } from '../../lib/notify/retention.js';
import type { RoomMembers } from '../../lib/notify/rules.js';
import { generateVapidKeys } from '../../lib/notify/vapid.js';
import { runWorker, type RunningWorker, type WorkerDeps } from '../../lib/notify/worker.js';
import type { Priority } from '../../lib/protocol/frames.js';
import { notificationJson } from '../../lib/store/notifications.js';
import { databases, type TestDatabase } from '../support/databases.js';
import { FakeFcm } from '../support/fcm-server.js';
import { eventually, openNotifyEnv, SHARDS, type NotifyEnv } from '../support/notify.js';
import { FakePushService, type TestSubscription } from '../support/push-service.js';
import { SmtpSink } from '../support/smtp-sink.js';
import { testPki } from '../support/test-ca.js';

const TENANT = 'acme';
const sqlite = databases.find((d) => d.name === 'sqlite') ?? databases[0]!;

describe('notification pipeline', function () {
  this.timeout(20_000);
  let db: TestDatabase;
  let env: NotifyEnv;
  let push: FakePushService;
  let fcm: FakeFcm;
  let smtp: SmtpSink;
  let vapid: VapidCredentials;
  let worker: RunningWorker | null;
  let registry: Registry;
  /** The notifier's clock; null: the real one. */
  let clock: number | null;
  /** The worker log. */
  let logs: string[];
  /** More workers a test started, closed after it. */
  let others: RunningWorker[];

  before(async () => {
    const pki = testPki();
    [push, fcm, smtp] = await Promise.all([FakePushService.start(pki), FakeFcm.start(pki), SmtpSink.start()]);
    vapid = { ...generateVapidKeys(), subject: 'mailto:ops@example.com' };
  });

  after(async () => {
    await Promise.all([push.close(), fcm.close(), smtp.close()]);
  });

  beforeEach(async () => {
    db = await sqlite.open();
    env = await openNotifyEnv(db);
    worker = null;
    registry = new Registry();
    clock = null;
    logs = [];
    others = [];
  });

  afterEach(async () => {
    try {
      for (const w of others) await w.close();
      await worker?.close();
    } finally {
      await env.close();
      await db.cleanup();
    }
  });

  interface StartOptions {
    /** The worker's own web push agent (the address check) instead of the test's, which trusts loopback. */
    guarded?: boolean;
    credentials?: Partial<NotificationCredentials>;
    rooms?: RoomMembers;
    notifier?: WorkerDeps['notifier'];
    registry?: Registry;
  }

  function workerDeps(override: unknown = {}, o: StartOptions = {}): WorkerDeps {
    return {
      config: env.config({ retry: { attempts: 2, backoff_ms: 50 }, ...(override as object) }, { vapid, smtpUrl: smtp.url, ...o.credentials }),
      engine: env.engine,
      store: { knex: env.knex, rooms: o.rooms ?? env.rooms },
      registry: o.registry ?? registry,
      now: () => clock ?? Date.now(),
      transports: {
        ...(o.guarded ? {} : { webPushAgent: push.agent() }),
        fcm: { credential: fcm.credential(), projectId: fcm.projectId, httpAgent: fcm.httpAgent(), legacyHttpTransport: true },
      },
      notifier: { blockMs: 100, claimIdleMs: 300, claimIntervalMs: 100, ...o.notifier },
      closeTimeoutMs: 2000,
      log: (line) => logs.push(line),
    };
  }

  async function start(override: unknown = {}, o: StartOptions = {}): Promise<RunningWorker> {
    worker = await runWorker(workerDeps(override, o));
    return worker;
  }

  const publish = (channel: string, event: string, data: Record<string, unknown>, extra: Partial<PublishRequest> = {}) =>
    env.engine.publish({ tenant: TENANT, channel, event, dataJson: JSON.stringify(data), priority: 'normal', publisher: null, ...extra });

  async function subscribe(userId: string): Promise<TestSubscription> {
    const sub = push.subscribe();
    await env.stores.targets.addWebPush(TENANT, userId, { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth });
    return sub;
  }

  const pushesTo = (sub: TestSubscription) => push.received.filter((r) => r.subscriptionId === sub.id);
  const mailsTo = (address: string) => smtp.messages.filter((m) => m.to.includes(address));
  const counter = async (name: string, channel: string): Promise<number> => {
    const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
    return (metric?.values.find((v) => v.labels.channel === channel)?.value as number | undefined) ?? 0;
  };

  /** Waits until BullMQ has nothing waiting, active or delayed (but the schedulers' next runs). */
  async function settled(w: RunningWorker): Promise<void> {
    await eventually(async () => {
      const c = await w.queue.getJobCounts('waiting', 'active', 'prioritized');
      const delayed = (await w.queue.getDelayed()).filter((j) => j.name !== 'digest-run' && j.name !== 'prune');
      return Object.values(c).every((n) => n === 0) && delayed.length === 0;
    }, 'an idle queue');
  }

  it('turns an event into a stored notification, a notification.created event and a web push', async () => {
    const sub = await subscribe('ann');
    await start();
    const published = await publish('user:ann', 'invoice.paid', { title: 'Invoice paid', body: '€12 from Bob', url: '/invoices/7' });

    const [received] = await eventually(() => (pushesTo(sub).length ? pushesTo(sub) : undefined), 'the push');
    const payload = JSON.parse(received!.payload) as Record<string, unknown>;
    expect(payload).to.include({ title: 'Invoice paid', body: '€12 from Bob', channel: 'user:ann', event: 'invoice.paid', event_id: published.id, url: '/invoices/7', unread: 1 });
    expect(received!.vapid.sub).to.equal('mailto:ops@example.com');
    expect(received!.vapid.publicKey).to.equal(vapid.publicKey);

    const n = await eventually(async () => {
      const [first] = (await env.stores.notifications.list(TENANT, 'ann')).notifications;
      return first?.delivery.webpush?.state === 'sent' ? first : undefined;
    }, 'the delivery state');
    expect(n).to.include({ id: payload.id, title: 'Invoice paid', category: 'user', readAt: null });

    const history = await env.engine.history(TENANT, 'user:ann', { limit: 10 });
    const announced = history.events.filter((e) => e.event === NOTIFICATION_CREATED);
    expect(announced).to.have.length(1);
    expect(JSON.parse(announced[0]!.dataJson)).to.include({ id: n.id, title: 'Invoice paid', unread: 1 });

    expect(await counter('streamgate_notifications_queued_total', 'webpush')).to.equal(1);
    expect(await counter('streamgate_notifications_sent_total', 'webpush')).to.equal(1);
    expect(await counter('streamgate_notifications_sent_total', 'in_app')).to.equal(1);
  });

  it('sends exactly once when notifiers die mid-batch and another claims their entries', async () => {
    const sub = await subscribe('ann');
    await env.engine.ensureGroup(NOTIFIER_GROUP, 'latest');
    const ids: string[] = [];
    for (let i = 1; i <= 2; i++) ids.push((await publish('user:ann', 'ping', { title: `ping ${i}` })).id);
    // One notifier reads and dies before doing anything.
    expect(await env.engine.readGroup(NOTIFIER_GROUP, 'dead-reader', { count: 10 })).to.have.length(2);
    for (let i = 3; i <= 4; i++) ids.push((await publish('user:ann', 'ping', { title: `ping ${i}` })).id);
    // Another handles its entries (stores, announces, queues) and dies before acknowledging.
    const queue = createQueue({ redisUrl: env.redisUrl, prefix: bullPrefix(env.prefix) }, { attempts: 2, backoff_ms: 50 });
    const dying = new Notifier({
      engine: env.engine,
      stores: env.stores,
      settings: env.config().notifications,
      queue,
      senders: { webpush: true, fcm: false, email: false },
      consumer: 'dead-worker',
    });
    const entries = await env.engine.readGroup(NOTIFIER_GROUP, 'dead-worker', { count: 10 });
    expect(entries).to.have.length(2);
    expect(await dying.process(entries)).to.have.length(2);
    await queue.close();

    const w = await start();
    await eventually(() => pushesTo(sub).length >= 4, 'four pushes');
    await settled(w);
    // Everything claimed was acknowledged: nothing is left pending for anyone.
    await eventually(async () => (await env.engine.claimStale(NOTIFIER_GROUP, 'probe', { minIdleMs: 0 })).length === 0, 'no pending entries');
    const titles = pushesTo(sub).map((r) => (JSON.parse(r.payload) as { title: string }).title).sort();
    expect(titles).to.deep.equal(['ping 1', 'ping 2', 'ping 3', 'ping 4']);
    const eventIds = pushesTo(sub).map((r) => (JSON.parse(r.payload) as { event_id: string }).event_id).sort();
    expect(eventIds).to.deep.equal([...ids].sort());
    const announced = (await env.engine.history(TENANT, 'user:ann', { limit: 50 })).events.filter((e) => e.event === NOTIFICATION_CREATED);
    expect(announced).to.have.length(4);
    expect((await env.stores.notifications.list(TENANT, 'ann')).notifications).to.have.length(4);
  });

  it('stores and announces for users who are online, but sends them no push or email unless the event is an emergency', async () => {
    const sub = await subscribe('ann');
    await env.stores.preferences.update(TENANT, 'ann', { email: 'ann-online@example.com' });
    await env.engine.connectionsTouch([{ tenant: TENANT, connectionId: 'c1', userId: 'ann' }], 60_000);
    await start();
    await publish('user:ann', 'chat.message', { title: 'while online' });
    await publish('user:ann', 'alarm', { title: 'fire' }, { priority: 'emergency' });
    await eventually(() => pushesTo(sub).length >= 1, 'the emergency push');
    await settled(worker!);
    expect(pushesTo(sub).map((r) => (JSON.parse(r.payload) as { title: string }).title)).to.deep.equal(['fire']);
    expect(pushesTo(sub)[0]!.urgency).to.equal('high');
    expect(mailsTo('ann-online@example.com')).to.have.length(0);
    // Both are in the history and the badge, and both were announced on user:ann.
    const stored = (await env.stores.notifications.list(TENANT, 'ann')).notifications;
    expect(stored.map((n) => n.title).sort()).to.deep.equal(['fire', 'while online']);
    const online = stored.find((n) => n.title === 'while online')!;
    expect(online.delivery.push).to.include({ state: 'suppressed', error: 'user online' });
    expect(online.delivery.webpush).to.equal(undefined);
    expect(await env.stores.notifications.unreadCount(TENANT, 'ann')).to.equal(2);
    const announced = (await env.engine.history(TENANT, 'user:ann', { limit: 10 })).events.filter((e) => e.event === NOTIFICATION_CREATED);
    expect(announced.map((e) => (JSON.parse(e.dataJson) as { title: string }).title)).to.deep.equal(['while online', 'fire']);
    expect(await counter('streamgate_notifications_sent_total', 'in_app')).to.equal(2);
  });

  it('tells room members and mentioned members, never the publisher, by email when they have no push target', async () => {
    const room = await env.rooms.create(TENANT, { name: 'Design' }, 'ann');
    await env.rooms.addMember(TENANT, room.id, 'bob', 'member', 'ann');
    await env.rooms.addMember(TENANT, room.id, 'cat', 'member', 'ann');
    for (const u of ['ann', 'bob', 'cat', 'dave']) await env.stores.preferences.update(TENANT, u, { email: `${u}@example.com` });
    await start();
    await publish(`room:${room.id}`, 'message.created', { text: 'hi @bob and @dave' }, { publisher: { id: 'ann', name: 'Ann' } });
    await eventually(() => mailsTo('bob@example.com').length + mailsTo('cat@example.com').length === 2, 'two emails');
    await settled(worker!);
    expect(mailsTo('ann@example.com')).to.have.length(0);
    expect(mailsTo('dave@example.com')).to.have.length(0);
    const [toBob] = mailsTo('bob@example.com');
    const [toCat] = mailsTo('cat@example.com');
    expect(toBob!.subject).to.equal(`Ann mentioned you in room:${room.id}`);
    expect(toBob!.text).to.include('hi @bob and @dave');
    expect(toBob!.html).to.include('hi @bob and @dave');
    expect(toCat!.subject).to.equal(`message.created in room:${room.id} from Ann`);
    const [bobs] = (await env.stores.notifications.list(TENANT, 'bob')).notifications;
    expect(bobs).to.include({ category: 'mention' });
    expect(bobs!.delivery.email?.state).to.equal('sent');
    expect((await env.stores.notifications.list(TENANT, 'cat')).notifications[0]).to.include({ category: 'room' });
  });

  it('delays deliveries in quiet hours until they end in the user\'s time zone, without dropping them', async () => {
    const sub = await subscribe('bob');
    await env.stores.preferences.update(TENANT, 'bob', { quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' } });
    // 22:30 in Paris (UTC+1 in January): quiet until 07:00, 8 h 30 min later.
    clock = Date.parse('2026-01-15T21:30:00Z');
    await start();
    await publish('user:bob', 'report.ready', { title: 'Report ready' });
    const job = await eventually(async () => (await worker!.queue.getDelayed()).find((j) => j.name === 'webpush'), 'a delayed job');
    expect(job.id).to.match(/^webpush\|acme\|user%3Abob\|\d+-\d+\|bob$/);
    expect(job.opts.delay).to.equal(8.5 * 3600 * 1000);
    const [n] = (await env.stores.notifications.list(TENANT, 'bob')).notifications;
    expect(n!.delivery.webpush?.state).to.equal('delayed');
    expect(pushesTo(sub)).to.have.length(0);
    // When the quiet hours end, BullMQ runs it.
    await job.promote();
    await eventually(() => pushesTo(sub).length === 1, 'the delayed push');
  });

  it('holds pushes back during do-not-disturb; emergencies go through it and quiet hours', async () => {
    const sub = await subscribe('bob');
    clock = Date.parse('2026-01-15T23:00:00Z');
    await env.stores.preferences.update(TENANT, 'bob', {
      dndUntil: new Date(clock + 3600_000),
      quietHours: { start: '22:00', end: '07:00', timeZone: 'UTC' },
    });
    await start();
    await publish('user:bob', 'digest.item', { title: 'not now' });
    await publish('user:bob', 'server.down', { title: 'now' }, { priority: 'emergency' });
    await eventually(() => pushesTo(sub).length === 1, 'the emergency push');
    await settled(worker!);
    expect(pushesTo(sub).map((r) => (JSON.parse(r.payload) as { title: string }).title)).to.deep.equal(['now']);
    const stored = (await env.stores.notifications.list(TENANT, 'bob')).notifications;
    expect(stored.map((n) => n.title).sort()).to.deep.equal(['not now', 'now']);
    expect(stored.find((n) => n.title === 'not now')!.delivery.push?.state).to.equal('suppressed');
  });

  it('applies preferences: off altogether, a category off, a channel off, a device type off', async () => {
    const subs = { off: await subscribe('off'), cat: await subscribe('cat'), chan: await subscribe('chan'), dev: await subscribe('dev'), on: await subscribe('on') };
    await env.stores.preferences.update(TENANT, 'off', { enabled: false });
    await env.stores.preferences.update(TENANT, 'cat', { categories: { 'invoice.paid': false } });
    await env.stores.preferences.update(TENANT, 'chan', { channels: { webpush: false }, email: 'chan@example.com' });
    await env.stores.preferences.update(TENANT, 'dev', { devices: { web: false }, email: 'dev@example.com' });
    await start();
    for (const u of Object.keys(subs)) await publish(`user:${u}`, 'invoice.paid', { title: `paid ${u}` });
    await eventually(() => pushesTo(subs.on).length === 1, 'the push to "on"');
    await eventually(() => mailsTo('chan@example.com').length + mailsTo('dev@example.com').length === 2, 'the two emails');
    await settled(worker!);
    expect(pushesTo(subs.off)).to.have.length(0);
    expect(pushesTo(subs.cat)).to.have.length(0);
    expect(pushesTo(subs.chan)).to.have.length(0);
    expect(pushesTo(subs.dev)).to.have.length(0);
    expect(mailsTo('chan@example.com').map((m) => m.subject)).to.deep.equal(['paid chan']);
    expect(mailsTo('dev@example.com').map((m) => m.subject)).to.deep.equal(['paid dev']);
    expect((await env.stores.notifications.list(TENANT, 'off')).notifications).to.have.length(0);
    expect((await env.stores.notifications.list(TENANT, 'cat')).notifications).to.have.length(0);
    expect((await env.stores.notifications.list(TENANT, 'chan')).notifications).to.have.length(1);
  });

  it('deletes a subscription its push service answers 404 (expired)', async () => {
    const sub = await subscribe('eli');
    const kept = await subscribe('eli');
    push.respondWith(sub.id, 404);
    await start();
    await publish('user:eli', 'invoice.paid', { title: 'expired' });
    await eventually(() => pushesTo(kept).length === 1, 'the push to the other subscription');
    await eventually(async () => (await env.stores.targets.webPushFor(TENANT, ['eli'])).length === 1, 'the expired one deleted');
    expect((await env.stores.targets.webPushFor(TENANT, ['eli'])).map((t) => t.endpoint)).to.deep.equal([kept.endpoint]);
  });

  it('deletes a subscription its push service answers 410, and emails instead', async () => {
    const sub = await subscribe('eve');
    push.respondWith(sub.id, 410);
    await env.stores.preferences.update(TENANT, 'eve', { email: 'eve@example.com' });
    await start();
    await publish('user:eve', 'invoice.paid', { title: 'gone' });
    await eventually(() => mailsTo('eve@example.com').length === 1, 'the fallback email');
    expect(await env.stores.targets.webPushFor(TENANT, ['eve'])).to.deep.equal([]);
    const [n] = (await env.stores.notifications.list(TENANT, 'eve')).notifications;
    expect(n!.delivery.webpush?.state).to.equal('no_target');
    expect(n!.delivery.email?.state).to.equal('sent');
  });

  it('sends to FCM device tokens through firebase-admin and deletes the unregistered one', async () => {
    const good = await env.stores.targets.addDevice(TENANT, 'carl', 'tok-good-1', 'android');
    await env.stores.targets.addDevice(TENANT, 'carl', 'tok-gone-1', 'ios');
    fcm.unregistered.add('tok-gone-1');
    await start();
    const e = await publish('user:carl', 'ride.arrived', { title: 'Your ride is here', body: 'Blue car' }, { priority: 'high' });
    const msg = await eventually(() => fcm.received.find((m) => m.token === 'tok-good-1'), 'the FCM message');
    expect(msg.notification).to.deep.equal({ title: 'Your ride is here', body: 'Blue car' });
    expect(msg.data).to.include({ channel: 'user:carl', event: 'ride.arrived', event_id: e.id, priority: 'high' });
    expect(msg.android).to.deep.equal({ priority: 'high' });
    await eventually(async () => (await env.stores.targets.devicesFor(TENANT, ['carl'])).length === 1, 'the unregistered token deleted');
    expect((await env.stores.targets.devicesFor(TENANT, ['carl'])).map((d) => d.id)).to.deep.equal([good.id]);
    const n = await eventually(async () => {
      const [first] = (await env.stores.notifications.list(TENANT, 'carl')).notifications;
      return first?.delivery.fcm?.state === 'sent' ? first : undefined;
    }, 'fcm sent');
    expect(n.delivery.fcm?.state).to.equal('sent');
  });

  it('skips a muted phone while the user\'s other phone gets the push', async () => {
    const muted = await env.stores.targets.addDevice(TENANT, 'pia', 'tok-muted-phone', 'android');
    await env.stores.targets.addDevice(TENANT, 'pia', 'tok-live-phone', 'android');
    await env.stores.targets.updateDevice(TENANT, 'pia', muted.id, { enabled: false, label: 'Work phone' });
    await env.stores.preferences.update(TENANT, 'pia', { email: 'pia@example.com' });
    await start();
    const e = await publish('user:pia', 'ride.arrived', { title: 'Your ride is here' });
    const msg = await eventually(() => fcm.received.find((m) => m.token === 'tok-live-phone'), 'the push to the other phone');
    expect(msg.data).to.include({ event_id: e.id });
    const n = await eventually(async () => {
      const [first] = (await env.stores.notifications.list(TENANT, 'pia')).notifications;
      return first?.delivery.fcm?.state === 'sent' ? first : undefined;
    }, 'fcm sent');
    await settled(worker!);
    expect(fcm.received.filter((m) => m.token === 'tok-muted-phone')).to.have.length(0);
    // Reached a phone: no email.
    expect(n.delivery.email).to.equal(undefined);
    expect(mailsTo('pia@example.com')).to.have.length(0);
    // Still registered (muted, not deleted).
    // Two registrations in one millisecond list in either order.
    expect((await env.stores.targets.devicesFor(TENANT, ['pia'])).map((d) => [d.token, d.enabled])).to.have.deep.members([
      ['tok-muted-phone', false],
      ['tok-live-phone', true],
    ]);
  });

  it('emails a user whose every push target is muted, as when the device type is off', async () => {
    const phone = await env.stores.targets.addDevice(TENANT, 'quin', 'tok-quin', 'ios');
    const sub = await subscribe('quin');
    const [browser] = await env.stores.targets.webPushFor(TENANT, ['quin']);
    await env.stores.targets.updateDevice(TENANT, 'quin', phone.id, { enabled: false });
    await env.stores.targets.updateWebPush(TENANT, 'quin', browser!.id, { enabled: false });
    await env.stores.preferences.update(TENANT, 'quin', { email: 'quin@example.com' });
    await start();
    await publish('user:quin', 'invoice.paid', { title: 'muted everywhere' });
    await eventually(() => mailsTo('quin@example.com').length === 1, 'the email');
    await settled(worker!);
    expect(pushesTo(sub)).to.have.length(0);
    expect(fcm.received.filter((m) => m.token === 'tok-quin')).to.have.length(0);
    // A target muted after the push was queued is skipped by the sender too, and the email follows.
    await env.stores.targets.updateWebPush(TENANT, 'quin', browser!.id, { enabled: true });
    await env.stores.preferences.update(TENANT, 'quin', { quietHours: { start: '00:00', end: '23:59', timeZone: 'UTC' } });
    clock = Date.parse('2026-01-05T12:00:00Z');
    await publish('user:quin', 'invoice.paid', { title: 'muted later' });
    const delayed = await eventually(async () => {
      const n = (await env.stores.notifications.list(TENANT, 'quin')).notifications.find((x) => x.title === 'muted later');
      return n?.delivery.webpush?.state === 'delayed' ? n : undefined;
    }, 'the delayed push');
    await env.stores.targets.updateWebPush(TENANT, 'quin', browser!.id, { enabled: false });
    const job = (await worker!.queue.getDelayed()).find((j) => j.data.kind === 'webpush' && 'notificationId' in j.data && j.data.notificationId === delayed.id);
    expect(job, 'the delayed webpush job').to.not.equal(undefined);
    await job!.promote();
    await eventually(() => mailsTo('quin@example.com').length === 2, 'the fallback email');
    expect(pushesTo(sub)).to.have.length(0);
    const [after] = (await env.stores.notifications.list(TENANT, 'quin')).notifications.filter((x) => x.id === delayed.id);
    expect(after!.delivery.webpush).to.include({ state: 'no_target', error: 'no push target' });
  });

  it('deletes an FCM token answered INVALID_ARGUMENT (not a registration token)', async () => {
    const good = await env.stores.targets.addDevice(TENANT, 'cid', 'tok-good-2', 'android');
    await env.stores.targets.addDevice(TENANT, 'cid', 'tok-bad-2', 'android');
    fcm.invalid.add('tok-bad-2');
    await start();
    await publish('user:cid', 'ride.arrived', { title: 'Here' });
    await eventually(() => fcm.received.find((m) => m.token === 'tok-good-2'), 'the FCM message');
    await eventually(async () => (await env.stores.targets.devicesFor(TENANT, ['cid'])).length === 1, 'the invalid token deleted');
    expect((await env.stores.targets.devicesFor(TENANT, ['cid'])).map((d) => d.id)).to.deep.equal([good.id]);
    expect(fcm.received.filter((m) => m.token === 'tok-bad-2')).to.have.length(0);
  });

  it('never posts to an endpoint that resolves to a loopback or private address; emails instead and keeps the subscription', async () => {
    const sub = push.subscribe('localhost');
    await env.stores.targets.addWebPush(TENANT, 'gus', { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth });
    await env.stores.preferences.update(TENANT, 'gus', { email: 'gus@example.com' });
    // The worker's own agent, trusting the test CA: only the address check stands in the way.
    await start({}, { guarded: true, credentials: { extraCa: testPki().ca } });
    await publish('user:gus', 'invoice.paid', { title: 'internal' });
    await eventually(() => mailsTo('gus@example.com').length === 1, 'the fallback email');
    expect(pushesTo(sub)).to.have.length(0);
    const [n] = (await env.stores.notifications.list(TENANT, 'gus')).notifications;
    expect(n!.delivery.webpush).to.include({ state: 'no_target', error: 'the push endpoint is not a public address' });
    expect(await env.stores.targets.webPushFor(TENANT, ['gus'])).to.have.length(1);
  });

  it('posts to loopback endpoints with the NOTIFY_ALLOW_PRIVATE_ENDPOINTS hook', async () => {
    const sub = push.subscribe('localhost');
    await env.stores.targets.addWebPush(TENANT, 'hap', { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth });
    await start({}, { guarded: true, credentials: { extraCa: testPki().ca, allowPrivateEndpoints: true } });
    await publish('user:hap', 'invoice.paid', { title: 'allowed' });
    await eventually(() => pushesTo(sub).length === 1, 'the push');
  });

  it('keeps network error text out of delivery.error, notification.created and the dead letter; the worker log has it', async () => {
    const sub = push.subscribe();
    await env.stores.targets.addWebPush(TENANT, 'ida', { endpoint: 'https://127.0.0.1:1/push/nothing-listens', p256dh: sub.p256dh, auth: sub.auth });
    const w = await start();
    await publish('user:ida', 'invoice.paid', { title: 'unreachable' });
    const [dead] = await eventually(async () => ((await listFailed(w.queue)).failed.length ? (await listFailed(w.queue)).failed : undefined), 'the dead letter');
    expect(dead!.reason).to.equal('the push service could not be reached');
    const [n] = (await env.stores.notifications.list(TENANT, 'ida')).notifications;
    expect(n!.delivery.webpush).to.include({ state: 'failed', attempts: 2, error: 'the push service could not be reached' });
    const exposed = JSON.stringify(notificationJson(n!)) + JSON.stringify((await env.engine.history(TENANT, 'user:ida', { limit: 10 })).events);
    expect(exposed).to.not.match(/ECONNREFUSED|127\.0\.0\.1:1|connect /);
    expect(logs.join('\n')).to.match(/ECONNREFUSED/);
  });

  it('keeps web push payloads under the size limit, in bytes', async () => {
    const sub = await subscribe('jay');
    await start();
    // Stored as 200 + 1000 characters: 600 + 3000 bytes of UTF-8.
    await publish('user:jay', 'note', { title: '見出し'.repeat(300), body: '漢'.repeat(5000), url: 'https://app.example.com/n/1' });
    const [received] = await eventually(() => (pushesTo(sub).length ? pushesTo(sub) : undefined), 'the push');
    expect(Buffer.byteLength(received!.payload)).to.be.at.most(MAX_PUSH_PAYLOAD_BYTES);
    const payload = JSON.parse(received!.payload) as { title: string; body: string; url: string };
    expect(payload.url).to.equal('https://app.example.com/n/1');
    expect(payload.body.endsWith('…')).to.equal(true);
    expect(payload.body.length).to.be.greaterThan(500);
  });

  it('gives up on a log entry that keeps failing: acknowledges it, lists it as a dead letter, and retry handles it', async () => {
    const room = await env.rooms.create(TENANT, { name: 'Poison' }, 'ann');
    await env.rooms.addMember(TENANT, room.id, 'bob', 'member', 'ann');
    const sub = await subscribe('bob');
    let broken = true;
    let calls = 0;
    const rooms: RoomMembers = {
      members: async (tenant, id) => {
        if (id === room.id) {
          calls++;
          if (broken) throw new Error('rooms unavailable');
        }
        return env.rooms.members(tenant, id);
      },
    };
    const w = await start({}, { rooms, notifier: { claimIdleMs: 100, claimIntervalMs: 50, maxDeliveries: 3 } });
    const e = await publish(`room:${room.id}`, 'message.created', { text: 'hello' }, { publisher: { id: 'ann', name: 'Ann' } });
    const { failed } = await eventually(async () => {
      const l = await listFailed(w.queue);
      return l.total === 1 ? l : undefined;
    }, 'the dead letter');
    expect(failed[0]).to.include({ kind: 'notifier', tenant: TENANT, userId: null });
    expect(failed[0]!.id).to.equal(`notifier|${TENANT}|${encodeURIComponent(`room:${room.id}`)}|${e.id}`);
    expect(failed[0]!.reason).to.equal('the notifier gave up after 3 deliveries: rooms unavailable');
    expect(calls).to.equal(3);
    // Acknowledged: nothing pending, and it is not tried again.
    await sleep(400);
    expect(calls).to.equal(3);
    expect(await env.engine.claimStale(NOTIFIER_GROUP, 'probe', { minIdleMs: 0 })).to.deep.equal([]);
    expect(pushesTo(sub)).to.have.length(0);

    broken = false;
    expect(await retryFailed(w.queue, failed[0]!.id)).to.equal(1);
    await eventually(() => pushesTo(sub).length === 1, 'the push after the retry');
    expect((JSON.parse(pushesTo(sub)[0]!.payload) as { event_id: string }).event_id).to.equal(e.id);
    await eventually(async () => (await listFailed(w.queue)).total === 0, 'an empty dead-letter list');
    expect((await env.stores.notifications.list(TENANT, 'bob')).notifications).to.have.length(1);
  });

  it('sends once when two live workers race on the same group', async () => {
    const users = ['u1', 'u2', 'u3'];
    const subs = new Map<string, TestSubscription>();
    for (const u of users) subs.set(u, await subscribe(u));
    // Slow handling and a short claim time: the workers step on each other's entries.
    const slow: RoomMembers = { members: async (tenant, id) => (await sleep(20), env.rooms.members(tenant, id)) };
    const room = await env.rooms.create(TENANT, { name: 'Race' }, 'u1');
    for (const u of ['u2', 'u3']) await env.rooms.addMember(TENANT, room.id, u, 'member', 'u1');
    const racing = { batchSize: 4, claimIdleMs: 40, claimIntervalMs: 10, maxDeliveries: 1000 };
    const second = new Registry();
    await start({}, { rooms: slow, notifier: { ...racing, consumer: 'racer-1' } });
    others.push(await runWorker(workerDeps({}, { rooms: slow, registry: second, notifier: { ...racing, consumer: 'racer-2' } })));
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await publish(`room:${room.id}`, 'message.created', { title: `m${i}` })).id);
    for (let i = 0; i < 6; i++) ids.push((await publish(`user:u${(i % 3) + 1}`, 'ping', { title: `p${i}` })).id);
    // Room messages reach the three members (no publisher), pings their owner: 12 × 3 + 6.
    const expected = 12 * 3 + 6;
    await eventually(() => push.received.filter((r) => [...subs.values()].some((s) => s.id === r.subscriptionId)).length >= expected, 'every push', 15_000);
    await settled(worker!);
    await sleep(300);
    for (const [u, sub] of subs) {
      const got = pushesTo(sub).map((r) => (JSON.parse(r.payload) as { event_id: string; channel: string }).event_id + ' ' + (JSON.parse(r.payload) as { channel: string }).channel);
      expect(new Set(got).size, u).to.equal(got.length);
      expect(got, u).to.have.length(12 + 2);
    }
    const total = async (name: string, channel: string) => {
      let sum = 0;
      for (const r of [registry, second]) {
        const metric = (await r.getMetricsAsJSON()).find((m) => m.name === name);
        sum += (metric?.values.find((v) => v.labels.channel === channel)?.value as number | undefined) ?? 0;
      }
      return sum;
    };
    // Counted from the inserts: each notification is new to exactly one of them.
    expect(await total('streamgate_notifications_sent_total', 'in_app')).to.equal(expected);
    expect(await total('streamgate_notifications_sent_total', 'webpush')).to.equal(expected);
    for (const u of users) {
      const announced = (await env.engine.history(TENANT, `user:${u}`, { limit: 100 })).events.filter((e) => e.event === NOTIFICATION_CREATED);
      expect(announced, u).to.have.length(14);
    }
  });

  it('does not let another notifier claim a slow batch while it is being handled', async () => {
    const redis = new Redis(env.redisUrl);
    const queue = createQueue({ redisUrl: env.redisUrl, prefix: bullPrefix(env.prefix) }, { attempts: 1, backoff_ms: 50 });
    const handled: string[] = [];
    let calls = 0;
    const rooms: RoomMembers = {
      members: async (tenant, id) => {
        calls++;
        await sleep(100);
        return env.rooms.members(tenant, id);
      },
    };
    const room = await env.rooms.create(TENANT, { name: 'Slow' }, 'ann');
    const options = (consumer: string): NotifierOptions => ({
      engine: env.engine,
      stores: { ...env.stores, rooms },
      settings: env.config().notifications,
      queue,
      senders: { webpush: false, fcm: false, email: false },
      consumer,
      batchSize: 10,
      blockMs: 50,
      claimIdleMs: 150,
      claimIntervalMs: 20,
      group: new RedisNotifierGroup(redis, env.prefix, SHARDS, NOTIFIER_GROUP),
      onError: (err) => handled.push(`error ${String(err)}`),
    });
    const a = new Notifier(options('slow-a'));
    const b = new Notifier(options('quick-b'));
    try {
      await env.engine.ensureGroup(NOTIFIER_GROUP, 'latest');
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push((await publish(`room:${room.id}`, 'message.created', { title: `s${i}` }, { publisher: { id: 'zed' } })).id);
      await a.start();
      // A holds the six (600 ms of work, four times the claim time) before B starts looking.
      await sleep(60);
      await b.start();
      await eventually(async () => (await env.stores.notifications.list(TENANT, 'ann')).notifications.length === 6, 'six notifications', 5000);
      await sleep(300);
      const announced = (await env.engine.history(TENANT, 'user:ann', { limit: 50 })).events.filter((e) => e.event === NOTIFICATION_CREATED);
      expect(announced).to.have.length(6);
      expect(handled).to.deep.equal([]);
      // Each event handled once (the room's members read once per event).
      expect(calls).to.equal(6);
      // Each entry was delivered once: never claimed by B.
      const keys = new EngineKeys(env.prefix, SHARDS);
      for (const key of keys.logs()) {
        const consumers = (await redis.call('XINFO', 'CONSUMERS', key, NOTIFIER_GROUP).catch(() => [])) as unknown[][];
        for (const c of consumers) expect(c[3], `pending of ${String(c[1])}`).to.equal(0);
      }
      expect(await env.engine.claimStale(NOTIFIER_GROUP, 'probe', { minIdleMs: 0 })).to.deep.equal([]);
    } finally {
      await a.stop();
      await b.stop();
      await queue.close();
      redis.disconnect();
    }
  });

  it('removes consumers with nothing pending from the group when a worker starts', async () => {
    const redis = new Redis(env.redisUrl);
    try {
      await env.engine.ensureGroup(NOTIFIER_GROUP, 'latest');
      await publish('user:nobody', 'x', {});
      await publish('user:nobody2', 'x', {});
      const first = await env.engine.readGroup(NOTIFIER_GROUP, 'gone-idle', { count: 1 });
      await env.engine.ack(NOTIFIER_GROUP, first);
      await env.engine.readGroup(NOTIFIER_GROUP, 'gone-pending', { count: 1 });
      const names = async () => {
        const out: string[] = [];
        for (const key of new EngineKeys(env.prefix, SHARDS).logs()) {
          const consumers = (await redis.call('XINFO', 'CONSUMERS', key, NOTIFIER_GROUP)) as unknown[][];
          for (const c of consumers) out.push(String(c[1]));
        }
        return out.sort();
      };
      expect(await names()).to.include.members(['gone-idle', 'gone-pending']);
      await start({}, { notifier: { consumer: 'fresh', idleConsumerMs: 0, claimIdleMs: 60_000 } });
      const after = await names();
      expect(after).to.not.include('gone-idle');
      expect(after).to.include('gone-pending');
    } finally {
      redis.disconnect();
    }
  });

  it('prunes the history past history_days and expired subscriptions, daily', async () => {
    const w = await start({ history_days: 30 });
    expect(await w.queue.getJobScheduler(PRUNE_SCHEDULER_ID)).to.include({ pattern: '17 3 * * *', tz: 'UTC' });
    const now = Date.now();
    const make = (title: string, daysAgo: number, i: number) => ({
      tenant: TENANT, userId: 'kim', channel: 'user:kim', event: 'x', eventId: `${i}-0`, category: 'user', priority: 'normal' as Priority,
      title, body: '', data: {}, createdAt: new Date(now - daysAgo * 86400_000),
    });
    const { notifications } = await env.stores.notifications.record([make('old', 31, 1), make('older', 400, 2), make('recent', 29, 3)]);
    await env.stores.notifications.initDeliveries(notifications.map((n) => ({ tenant: TENANT, notificationId: n.id, channel: 'email', state: 'sent' as const })));
    const expired = push.subscribe();
    const valid = push.subscribe();
    await env.stores.targets.addWebPush(TENANT, 'kim', { endpoint: expired.endpoint, p256dh: expired.p256dh, auth: expired.auth, expiresAt: new Date(now - 1000) });
    await env.stores.targets.addWebPush(TENANT, 'kim', { endpoint: valid.endpoint, p256dh: valid.p256dh, auth: valid.auth, expiresAt: new Date(now + 86400_000) });
    await w.queue.add('prune', { kind: 'prune' });
    await eventually(async () => (await env.stores.notifications.list(TENANT, 'kim')).notifications.length === 1, 'the pruning');
    expect((await env.stores.notifications.list(TENANT, 'kim')).notifications.map((n) => n.title)).to.deep.equal(['recent']);
    const states = await env.stores.notifications.deliveries(TENANT, notifications.map((n) => n.id));
    expect([...states.keys()]).to.have.length(1);
    const left = await env.knex('push_subscriptions').where({ tenant: TENANT, user_id: 'kim' }).select('endpoint');
    expect(left.map((r: { endpoint: string }) => r.endpoint)).to.deep.equal([valid.endpoint]);
    await eventually(() => logs.some((l) => /pruned 2 notifications older than 30 days and 1 expired subscriptions/.test(l)), 'the log line');
  });

  it('retries with backoff, ends in the dead-letter list with an email fallback, and retries from there', async () => {
    const sub = await subscribe('fay');
    push.respondWith(sub.id, 500);
    await env.stores.preferences.update(TENANT, 'fay', { email: 'fay@example.com' });
    const w = await start();
    await publish('user:fay', 'invoice.paid', { title: 'flaky' });
    await eventually(() => mailsTo('fay@example.com').length === 1, 'the fallback email');
    const { total, failed } = await eventually(async () => {
      const l = await listFailed(w.queue);
      return l.total === 1 ? l : undefined;
    }, 'a dead letter');
    expect(total).to.equal(1);
    expect(failed[0]).to.include({ kind: 'webpush', tenant: TENANT, userId: 'fay', attempts: 2 });
    expect(failed[0]!.reason).to.equal('the push service answered HTTP 500');
    expect(await counter('streamgate_notifications_failed_total', 'webpush')).to.equal(1);
    const [n] = (await env.stores.notifications.list(TENANT, 'fay')).notifications;
    expect(n!.delivery.webpush).to.include({ state: 'failed', attempts: 2 });

    push.respondWith(sub.id, 201);
    expect(await retryFailed(w.queue, 'no-such-job')).to.equal(0);
    expect(await retryFailed(w.queue, failed[0]!.id)).to.equal(1);
    await eventually(() => pushesTo(sub).length === 1, 'the retried push');
    await eventually(async () => (await listFailed(w.queue)).total === 0, 'an empty dead-letter list');
    const [after] = (await env.stores.notifications.list(TENANT, 'fay')).notifications;
    expect(after!.delivery.webpush?.state).to.equal('sent');
    expect(mailsTo('fay@example.com')).to.have.length(1);
  });

  it('schedules the daily digest and emails each user their unread notifications', async () => {
    const w = await start({ digest: { hour: 7, time_zone: 'Europe/Paris' } });
    const scheduler = await w.queue.getJobScheduler('daily-digest');
    expect(scheduler).to.include({ pattern: '0 7 * * *', tz: 'Europe/Paris' });
    const now = Date.now();
    const make = (userId: string, title: string, ago: number, i: number) => ({
      tenant: TENANT, userId, channel: `user:${userId}`, event: 'x', eventId: `${now - ago}-${i}`, category: 'user', priority: 'normal' as Priority,
      title, body: `body of ${title}`, data: {}, createdAt: new Date(now - ago),
    });
    await env.stores.notifications.record([
      make('gil', 'first <unread>', 3600_000, 1),
      make('gil', 'second unread', 60_000, 2),
      make('gil', 'already read', 30_000, 3),
      make('gil', 'too old', 2 * 86400_000, 4),
      make('hal', 'no digest for hal', 60_000, 5),
    ]);
    const read = (await env.stores.notifications.list(TENANT, 'gil')).notifications.find((n) => n.title === 'already read')!;
    await env.stores.notifications.markRead(TENANT, 'gil', [read.id]);
    await env.stores.preferences.update(TENANT, 'gil', { email: 'gil@example.com' });
    await env.stores.preferences.update(TENANT, 'hal', { email: 'hal@example.com', digest: false });

    await w.queue.add('digest-run', { kind: 'digest-run' });
    const [mail] = await eventually(() => (mailsTo('gil@example.com').length ? mailsTo('gil@example.com') : undefined), 'the digest');
    await settled(w);
    expect(mail!.subject).to.equal('You have 2 unread notifications');
    expect(mail!.text).to.include('* second unread: body of second unread').and.include('* first <unread>');
    expect(mail!.text.indexOf('second unread')).to.be.lessThan(mail!.text.indexOf('first <unread>'));
    expect(mail!.text).to.not.include('already read').and.not.include('too old');
    expect(mail!.html).to.include('first &lt;unread&gt;').and.not.include('first <unread>');
    expect(mailsTo('hal@example.com')).to.have.length(0);
    // The same day again: the job ids already exist, nothing is sent twice.
    await w.queue.add('digest-run', { kind: 'digest-run' });
    await settled(w);
    expect(mailsTo('gil@example.com')).to.have.length(1);
  });

  it('runs from its configuration alone (its own engine and database) and stops within a few seconds', async () => {
    const sub = await subscribe('ivy');
    const own = await runWorker({
      config: env.config({}, { vapid }),
      transports: { webPushAgent: push.agent() },
      notifier: { blockMs: 100 },
      log: () => undefined,
    });
    try {
      await publish('user:ivy', 'hello', { title: 'from config' });
      await eventually(() => pushesTo(sub).length === 1, 'the push');
    } finally {
      const t0 = Date.now();
      await own.close();
      expect(Date.now() - t0).to.be.lessThan(3000);
    }
  });

  it('stops within a few seconds', async () => {
    const w = await start();
    const t0 = Date.now();
    await w.close();
    expect(Date.now() - t0).to.be.lessThan(3000);
  });
});
