/**
 * The notification repositories on SQLite and PostgreSQL: history and read state,
 * delivery states, preferences, web push subscriptions and device tokens.
 */
import { expect } from 'chai';
import type { Knex } from 'knex';
import { StreamgateError } from '../../lib/errors.js';
import { parsePreferencesPatch, PreferenceStore, preferencesJson } from '../../lib/store/notification-preferences.js';
import { notificationId, NotificationStore, type NewNotification } from '../../lib/store/notifications.js';
import { parsePushTargetPatch, PushTargetStore } from '../../lib/store/push-targets.js';
import { forEachDatabase, openMigrated } from '../support/databases.js';

const P256 = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 7)]).toString('base64url');
const AUTH = Buffer.alloc(16, 9).toString('base64url');

function rejection(fn: () => unknown): Promise<StreamgateError> {
  return Promise.resolve()
    .then(fn)
    .then(
      () => {
        throw new Error('expected a rejection');
      },
      (err: unknown) => {
        expect(err).to.be.instanceOf(StreamgateError);
        return err as StreamgateError;
      },
    );
}

describe('notification repositories', () => {
  forEachDatabase((target) => {
    let knex: Knex;
    let cleanup: () => Promise<void>;
    let history: NotificationStore;
    let prefs: PreferenceStore;
    let targets: PushTargetStore;
    let tenant: string;
    let seq = 0;

    before(async () => {
      ({ knex, cleanup } = await openMigrated(target));
      history = new NotificationStore(knex);
      prefs = new PreferenceStore(knex);
      targets = new PushTargetStore(knex);
    });

    after(async () => {
      await cleanup();
    });

    beforeEach(() => {
      tenant = `t${++seq}`;
    });

    const item = (userId: string, eventId: string, at: number, extra: Partial<NewNotification> = {}): NewNotification => ({
      tenant,
      userId,
      channel: `user:${userId}`,
      event: 'invoice.paid',
      eventId,
      category: 'user',
      priority: 'high',
      title: `t ${eventId}`,
      body: 'b',
      data: { url: '/x', n: [1, 2] },
      createdAt: new Date(at),
      ...extra,
    });

    it('records a notification once per (channel, event id, user), whatever the redeliveries', async () => {
      const first = await history.record([item('ann', '100-0', 1_000), item('bob', '100-0', 1_000)]);
      expect(first.created.size).to.equal(2);
      const again = await history.record([item('ann', '100-0', 2_000, { title: 'changed' })]);
      expect(again.created.size).to.equal(0);
      expect(again.notifications).to.have.length(1);
      expect(again.notifications[0]).to.include({ id: notificationId(tenant, 'user:ann', '100-0', 'ann'), title: 't 100-0', priority: 'high', readAt: null });
      expect(again.notifications[0]!.createdAt.getTime()).to.equal(1_000);
      expect(again.notifications[0]!.data).to.deep.equal({ url: '/x', n: [1, 2] });
      // The same event id on another channel is another event.
      expect((await history.record([item('ann', '100-0', 1_000, { channel: 'dm:ann:bob' })])).created.size).to.equal(1);
    });

    it('pages the history newest first and counts, marks and marks all read', async () => {
      await history.record([1, 2, 3, 4, 5].map((i) => item('ann', `${i}-0`, i * 1000)));
      await history.record([item('ann', '6-0', 5000)]);
      const page1 = await history.list(tenant, 'ann', { limit: 4 });
      expect(page1.notifications.map((n) => n.eventId).slice(0, 2).sort()).to.deep.equal(['5-0', '6-0']);
      expect(page1.next).to.not.equal(null);
      const page2 = await history.list(tenant, 'ann', { limit: 4, before: page1.next! });
      expect(page2.next).to.equal(null);
      const all = [...page1.notifications, ...page2.notifications].map((n) => n.eventId);
      expect(all).to.have.length(6);
      expect(new Set(all).size).to.equal(6);
      expect(all.slice(2)).to.deep.equal(['4-0', '3-0', '2-0', '1-0']);

      expect(await history.unreadCount(tenant, 'ann')).to.equal(6);
      expect(await history.markRead(tenant, 'ann', [page1.notifications[0]!.id, 'nope'])).to.equal(1);
      expect(await history.markRead(tenant, 'bob', [page1.notifications[1]!.id])).to.equal(0);
      expect(await history.unreadCount(tenant, 'ann')).to.equal(5);
      expect((await history.list(tenant, 'ann', { unreadOnly: true })).notifications).to.have.length(5);
      expect(await history.markAllRead(tenant, 'ann', new Date(2000))).to.equal(2);
      expect(await history.unreadCount(tenant, 'ann')).to.equal(3);
      expect(await history.markAllRead(tenant, 'ann')).to.equal(3);
      expect(await history.unreadCount(tenant, 'ann')).to.equal(0);
      const read = await history.get(tenant, page1.notifications[0]!.id, 'ann');
      expect(read!.readAt).to.be.instanceOf(Date);
      expect(await history.get(tenant, page1.notifications[0]!.id, 'bob')).to.equal(null);
    });

    it('keeps delivery states per channel; initialising never overwrites a state', async () => {
      const { notifications } = await history.record([item('ann', '7-0', 1000)]);
      const id = notifications[0]!.id;
      await history.initDeliveries([{ tenant, notificationId: id, channel: 'webpush', state: 'queued', jobId: 'j1' }]);
      await history.setDelivery({ tenant, notificationId: id, channel: 'webpush', state: 'sent', attempts: 2, error: null });
      await history.initDeliveries([{ tenant, notificationId: id, channel: 'webpush', state: 'queued' }]);
      await history.setDelivery({ tenant, notificationId: id, channel: 'email', state: 'failed', attempts: 5, error: 'x'.repeat(5000) });
      const n = await history.get(tenant, id);
      expect(n!.delivery.webpush).to.include({ state: 'sent', attempts: 2, error: null });
      expect(n!.delivery.email).to.include({ state: 'failed', attempts: 5 });
      expect(n!.delivery.email!.error).to.have.length(1000);
      expect(n!.delivery.email!.updatedAt).to.be.instanceOf(Date);
    });

    it('finds users with unread notifications for the digest, page by page', async () => {
      await history.record([item('u1', '1-0', 10_000), item('u2', '1-0', 10_000), item('u3', '1-0', 10_000), item('u4', '1-0', 1_000)]);
      const since = new Date(5_000);
      const first = await history.usersWithUnread(since, null, 2);
      const mine = (xs: Array<{ tenant: string; userId: string }>) => xs.filter((x) => x.tenant === tenant).map((x) => x.userId);
      const seen: string[] = [...mine(first)];
      let after: { tenant: string; userId: string } | null = first[first.length - 1] ?? null;
      for (let i = 0; i < 100 && after; i++) {
        const next = await history.usersWithUnread(since, after, 2);
        seen.push(...mine(next));
        after = next.length ? next[next.length - 1]! : null;
      }
      expect(seen).to.deep.equal(['u1', 'u2', 'u3']);
      const { notifications, total } = await history.unreadSince(tenant, 'u1', since, 10);
      expect(total).to.equal(1);
      expect(notifications[0]!.userId).to.equal('u1');
    });

    it('gives default preferences, then saves the fields a change names', async () => {
      const d = await prefs.get(tenant, 'ann');
      expect(d).to.deep.include({ enabled: true, email: null, channels: {}, categories: {}, quietHours: null, dndUntil: null, digest: true, updatedAt: null });
      const dnd = new Date(Date.now() + 3600_000);
      await prefs.update(tenant, 'ann', { channels: { email: false }, categories: { room: false, mention: { webpush: false } }, dndUntil: dnd, digest: false });
      const saved = await prefs.update(tenant, 'ann', { quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' }, devices: { ios: false } });
      const read = await prefs.get(tenant, 'ann');
      expect(read).to.deep.equal(saved);
      expect(read).to.deep.include({
        enabled: true,
        channels: { email: false },
        categories: { room: false, mention: { webpush: false } },
        devices: { ios: false },
        quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' },
        digest: false,
      });
      expect(read.dndUntil!.toISOString()).to.equal(dnd.toISOString());
      const many = await prefs.getMany(tenant, ['ann', 'bob']);
      expect(many.get('bob')!.updatedAt).to.equal(null);
      expect(many.get('ann')!.digest).to.equal(false);
      expect(preferencesJson(read)).to.include({ enabled: true, digest: false, dnd_until: dnd.toISOString() });
    });

    it('validates preference changes', () => {
      expect(parsePreferencesPatch({ quiet_hours: { start: '23:00', end: '06:30', time_zone: 'America/New_York' }, dnd_until: null }, { allowEmail: false })).to.deep.equal({
        quietHours: { start: '23:00', end: '06:30', timeZone: 'America/New_York' },
        dndUntil: null,
      });
      const bad = (body: unknown, re: RegExp, allowEmail = false) => expect(() => parsePreferencesPatch(body, { allowEmail })).to.throw(StreamgateError, re);
      bad({ quiet_hours: { start: '25:00', end: '06:00', time_zone: 'UTC' } }, /quiet_hours.start/);
      bad({ quiet_hours: { start: '22:00', end: '06:00', time_zone: 'Mars/Olympus' } }, /time zone/);
      bad({ channels: { sms: true } }, /channels/);
      bad({ surprise: 1 }, /surprise|Unrecognized/);
      bad({ email: 'ann@example.com' }, /email: set by the application/);
      bad({ email: 'not an address' }, /email/, true);
      bad({ dnd_until: 'tomorrow' }, /dnd_until/);
    });

    it('registers web push subscriptions once per endpoint, moves them between users, and deletes them', async () => {
      const endpoint = 'https://push.example.com/send/abc';
      const a = await targets.addWebPush(tenant, 'ann', { endpoint, p256dh: P256, auth: AUTH });
      expect(a).to.include({ userId: 'ann', deviceType: 'web', endpoint });
      const b = await targets.addWebPush(tenant, 'bob', { endpoint, p256dh: P256, auth: AUTH, deviceType: 'desktop' });
      expect(b.id).to.equal(a.id);
      expect(await targets.webPushFor(tenant, ['ann'])).to.deep.equal([]);
      expect((await targets.webPushFor(tenant, ['bob'])).map((s) => s.deviceType)).to.deep.equal(['desktop']);
      await targets.addWebPush(tenant, 'bob', { endpoint: endpoint + '2', p256dh: P256, auth: AUTH, expiresAt: new Date(Date.now() - 1000) });
      expect(await targets.webPushFor(tenant, ['bob'])).to.have.length(1);
      expect(await targets.removeWebPush(tenant, 'ann', { endpoint })).to.equal(false);
      expect(await targets.removeWebPush(tenant, 'bob', { endpoint })).to.equal(true);
      expect(await targets.deleteWebPush(tenant, a.id)).to.equal(false);
    });

    it('refuses endpoints that are not public https push services', async () => {
      expect((await rejection(() => targets.addWebPush(tenant, 'ann', { endpoint: 'http://push.example.com/x', p256dh: P256, auth: AUTH }))).message).to.match(/https/);
      expect((await rejection(() => targets.addWebPush(tenant, 'ann', { endpoint: 'https://127.0.0.1:9/x', p256dh: P256, auth: AUTH }))).message).to.match(/public/);
      expect((await rejection(() => targets.addWebPush(tenant, 'ann', { endpoint: 'https://localhost/x', p256dh: P256, auth: AUTH }))).message).to.match(/public/);
      expect((await rejection(() => targets.addWebPush(tenant, 'ann', { endpoint: 'https://push.example.com/x', p256dh: AUTH, auth: AUTH }))).message).to.match(/p256dh/);
      expect((await rejection(() => targets.addWebPush(tenant, 'ann', { endpoint: 'https://push.example.com/x', p256dh: P256, auth: P256 }))).message).to.match(/auth/);
      const loopback = new PushTargetStore(knex, { allowPrivateEndpoints: true });
      expect((await loopback.addWebPush(tenant, 'ann', { endpoint: 'https://127.0.0.1:9/x', p256dh: P256, auth: AUTH })).userId).to.equal('ann');
    });

    it('registers FCM tokens once, moves them between users, and deletes them', async () => {
      const token = 'fcm:' + 'A'.repeat(150);
      const a = await targets.addDevice(tenant, 'ann', token, 'android');
      const b = await targets.addDevice(tenant, 'bob', token, 'ios');
      expect(b).to.include({ id: a.id, userId: 'bob', platform: 'ios', token });
      expect(await targets.devicesFor(tenant, ['ann'])).to.deep.equal([]);
      expect(await targets.removeDevice(tenant, 'bob', { token })).to.equal(true);
      const c = await targets.addDevice(tenant, 'bob', 'other', 'web');
      expect(await targets.removeDevice(tenant, 'ann', { id: c.id })).to.equal(false);
      expect(await targets.deleteDevice(tenant, c.id)).to.equal(true);
      expect((await rejection(() => targets.addDevice(tenant, 'bob', 'has space', 'web'))).message).to.match(/token/);
      expect((await rejection(() => targets.addDevice(tenant, 'bob', 'x', 'blackberry' as 'web'))).message).to.match(/platform/);
    });

    it('turns single subscriptions and devices off and on and names them; a move to another user resets both', async () => {
      const endpoint = 'https://push.example.com/send/switch';
      const sub = await targets.addWebPush(tenant, 'ann', { endpoint, p256dh: P256, auth: AUTH });
      expect(sub).to.include({ enabled: true, label: null });
      const off = await targets.updateWebPush(tenant, 'ann', sub.id, { enabled: false, label: 'Work laptop' });
      expect(off).to.include({ id: sub.id, enabled: false, label: 'Work laptop', endpoint });
      // Listed (disabled ones included), and kept when the same user registers it again.
      expect((await targets.webPushFor(tenant, ['ann'])).map((s) => [s.enabled, s.label])).to.deep.equal([[false, 'Work laptop']]);
      await targets.addWebPush(tenant, 'ann', { endpoint, p256dh: P256, auth: AUTH, deviceType: 'desktop' });
      expect(await targets.webPushFor(tenant, ['ann'])).to.have.length(1);
      expect((await targets.webPushFor(tenant, ['ann']))[0]).to.include({ enabled: false, label: 'Work laptop', deviceType: 'desktop' });
      // Only the label, then only the switch.
      expect(await targets.updateWebPush(tenant, 'ann', sub.id, { label: null })).to.include({ enabled: false, label: null });
      expect(await targets.updateWebPush(tenant, 'ann', sub.id, { enabled: true })).to.include({ enabled: true, label: null });
      await targets.updateWebPush(tenant, 'ann', sub.id, { enabled: false, label: 'mine' });
      // Someone else's, or none: null, nothing changed.
      expect(await targets.updateWebPush(tenant, 'bob', sub.id, { enabled: true })).to.equal(null);
      expect(await targets.updateWebPush(tenant, 'ann', 'nope', { enabled: true })).to.equal(null);
      expect(await targets.updateWebPush(tenant + 'x', 'ann', sub.id, { enabled: true })).to.equal(null);
      // Another user signs in on the browser: their subscription starts on, unnamed.
      const moved = await targets.addWebPush(tenant, 'bob', { endpoint, p256dh: P256, auth: AUTH });
      expect(moved).to.include({ id: sub.id, userId: 'bob', enabled: true, label: null });

      const token = 'fcm-switch-1';
      const phone = await targets.addDevice(tenant, 'ann', token, 'android');
      const tablet = await targets.addDevice(tenant, 'ann', 'fcm-switch-2', 'android');
      expect(phone).to.include({ enabled: true, label: null });
      expect(await targets.updateDevice(tenant, 'ann', phone.id, { enabled: false, label: 'Pixel ✓' })).to.include({ enabled: false, label: 'Pixel ✓' });
      expect((await targets.devicesFor(tenant, ['ann'])).map((d) => [d.id, d.enabled, d.label])).to.have.deep.members([
        [phone.id, false, 'Pixel ✓'],
        [tablet.id, true, null],
      ]);
      expect(await targets.addDevice(tenant, 'ann', token, 'android')).to.include({ enabled: false, label: 'Pixel ✓' });
      expect(await targets.updateDevice(tenant, 'bob', phone.id, { enabled: true })).to.equal(null);
      expect(await targets.addDevice(tenant, 'bob', token, 'ios')).to.include({ id: phone.id, userId: 'bob', enabled: true, label: null });
      expect(await targets.updateDevice(tenant, 'ann', phone.id, { enabled: false })).to.equal(null);
    });

    it('validates target changes', () => {
      expect(parsePushTargetPatch({ enabled: false, label: '  Work  ' })).to.deep.equal({ enabled: false, label: 'Work' });
      expect(parsePushTargetPatch({ label: '' })).to.deep.equal({ label: null });
      expect(parsePushTargetPatch({ label: null })).to.deep.equal({ label: null });
      expect(parsePushTargetPatch({ label: 'é'.repeat(100) })).to.deep.equal({ label: 'é'.repeat(100) });
      const bad = (body: unknown, re: RegExp) => expect(() => parsePushTargetPatch(body)).to.throw(StreamgateError, re);
      bad({}, /give enabled, label or both/);
      bad({ enabled: 'no' }, /enabled/);
      bad({ label: 7 }, /label/);
      bad({ label: 'x'.repeat(101) }, /label/);
      bad({ label: 'a\nb' }, /label/);
      bad({ enabled: true, token: 'x' }, /unknown field: token/);
      bad([], /JSON object/);
    });

    it('keeps at most 20 subscriptions and 20 tokens per user: more evict the least recently registered', async () => {
      const at = (i: number) => new Date(1_000_000 + i * 1000);
      for (let i = 0; i < 22; i++) await targets.addWebPush(tenant, 'ann', { endpoint: `https://push.example.com/s/${i}`, p256dh: P256, auth: AUTH }, at(i));
      for (let i = 0; i < 22; i++) await targets.addDevice(tenant, 'ann', `tok-${i}`, 'android', at(i));
      const endpoints = (await targets.webPushFor(tenant, ['ann'])).map((t) => t.endpoint);
      expect(endpoints).to.have.length(20);
      expect(endpoints).to.not.include.members(['https://push.example.com/s/0', 'https://push.example.com/s/1']);
      const tokens = (await targets.devicesFor(tenant, ['ann'])).map((t) => t.token);
      expect(tokens).to.have.length(20);
      expect(tokens).to.not.include.members(['tok-0', 'tok-1']);
      // Other users keep theirs.
      await targets.addDevice(tenant, 'bob', 'tok-bob', 'ios', at(0));
      expect(await targets.devicesFor(tenant, ['bob'])).to.have.length(1);

      // Registering one again makes it recent: the oldest other one goes instead.
      const small = new PushTargetStore(knex, { maxPerUser: 3 });
      for (let i = 0; i < 3; i++) await small.addDevice(tenant, 'cat', `c-${i}`, 'web', at(i));
      await small.addDevice(tenant, 'cat', 'c-0', 'web', at(10));
      await small.addDevice(tenant, 'cat', 'c-3', 'web', at(11));
      expect((await small.devicesFor(tenant, ['cat'])).map((t) => t.token).sort()).to.deep.equal(['c-0', 'c-2', 'c-3']);
    });

    it('deletes subscriptions past their expiration time', async () => {
      const now = Date.now();
      await targets.addWebPush(tenant, 'dan', { endpoint: 'https://push.example.com/e/1', p256dh: P256, auth: AUTH, expiresAt: new Date(now - 1) });
      await targets.addWebPush(tenant, 'dan', { endpoint: 'https://push.example.com/e/2', p256dh: P256, auth: AUTH, expiresAt: new Date(now + 60_000) });
      await targets.addWebPush(tenant, 'dan', { endpoint: 'https://push.example.com/e/3', p256dh: P256, auth: AUTH });
      expect(await targets.deleteExpiredWebPush(new Date(now))).to.be.at.least(1);
      const left = await knex('push_subscriptions').where({ tenant, user_id: 'dan' }).select('endpoint');
      expect(left.map((r: { endpoint: string }) => r.endpoint).sort()).to.deep.equal(['https://push.example.com/e/2', 'https://push.example.com/e/3']);
    });

    it('counts a notification as created by the insert that stored it, also when two record it at once', async () => {
      const items = Array.from({ length: 30 }, (_, i) => item(`u${i}`, '500-0', 5_000));
      const results = await Promise.all([history.record(items), history.record(items), history.record(items)]);
      expect(results.map((r) => r.created.size).reduce((a, b) => a + b, 0)).to.equal(30);
      const union = new Set(results.flatMap((r) => [...r.created]));
      expect(union.size).to.equal(30);
      for (const r of results) expect(r.notifications).to.have.length(30);
    });

    it('prunes notifications older than a time, with their delivery states', async () => {
      const { notifications } = await history.record([item('eve', '1-0', 1_000), item('eve', '2-0', 2_000), item('eve', '3-0', 3_000)]);
      await history.initDeliveries(notifications.map((n) => ({ tenant, notificationId: n.id, channel: 'webpush', state: 'sent' as const })));
      expect(await history.pruneBefore(new Date(2_500), { batch: 1 })).to.be.at.least(2);
      expect((await history.list(tenant, 'eve')).notifications.map((n) => n.eventId)).to.deep.equal(['3-0']);
      const states = await history.deliveries(tenant, notifications.map((n) => n.id));
      expect([...states.keys()]).to.deep.equal([notificationId(tenant, 'user:eve', '3-0', 'eve')]);
    });

    it('takes categories as long as namespace names', async () => {
      const { created } = await history.record([item('fay', '9-0', 9_000, { category: 'c'.repeat(128), channel: `${'n'.repeat(124)}:fay` })]);
      expect(created.size).to.equal(1);
      expect((await history.list(tenant, 'fay')).notifications[0]!.category).to.equal('c'.repeat(128));
    });
  });
});
