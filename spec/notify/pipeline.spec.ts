/**
 * The notification pipeline end to end, against real Redis (unique prefix), real
 * BullMQ and a real SQLite database: events published to the log come out of the
 * loopback stand-ins of a web push service, FCM and an SMTP server.
 */
import { expect } from 'chai';
import { Registry } from 'prom-client';
import type { VapidCredentials } from '../../lib/config/notifications.js';
import type { PublishRequest } from '../../lib/engine/engine.js';
import { listFailed, retryFailed } from '../../lib/notify/dead-letters.js';
import { Notifier, NOTIFIER_GROUP, NOTIFICATION_CREATED } from '../../lib/notify/notifier.js';
import { bullPrefix, createQueue } from '../../lib/notify/queue.js';
import { generateVapidKeys } from '../../lib/notify/vapid.js';
import { runWorker, type RunningWorker } from '../../lib/notify/worker.js';
import type { Priority } from '../../lib/protocol/frames.js';
import { databases, type TestDatabase } from '../support/databases.js';
import { FakeFcm } from '../support/fcm-server.js';
import { eventually, openNotifyEnv, type NotifyEnv } from '../support/notify.js';
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
  });

  afterEach(async () => {
    try {
      await worker?.close();
    } finally {
      await env.close();
      await db.cleanup();
    }
  });

  async function start(override: unknown = {}): Promise<RunningWorker> {
    worker = await runWorker({
      config: env.config({ retry: { attempts: 2, backoff_ms: 50 }, ...(override as object) }, { vapid, smtpUrl: smtp.url }),
      engine: env.engine,
      store: { knex: env.knex, rooms: env.rooms },
      registry,
      now: () => clock ?? Date.now(),
      transports: {
        webPushAgent: push.agent(),
        fcm: { credential: fcm.credential(), projectId: fcm.projectId, httpAgent: fcm.httpAgent(), legacyHttpTransport: true },
      },
      notifier: { blockMs: 100, claimIdleMs: 300, claimIntervalMs: 100 },
      closeTimeoutMs: 2000,
      log: () => undefined,
    });
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

  /** Waits until BullMQ has nothing waiting, active or delayed (but the digest scheduler's next run). */
  async function settled(w: RunningWorker): Promise<void> {
    await eventually(async () => {
      const c = await w.queue.getJobCounts('waiting', 'active', 'prioritized');
      const delayed = (await w.queue.getDelayed()).filter((j) => j.name !== 'digest-run');
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

  it('skips users who are online, unless the event is an emergency', async () => {
    const sub = await subscribe('ann');
    await env.engine.connectionsTouch([{ tenant: TENANT, connectionId: 'c1', userId: 'ann' }], 60_000);
    await start();
    await publish('user:ann', 'chat.message', { title: 'while online' });
    await publish('user:ann', 'alarm', { title: 'fire' }, { priority: 'emergency' });
    await eventually(() => pushesTo(sub).length >= 1, 'the emergency push');
    await settled(worker!);
    expect(pushesTo(sub).map((r) => (JSON.parse(r.payload) as { title: string }).title)).to.deep.equal(['fire']);
    expect(pushesTo(sub)[0]!.urgency).to.equal('high');
    const stored = (await env.stores.notifications.list(TENANT, 'ann')).notifications;
    expect(stored.map((n) => n.title)).to.deep.equal(['fire']);
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
    expect(failed[0]!.reason).to.include('HTTP 500');
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
