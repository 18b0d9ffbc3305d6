/**
 * The rule language and the configuration of notifications: who is told of an
 * event, what the configuration file may say, and the credentials in the
 * environment.
 */
import { expect } from 'chai';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  defaultNotificationSettings,
  mergeNotificationSettings,
  notificationsOverrideSchema,
  notificationsSchema,
  readNotificationCredentials,
} from '../../lib/config/notifications.js';
import type { LogEvent } from '../../lib/engine/engine.js';
import { generateVapidKeys } from '../../lib/notify/vapid.js';
import { describe as describeEvent, matchRule, mentionsOf, recipientsOf, type RoomMembers } from '../../lib/notify/rules.js';
import type { Priority } from '../../lib/protocol/frames.js';

const rooms: RoomMembers = {
  async members(_tenant, roomId) {
    return roomId === 'r1' ? [{ userId: 'ann' }, { userId: 'bob' }, { userId: 'cat' }] : [];
  },
};

function event(channel: string, name: string, data: unknown, priority: Priority = 'normal', publisher: string | null = null): LogEvent {
  return {
    tenant: 't',
    id: '1700000000000-0',
    channel,
    event: name,
    dataJson: JSON.stringify(data),
    timestamp: new Date(1700000000000).toISOString(),
    priority,
    publisher: publisher ? { id: publisher } : null,
  };
}

const who = async (rules: unknown, e: LogEvent) => {
  const settings = notificationsSchema.parse({ rules });
  const rule = matchRule(settings.rules, e);
  return rule ? Object.fromEntries(await recipientsOf(rule, e, rooms)) : null;
};

