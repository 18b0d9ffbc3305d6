/**
 * The notifications HTTP API on a real HTTP server, with the real authenticator
 * (user tokens and server keys), SQLite and a Redis engine for the read
 * announcements.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createAuthenticator } from '../../lib/auth/authenticate.js';
import { signUserToken } from '../../lib/auth/tokens.js';
import { sendError } from '../../lib/http/app.js';
import { createNotificationsRouter, NOTIFICATION_READ } from '../../lib/http/notifications.js';
import { generateVapidKeys } from '../../lib/notify/vapid.js';
import { PushTargetStore } from '../../lib/store/push-targets.js';
import { ServerKeyStore } from '../../lib/store/server-keys.js';
import type { NewNotification } from '../../lib/store/notifications.js';
import { databases, type TestDatabase } from '../support/databases.js';
import { request, TEST_SECRET } from '../support/gateway.js';
import { openNotifyEnv, type NotifyEnv } from '../support/notify.js';

const sqlite = databases.find((d) => d.name === 'sqlite') ?? databases[0]!;
const P256 = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 7)]).toString('base64url');
const AUTH = Buffer.alloc(16, 9).toString('base64url');

function expectError(res: { status: number; body: any }, status: number, code: string): void {
  expect(res.status, JSON.stringify(res.body)).to.equal(status);
  expect(res.body.error.code).to.equal(code);
}

describe('notifications HTTP API', () => {
  let db: TestDatabase;
  let env: NotifyEnv;
  let server: Server;
  let base: string;
  let key: string;
  const vapid = generateVapidKeys();
  const as = (sub: string, tid = 'acme') => signUserToken(TEST_SECRET, { sub, tid });
  const api = (method: string, path: string, token: string, body?: unknown) =>
    request(`${base}/v1/notifications${path}`, { method, token, ...(body === undefined ? {} : { body }) });

  async function serve(vapidPublicKey: string | null): Promise<string> {
    const keys = new ServerKeyStore(env.knex);
    const app = express();
    app.use(
      '/v1/notifications',
      createNotificationsRouter({
        notifications: env.stores.notifications,
        preferences: env.stores.preferences,
        targets: new PushTargetStore(env.knex),
        vapidPublicKey,
        engine: env.engine,
        authenticate: createAuthenticator({ secret: TEST_SECRET, generated: false }, keys),
      }),
    );
    app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => sendError(res, err));
    server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    key = (await keys.create('acme', 'test')).key;
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  beforeEach(async () => {
    db = await sqlite.open();
    env = await openNotifyEnv(db);
    base = await serve(vapid.publicKey);
  });

  afterEach(async () => {
    try {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    } finally {
      await env.close();
      await db.cleanup();
    }
  });

  async function seed(userId: string, count: number): Promise<string[]> {
    const items: NewNotification[] = Array.from({ length: count }, (_, i) => ({
      tenant: 'acme',
      userId,
      channel: `user:${userId}`,
      event: 'invoice.paid',
      eventId: `${1000 + i}-0`,
      category: 'user',
      priority: 'normal',
      title: `n${i}`,
      body: '',
      data: {},
      createdAt: new Date(1_700_000_000_000 + i * 1000),
    }));
    const { notifications } = await env.stores.notifications.record(items);
    return notifications.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime()).map((n) => n.id);
  }

  it('needs credentials; users act for themselves, server keys name the user', async () => {
    expectError(await request(`${base}/v1/notifications`), 401, 'unauthorized');
    expectError(await api('GET', '/', key), 400, 'bad_request');
    expectError(await api('GET', '/?user=bob', as('ann')), 403, 'forbidden');
    await seed('bob', 1);
    expect((await api('GET', '/?user=bob', key)).body.notifications).to.have.length(1);
    expect((await api('GET', '/', as('bob', 'other'))).body.notifications).to.have.length(0);
  });

  it('lists the history page by page, counts unread, marks read and announces the new count', async () => {
    const ids = await seed('ann', 5);
    const page1 = await api('GET', '/?limit=3', as('ann'));
    expect(page1.status).to.equal(200);
    expect(page1.body.notifications.map((n: { title: string }) => n.title)).to.deep.equal(['n4', 'n3', 'n2']);
    expect(page1.body.notifications[0]).to.include({ id: ids[0], channel: 'user:ann', event: 'invoice.paid', read_at: null, priority: 'normal' });
    const page2 = await api('GET', `/?limit=3&cursor=${page1.body.next_cursor}`, as('ann'));
    expect(page2.body.notifications.map((n: { title: string }) => n.title)).to.deep.equal(['n1', 'n0']);
    expect(page2.body.next_cursor).to.equal(null);
    expectError(await api('GET', '/?cursor=bogus', as('ann')), 400, 'bad_request');
    expectError(await api('GET', '/?limit=0', as('ann')), 400, 'bad_request');

    expect((await api('GET', '/unread-count', as('ann'))).body).to.deep.equal({ unread: 5 });
    const one = await api('POST', `/${ids[0]}/read`, as('ann'));
    expect(one.status).to.equal(200);
    expect(one.body.read_at).to.be.a('string');
    expect(one.body.unread).to.equal(4);
    expect((await api('GET', `/${ids[0]}`, as('ann'))).body.read_at).to.be.a('string');
    expect((await api('POST', '/read', as('ann'), { ids: [ids[1], ids[2], 'unknown'] })).body).to.deep.equal({ marked: 2, unread: 2 });
    expect((await api('GET', '/?unread=true', as('ann'))).body.notifications).to.have.length(2);
    expect((await api('POST', '/read-all', as('ann'))).body).to.deep.equal({ marked: 2, unread: 0 });
    expect((await api('POST', '/read-all', as('ann'))).body).to.deep.equal({ marked: 0, unread: 0 });
    expectError(await api('POST', '/read', as('ann'), { ids: [] }), 400, 'bad_request');
    expectError(await api('POST', `/${ids[0]}/read`, as('bob')), 404, 'not_found');
    expectError(await api('GET', '/0123456789abcdef0123456789abcdef', as('ann')), 404, 'not_found');

    const announced = (await env.engine.history('acme', 'user:ann', { limit: 10 })).events.filter((e) => e.event === NOTIFICATION_READ);
    expect(announced.map((e) => JSON.parse(e.dataJson) as { unread: number }).map((d) => d.unread)).to.deep.equal([4, 2, 0]);
  });

  it('reads and changes preferences; only server keys set the email address', async () => {
    const d = await api('GET', '/preferences', as('ann'));
    expect(d.body).to.deep.include({ enabled: true, email: null, quiet_hours: null, dnd_until: null, digest: true, updated_at: null });
    const put = await api('PUT', '/preferences', as('ann'), {
      categories: { room: false, mention: { email: false } },
      quiet_hours: { start: '22:00', end: '07:00', time_zone: 'Europe/Paris' },
      dnd_until: '2030-01-01T00:00:00Z',
    });
    expect(put.status).to.equal(200);
    expect(put.body).to.deep.include({
      categories: { room: false, mention: { email: false } },
      quiet_hours: { start: '22:00', end: '07:00', time_zone: 'Europe/Paris' },
      dnd_until: '2030-01-01T00:00:00.000Z',
    });
    expectError(await api('PUT', '/preferences', as('ann'), { email: 'ann@example.com' }), 400, 'bad_request');
    expectError(await api('PUT', '/preferences', as('ann'), { quiet_hours: { start: '22:00', end: '07:00', time_zone: 'Mars/Base' } }), 400, 'bad_request');
    const byKey = await api('PUT', '/preferences?user=ann', key, { email: 'ann@example.com' });
    expect(byKey.body).to.deep.include({ email: 'ann@example.com', categories: { room: false, mention: { email: false } } });
    expect((await api('GET', '/preferences', as('ann'))).body.email).to.equal('ann@example.com');
  });

  it('registers and unregisters web push subscriptions', async () => {
    const subscription = { endpoint: 'https://push.example.com/wpush/v2/abc', expirationTime: null, keys: { p256dh: P256, auth: AUTH } };
    const created = await api('POST', '/push-subscriptions', as('ann'), subscription);
    expect(created.status, JSON.stringify(created.body)).to.equal(201);
    expect(created.body).to.include({ endpoint: subscription.endpoint, device_type: 'web', expires_at: null });
    const again = await api('POST', '/push-subscriptions', as('ann'), { ...subscription, device_type: 'desktop' });
    expect(again.body).to.include({ id: created.body.id, device_type: 'desktop' });
    expect((await api('GET', '/push-subscriptions', as('ann'))).body.subscriptions).to.have.length(1);
    expectError(await api('POST', '/push-subscriptions', as('ann'), { ...subscription, endpoint: 'https://10.0.0.5/internal' }), 400, 'bad_request');
    expectError(await api('POST', '/push-subscriptions', as('ann'), { ...subscription, keys: { p256dh: 'x', auth: AUTH } }), 400, 'bad_request');
    expectError(await api('DELETE', '/push-subscriptions', as('bob'), { endpoint: subscription.endpoint }), 404, 'not_found');
    expect((await api('DELETE', '/push-subscriptions', as('ann'), { endpoint: subscription.endpoint })).status).to.equal(204);
    const other = await api('POST', '/push-subscriptions', as('ann'), { ...subscription, endpoint: subscription.endpoint + 'x' });
    expect((await api('DELETE', `/push-subscriptions/${other.body.id}`, as('ann'))).status).to.equal(204);
    expect((await api('GET', '/push-subscriptions', as('ann'))).body.subscriptions).to.deep.equal([]);
  });

  it('registers and unregisters FCM device tokens', async () => {
    const created = await api('POST', '/devices', as('ann'), { token: 'fcm-token-1', platform: 'android' });
    expect(created.status).to.equal(201);
    expect(created.body).to.include({ token: 'fcm-token-1', platform: 'android' });
    await api('POST', '/devices', as('ann'), { token: 'fcm-token-2', platform: 'ios' });
    expect((await api('GET', '/devices', as('ann'))).body.devices.map((d: { platform: string }) => d.platform)).to.deep.equal(['android', 'ios']);
    expectError(await api('POST', '/devices', as('ann'), { token: 'fcm-token-3', platform: 'palm' }), 400, 'bad_request');
    expectError(await api('POST', '/devices', as('ann'), { token: 'fcm-token-3', platform: 'ios', extra: 1 }), 400, 'bad_request');
    expect((await api('DELETE', `/devices/${created.body.id}`, as('ann'))).status).to.equal(204);
    expect((await api('DELETE', '/devices', as('ann'), { token: 'fcm-token-2' })).status).to.equal(204);
    expectError(await api('DELETE', '/devices', as('ann'), { token: 'fcm-token-2' }), 404, 'not_found');
  });

  it('turns single subscriptions and devices off and on, names them, and lists both', async () => {
    const subscription = { endpoint: 'https://push.example.com/wpush/v2/patch', expirationTime: null, keys: { p256dh: P256, auth: AUTH } };
    const sub = (await api('POST', '/push-subscriptions', as('ann'), subscription)).body;
    expect(sub).to.include({ enabled: true, label: null });
    const patched = await api('PATCH', `/push-subscriptions/${sub.id}`, as('ann'), { enabled: false, label: 'Work laptop' });
    expect(patched.status, JSON.stringify(patched.body)).to.equal(200);
    expect(patched.body).to.include({ id: sub.id, enabled: false, label: 'Work laptop', device_type: 'web' });
    expect((await api('GET', '/push-subscriptions', as('ann'))).body.subscriptions).to.deep.equal([patched.body]);
    expect((await api('PATCH', `/push-subscriptions/${sub.id}?user=ann`, key, { enabled: true })).body).to.include({ enabled: true, label: 'Work laptop' });
    expectError(await api('PATCH', `/push-subscriptions/${sub.id}`, as('bob'), { enabled: false }), 404, 'not_found');
    expectError(await api('PATCH', `/push-subscriptions/${sub.id}`, as('ann'), { enabled: 'off' }), 400, 'bad_request');
    expectError(await api('PATCH', `/push-subscriptions/${sub.id}`, as('ann'), { endpoint: 'x' }), 400, 'bad_request');
    expectError(await api('PATCH', `/push-subscriptions/${sub.id}`, as('ann'), {}), 400, 'bad_request');

    const phone = (await api('POST', '/devices', as('ann'), { token: 'fcm-patch-1', platform: 'android' })).body;
    await api('POST', '/devices', as('ann'), { token: 'fcm-patch-2', platform: 'android' });
    const muted = await api('PATCH', `/devices/${phone.id}`, as('ann'), { enabled: false, label: 'Old phone' });
    expect(muted.status, JSON.stringify(muted.body)).to.equal(200);
    expect(muted.body).to.include({ id: phone.id, token: 'fcm-patch-1', enabled: false, label: 'Old phone' });
    const listed = (await api('GET', '/devices', as('ann'))).body.devices as Array<{ token: string; enabled: boolean; label: string | null }>;
    expect(listed.map((d) => [d.token, d.enabled, d.label])).to.deep.equal([
      ['fcm-patch-1', false, 'Old phone'],
      ['fcm-patch-2', true, null],
    ]);
    expect((await api('PATCH', `/devices/${phone.id}`, as('ann'), { label: null })).body).to.include({ enabled: false, label: null });
    expectError(await api('PATCH', `/devices/${phone.id}`, as('bob'), { enabled: true }), 404, 'not_found');
    expectError(await api('PATCH', '/devices/nope', as('ann'), { enabled: true }), 404, 'not_found');
    expectError(await api('PATCH', `/devices/${phone.id}`, as('ann'), { label: 'x'.repeat(101) }), 400, 'bad_request');
  });

  it('gives the VAPID public key, or 404 when web push is off', async () => {
    expect((await api('GET', '/vapid-public-key', as('ann'))).body).to.deep.equal({ public_key: vapid.publicKey });
    await new Promise<void>((resolve) => server.close(() => resolve()));
    base = await serve(null);
    expectError(await api('GET', '/vapid-public-key', as('ann')), 404, 'not_found');
  });
});