describe('notification rules', () => {
  it('has the documented defaults', () => {
    const d = defaultNotificationSettings();
    expect(d).to.deep.equal({
      rules: {
        user: { notify: 'owner', mentions: false },
        dm: { notify: 'participants', mentions: false },
        room: { notify: 'members', mentions: true },
      },
      default_quiet_hours: null,
      digest: { enabled: true, hour: 8, time_zone: 'UTC' },
      retry: { attempts: 5, backoff_ms: 1000 },
      email: { from: 'Streamgate <no-reply@localhost>', base_url: null },
      history_days: 90,
    });
  });

  it('takes history_days, and categories as long as namespace names', () => {
    const ns = 'n'.repeat(128);
    const settings = notificationsSchema.parse({ rules: { [ns]: { notify: 'owner', category: 'c'.repeat(128) } }, history_days: 30 });
    expect(settings.history_days).to.equal(30);
    expect(mergeNotificationSettings(settings, { history_days: 7 }).history_days).to.equal(7);
    expect(mergeNotificationSettings(settings, {}).history_days).to.equal(30);
    expect(() => notificationsSchema.parse({ history_days: 0 })).to.throw(/history_days/);
    expect(() => notificationsSchema.parse({ rules: { x: { category: 'c'.repeat(129) } } })).to.throw(/category/);
  });

  it('tells the owner of user:<id>, both parties of a dm, a room\'s members; never the publisher', async () => {
    const rules = defaultNotificationSettings().rules;
    expect(await who(rules, event('user:ann', 'invoice.paid', {}))).to.deep.equal({ ann: 'audience' });
    expect(await who(rules, event('dm:ann:bob', 'message', { text: 'hi' }, 'normal', 'ann'))).to.deep.equal({ bob: 'audience' });
    expect(await who(rules, event('room:r1', 'message', { text: 'hi @bob, @zed' }, 'normal', 'ann'))).to.deep.equal({ bob: 'mention', cat: 'audience' });
    expect(await who(rules, event('tenant', 'announcement', {}))).to.equal(null);
    expect(await who(rules, event('goal:1', 'scored', {}))).to.equal(null);
  });

  it('never reacts to its own notification.* events', async () => {
    expect(await who({ user: { notify: 'owner' } }, event('user:ann', 'notification.created', {}))).to.equal(null);
  });

  it('takes the first rule whose events and priorities match', async () => {
    const rules = {
      room: [
        { events: ['message.*'], notify: 'members', mentions: true },
        { priorities: ['emergency'], notify: 'members' },
      ],
      ops: { notify: 'none', mentions: true, priorities: ['high', 'emergency'] },
    };
    expect(await who(rules, event('room:r1', 'message.created', { text: '@cat' }))).to.deep.equal({ ann: 'audience', bob: 'audience', cat: 'mention' });
    expect(await who(rules, event('room:r1', 'typing.note', {}))).to.equal(null);
    expect(await who(rules, event('room:r1', 'fire', {}, 'emergency'))).to.deep.equal({ ann: 'audience', bob: 'audience', cat: 'audience' });
    // `none` with mentions: whoever is named, member of something or not.
    expect(await who(rules, event('ops:db', 'disk.full', { mentions: ['oncall', { id: 'lead' }] }, 'high'))).to.deep.equal({ oncall: 'mention', lead: 'mention' });
    expect(await who(rules, event('ops:db', 'disk.full', { mentions: ['oncall'] }, 'normal'))).to.equal(null);
  });

  it('finds mentions in data.mentions and as @words in data.text', () => {
    expect(mentionsOf({ mentions: ['a', { id: 'b' }, 3, ''], text: 'ping @c. and @d-e, not mail@example.com' })).to.deep.equal(['a', 'b', 'c', 'd-e']);
    expect(mentionsOf({ text: 42 })).to.deep.equal([]);
    expect(mentionsOf({ mentions: Array.from({ length: 500 }, (_, i) => `u${i}`) })).to.have.length(100);
  });

  it('describes the notification from data.title/body/text, or from the event', () => {
    const e = { ...event('room:r1', 'message.created', {}), publisher: { id: 'ann', name: 'Ann' } };
    expect(describeEvent(e, { title: ' Hello ', body: 'Body' }, 'audience')).to.deep.equal({ title: 'Hello', body: 'Body' });
    expect(describeEvent(e, { text: 'hi @bob' }, 'mention')).to.deep.equal({ title: 'Ann mentioned you in room:r1', body: 'hi @bob' });
    expect(describeEvent(e, {}, 'audience')).to.deep.equal({ title: 'message.created in room:r1 from Ann', body: '' });
    expect(describeEvent(e, { body: 'x'.repeat(5000) }, 'audience').body).to.have.length(1000);
    // Never half an emoji.
    expect(describeEvent(e, { body: 'x' + '😀'.repeat(600) }, 'audience').body).to.equal('x' + '😀'.repeat(499));
  });

  it('refuses bad rules and settings with the path of the setting', () => {
    const issues = (value: unknown) => {
      const r = notificationsSchema.safeParse(value);
      return r.success ? [] : r.error.issues.map((i) => i.path.join('.'));
    };
    expect(issues({ rules: { room: { notify: 'everyone' } } })).to.deep.equal(['rules.room']);
    expect(issues({ rules: { room: { notify: 'members', sometimes: true } } })).to.deep.equal(['rules.room']);
    expect(issues({ digest: { hour: 24 } })).to.deep.equal(['digest.hour']);
    expect(issues({ default_quiet_hours: { start: '22:00', end: '07:00', time_zone: 'Nowhere/City' } })).to.deep.equal(['default_quiet_hours.time_zone']);
    expect(issues({ retry: { attempts: 0 } })).to.deep.equal(['retry.attempts']);
    expect(issues({ surprise: true })).to.deep.equal(['']);
  });

  it('merges an override: rules per namespace, other sections key by key', () => {
    const merged = mergeNotificationSettings(
      defaultNotificationSettings(),
      notificationsOverrideSchema.parse({ rules: { room: { notify: 'none', mentions: true } }, digest: { hour: 6 }, default_quiet_hours: { start: '22:00', end: '07:00', time_zone: 'UTC' } }),
    );
    expect(merged.rules.room).to.deep.equal({ notify: 'none', mentions: true });
    expect(merged.rules.user).to.deep.equal({ notify: 'owner', mentions: false });
    expect(merged.digest).to.deep.equal({ enabled: true, hour: 6, time_zone: 'UTC' });
    expect(merged.default_quiet_hours).to.deep.equal({ start: '22:00', end: '07:00', time_zone: 'UTC' });
  });

  describe('credentials from the environment', () => {
    const keys = generateVapidKeys();
    const vapidEnv = { VAPID_PUBLIC_KEY: keys.publicKey, VAPID_PRIVATE_KEY: keys.privateKey, VAPID_SUBJECT: 'mailto:ops@example.com' };
    const read = (env: NodeJS.ProcessEnv, production = false) => readNotificationCredentials(env, { production });

    it('reads nothing when nothing is set', () => {
      expect(read({})).to.deep.equal({ vapid: null, fcm: null, smtpUrl: null, extraCa: null, fcmAddress: null, allowPrivateEndpoints: false });
    });

    it('reads VAPID keys made by generateVapidKeys, and names what is missing or wrong', () => {
      expect(read(vapidEnv).vapid).to.deep.equal({ publicKey: keys.publicKey, privateKey: keys.privateKey, subject: 'mailto:ops@example.com' });
      expect(() => read({ VAPID_PUBLIC_KEY: keys.publicKey })).to.throw(/VAPID_PRIVATE_KEY, VAPID_SUBJECT/);
      expect(() => read({ ...vapidEnv, VAPID_PRIVATE_KEY: keys.publicKey })).to.throw(/VAPID_PRIVATE_KEY/);
      expect(() => read({ ...vapidEnv, VAPID_SUBJECT: 'ops@example.com' })).to.throw(/VAPID_SUBJECT/);
    });

    it('reads the FCM service account as JSON or from a file', () => {
      const account = { type: 'service_account', project_id: 'p1', client_email: 'sa@p1.iam.gserviceaccount.com', private_key: '-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n' };
      const expected = { projectId: 'p1', clientEmail: 'sa@p1.iam.gserviceaccount.com', privateKey: '-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n' };
      expect(read({ FCM_SERVICE_ACCOUNT: JSON.stringify(account) }).fcm).to.deep.equal(expected);
      const file = join(mkdtempSync(join(tmpdir(), 'sgt-fcm-')), 'sa.json');
      writeFileSync(file, JSON.stringify(account));
      expect(read({ FCM_SERVICE_ACCOUNT: file }).fcm).to.deep.equal(expected);
      expect(() => read({ FCM_SERVICE_ACCOUNT: '{"project_id": "p"}' })).to.throw(/client_email/);
      expect(() => read({ FCM_SERVICE_ACCOUNT: '/no/such/file.json' })).to.throw(/not JSON|readable file/);
    });

    it('never echoes FCM_SERVICE_ACCOUNT in its errors', () => {
      const secret = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-very-secret';
      for (const value of [`-----BEGIN PRIVATE KEY-----\n${secret}\n-----END PRIVATE KEY-----`, `"{${secret}}"`, `${secret}`, `/tmp/${secret}/sa.json`]) {
        let message = '';
        try {
          read({ FCM_SERVICE_ACCOUNT: value });
        } catch (err) {
          message = (err as Error).message;
        }
        expect(message).to.match(/^FCM_SERVICE_ACCOUNT: /);
        expect(message).to.not.include(secret);
        expect(message).to.not.include('BEGIN');
      }
      const file = join(mkdtempSync(join(tmpdir(), 'sgt-fcm-')), 'sa.json');
      writeFileSync(file, `not json ${secret}`);
      expect(() => read({ FCM_SERVICE_ACCOUNT: file })).to.throw(/not JSON/).and.satisfy((e: unknown) => !String(e).includes(secret));
      expect(() => read({ FCM_SERVICE_ACCOUNT: `{"project_id": "${secret}"` })).to.throw(/not JSON/);
      try {
        read({ FCM_SERVICE_ACCOUNT: `{"project_id": "${secret}"` });
      } catch (err) {
        expect((err as Error).message).to.not.include(secret);
      }
    });

    it('checks SMTP_URL and refuses the FCM test hook in production', () => {
      expect(read({ SMTP_URL: 'smtps://u:p@mail.example.com:465' }).smtpUrl).to.equal('smtps://u:p@mail.example.com:465');
      expect(() => read({ SMTP_URL: 'http://mail' })).to.throw(/SMTP_URL/);
      expect(read({ NOTIFY_FCM_ADDRESS: '127.0.0.1:8443' }).fcmAddress).to.equal('127.0.0.1:8443');
      expect(() => read({ NOTIFY_FCM_ADDRESS: '127.0.0.1:8443' }, true)).to.throw(/production/);
      expect(read({ NOTIFY_ALLOW_PRIVATE_ENDPOINTS: '1' }).allowPrivateEndpoints).to.equal(true);
      expect(() => read({ NOTIFY_ALLOW_PRIVATE_ENDPOINTS: '1' }, true)).to.throw(/production/);
    });
  });
});
