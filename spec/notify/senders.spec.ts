/**
 * The senders on their own: the address check of the web push agent (against the
 * loopback push service, so a refused connection is one that never reached it), the
 * web push payload's size and link, and FCM batches through firebase-admin.
 */
import { expect } from 'chai';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';
import { BlockedAddressError, isPublicAddress, parseIp, publicOnlyAgent, publicOnlyLookup } from '../../lib/notify/address-guard.js';
import { pushAgent } from '../../lib/notify/agents.js';
import { FCM_BATCH_SIZE, FcmSender } from '../../lib/notify/fcm-sender.js';
import { MAX_PUSH_PAYLOAD_BYTES, pushPayload, pushUrl, truncateJsonBytes } from '../../lib/notify/push-payload.js';
import { generateVapidKeys } from '../../lib/notify/vapid.js';
import { PushServiceError, WebPushSender } from '../../lib/notify/web-push-sender.js';
import type { Notification } from '../../lib/store/notifications.js';
import { FakeFcm } from '../support/fcm-server.js';
import { FakePushService, type TestSubscription } from '../support/push-service.js';
import { testPki } from '../support/test-ca.js';

const BLOCKED = [
  '0.0.0.0', '0.1.2.3', '10.0.0.1', '10.255.255.255', '100.64.0.1', '127.0.0.1', '127.1.2.3', '169.254.169.254', '172.16.0.1', '172.31.255.255',
  '192.0.0.8', '192.168.0.1', '198.18.0.1', '224.0.0.1', '239.255.255.250', '240.0.0.1', '255.255.255.255',
  '::', '::1', '[::1]', 'fe80::1', 'fe80::1%eth0', 'febf:ffff::1', 'fc00::1', 'fd12:3456:789a::1', 'ff02::1', 'fec0::1',
  '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', '::ffff:169.254.169.254', '::ffff:192.168.1.1', '0:0:0:0:0:ffff:ac10:0001',
  '::127.0.0.1', '::10.0.0.1', '64:ff9b::a00:1', '64:ff9b::127.0.0.1', '2002:7f00:1::1', '2002:a00:1::', '2001:db8::1', '100::1',
  'not-an-address', '1.2.3', '',
];
const PUBLIC = ['8.8.8.8', '1.1.1.1', '93.184.216.34', '172.15.255.255', '172.32.0.1', '192.169.0.1', '100.128.0.1', '2001:4860:4860::8888', '2607:f8b0:4004:800::200e', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1'];

function notification(extra: Partial<Notification> = {}): Notification {
  return {
    id: 'a'.repeat(32), tenant: 'acme', userId: 'ann', channel: 'user:ann', event: 'invoice.paid', eventId: '1-0', category: 'user', priority: 'normal',
    title: 'Invoice paid', body: 'body', data: {}, createdAt: new Date(0), readAt: null, delivery: {}, ...extra,
  };
}

/** A resolver that answers from a table (no DNS), as dns.lookup with `all` does. */
function table(entries: Record<string, string[]>) {
  return (hostname: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => {
    const found = entries[hostname];
    if (!found) return callback(Object.assign(new Error(`ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), []);
    callback(null, found.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));
  };
}

function lookupAll(fn: LookupFunction, hostname: string, all: boolean): Promise<unknown> {
  return new Promise((resolve, reject) => {
    (fn as (h: string, o: object, cb: (err: Error | null, ...rest: unknown[]) => void) => void)(hostname, { all }, (err, ...rest) => (err ? reject(err) : resolve(rest)));
  });
}

describe('web push address check', () => {
  it('refuses loopback, private, link-local, unique-local, unspecified, multicast and reserved addresses, IPv4-mapped ones too', () => {
    for (const a of BLOCKED) expect(isPublicAddress(a), a).to.equal(false);
    for (const a of PUBLIC) expect(isPublicAddress(a), a).to.equal(true);
  });

  it('parses IPv6 forms into the same bytes', () => {
    expect(Buffer.from(parseIp('::ffff:127.0.0.1')!)).to.deep.equal(Buffer.from(parseIp('::ffff:7f00:1')!));
    expect(Buffer.from(parseIp('0:0:0:0:0:0:0:1')!)).to.deep.equal(Buffer.from(parseIp('::1')!));
    expect(Buffer.from(parseIp('fe80::1%lo0')!)).to.deep.equal(Buffer.from(parseIp('fe80:0:0:0:0:0:0:1')!));
    expect(parseIp('1.2.3.4')).to.have.length(4);
    expect(parseIp('example.com')).to.equal(null);
  });

  it('resolves names to their public addresses only; a name with none is refused', async () => {
    const lookup = publicOnlyLookup(table({
      '127.0.0.1.nip.io': ['127.0.0.1'],
      'metadata.example': ['169.254.169.254', 'fd00::1'],
      'mixed.example': ['10.0.0.1', '93.184.216.34', '::1', '2001:4860:4860::8888'],
    }));
    for (const name of ['127.0.0.1.nip.io', 'metadata.example']) {
      const err = await lookupAll(lookup, name, true).then(() => null, (e: unknown) => e);
      expect(err, name).to.be.instanceOf(BlockedAddressError);
    }
    expect(await lookupAll(lookup, 'mixed.example', true)).to.deep.equal([[{ address: '93.184.216.34', family: 4 }, { address: '2001:4860:4860::8888', family: 6 }]]);
    expect(await lookupAll(lookup, 'mixed.example', false)).to.deep.equal(['93.184.216.34', 4]);
    // The system resolver: localhost is loopback whatever it resolves to.
    const real = publicOnlyLookup((h, o, cb) => dnsLookup(h, o, cb));
    expect(await lookupAll(real, 'localhost', true).then(() => null, (e: unknown) => e)).to.be.instanceOf(BlockedAddressError);
  });

  describe('web push through the guarded agent', function () {
    this.timeout(10_000);
    let push: FakePushService;
    const vapid = { ...generateVapidKeys(), subject: 'mailto:ops@example.com' };
    const payload = JSON.stringify({ title: 'hi' });

    before(async () => {
      push = await FakePushService.start(testPki());
    });
    after(() => push.close());

    const send = (agent: ReturnType<typeof publicOnlyAgent>, sub: Pick<TestSubscription, 'endpoint' | 'p256dh' | 'auth'>) =>
      new WebPushSender({ vapid, agent, timeoutMs: 3000 }).send(sub, payload, 'normal');

    it('never connects to a loopback endpoint, by IP literal, by name, or by a public-looking name that resolves there', async () => {
      const ca = testPki().ca;
      const before = push.received.length;
      expect(await send(publicOnlyAgent({ ca }), push.subscribe('127.0.0.1'))).to.equal('blocked');
      expect(await send(publicOnlyAgent({ ca }), push.subscribe('localhost'))).to.equal('blocked');
      const nip = push.subscribe('127.0.0.1');
      const rebinding = publicOnlyAgent({ ca, resolve: table({ 'push.127.0.0.1.nip.io': ['127.0.0.1'] }) });
      expect(await send(rebinding, { ...nip, endpoint: `https://push.127.0.0.1.nip.io:${push.port}/push/${nip.id}` })).to.equal('blocked');
      const v6 = push.subscribe('127.0.0.1');
      expect(await send(publicOnlyAgent({ ca }), { ...v6, endpoint: `https://[::ffff:127.0.0.1]:${push.port}/push/${v6.id}` })).to.equal('blocked');
      expect(push.received.length).to.equal(before);
      expect(push.refused).to.deep.equal([]);
    });

    it('in production, connects to port 443 only', async () => {
      const agent = publicOnlyAgent({ httpsPortOnly: true, resolve: table({ 'push.example.test': ['93.184.216.34'] }) });
      const sub = push.subscribe();
      expect(await send(agent, { ...sub, endpoint: 'https://push.example.test:8443/push/x' })).to.equal('blocked');
    });

    it('connects to loopback with the NOTIFY_ALLOW_PRIVATE_ENDPOINTS hook, and not without it', async () => {
      const sub = push.subscribe('localhost');
      const creds = { extraCa: testPki().ca, allowPrivateEndpoints: false };
      expect(await send(pushAgent(creds), sub)).to.equal('blocked');
      expect(await send(pushAgent({ ...creds, allowPrivateEndpoints: true }), sub)).to.equal('sent');
      expect(push.received.filter((r) => r.subscriptionId === sub.id).map((r) => r.payload)).to.deep.equal([payload]);
    });

    it('gives users a reason without network error text; the detail stays in the message', async () => {
      const sub = push.subscribe();
      const agent = pushAgent({ extraCa: testPki().ca, allowPrivateEndpoints: true });
      const err = await send(agent, { ...sub, endpoint: 'https://127.0.0.1:1/push/none' }).then(() => null, (e: unknown) => e);
      expect(err).to.be.instanceOf(PushServiceError);
      expect((err as PushServiceError).publicReason).to.equal('the push service could not be reached');
      expect((err as PushServiceError).message).to.match(/ECONNREFUSED/);
      push.respondWith(sub.id, 502);
      const refused = await send(agent, sub).then(() => null, (e: unknown) => e);
      expect((refused as PushServiceError).publicReason).to.equal('the push service answered HTTP 502');
      push.respondWith(sub.id, 404);
      expect(await send(agent, sub)).to.equal('gone');
    });
  });
});

describe('web push payload', () => {
  const bytes = (s: string) => Buffer.byteLength(s);

  it('is the notification as JSON when it is small', () => {
    const json = JSON.parse(pushPayload(notification({ data: { url: '/invoices/7' } }), 3)) as Record<string, unknown>;
    expect(json).to.include({ id: 'a'.repeat(32), title: 'Invoice paid', body: 'body', unread: 3, url: '/invoices/7', event_id: '1-0' });
  });

  it('stays under the byte limit with multibyte and escaped text, trimming the body first, then the title', () => {
    const emoji = '😀'.repeat(3000); // 4 bytes each
    const cjk = '漢'.repeat(5000); // 3 bytes each
    const escaped = '"\\\u0001'.repeat(2000); // 2, 2 and 6 bytes once escaped
    for (const [title, body] of [['Short', emoji], ['Short', cjk], ['Short', escaped], [cjk, emoji], [escaped, escaped]] as const) {
      const out = pushPayload(notification({ title, body, data: { url: 'https://app.example.com/x' } }), 1);
      expect(bytes(out), `${title.slice(0, 5)}/${body.slice(0, 5)}`).to.be.at.most(MAX_PUSH_PAYLOAD_BYTES);
      const json = JSON.parse(out) as { title: string; body: string; url?: string };
      expect(json.url).to.equal('https://app.example.com/x');
      expect(json.body.endsWith('…')).to.equal(true);
      expect(json.body.length).to.be.greaterThan(100);
      expect(body.startsWith(json.body.slice(0, -1))).to.equal(true);
      if (title === 'Short') expect(json.title).to.equal('Short');
      else expect(title.startsWith(json.title.slice(0, -1))).to.equal(true);
    }
    // No half characters: each cut is at a code point.
    expect(truncateJsonBytes('😀😀😀', 9)).to.equal('😀…');
    expect(truncateJsonBytes('abc', 3)).to.equal('abc');
  });

  it('leaves out links that are not http(s) or a path, or too long', () => {
    expect(pushUrl({ url: '/a/b?c=1' })).to.equal('/a/b?c=1');
    expect(pushUrl({ url: 'https://app.example.com/x' })).to.equal('https://app.example.com/x');
    expect(pushUrl({ url: 'http://app.example.com/x' })).to.equal('http://app.example.com/x');
    for (const url of ['javascript:alert(1)', 'JavaScript:alert(1)', 'data:text/html,<b>x</b>', '//evil.example/x', '/\\evil.example', 'file:///etc/passwd', 'mailto:a@b', 'x', `https://a.example/${'x'.repeat(1100)}`, 42]) {
      expect(pushUrl({ url }), String(url).slice(0, 30)).to.equal(undefined);
    }
    const json = JSON.parse(pushPayload(notification({ data: { url: 'javascript:alert(1)' } }), 0)) as Record<string, unknown>;
    expect(json).to.not.have.property('url');
  });
});

describe('FCM sender', function () {
  this.timeout(20_000);
  let fcm: FakeFcm;
  let sender: FcmSender;

  before(async () => {
    fcm = await FakeFcm.start(testPki());
    sender = await FcmSender.create({ credential: fcm.credential(), projectId: fcm.projectId, httpAgent: fcm.httpAgent(), legacyHttpTransport: true });
  });
  after(async () => {
    await sender.close();
    await fcm.close();
  });

  it(`sends more than ${FCM_BATCH_SIZE} tokens in batches of at most ${FCM_BATCH_SIZE}, outcomes in the tokens' order`, async () => {
    const tokens = Array.from({ length: FCM_BATCH_SIZE + 7 }, (_, i) => `batch-${i}`);
    fcm.invalid.add('batch-3');
    fcm.unregistered.add(`batch-${FCM_BATCH_SIZE + 2}`);
    const outcomes = await sender.send(tokens, { title: 't', body: 'b', data: {}, priority: 'normal' });
    expect(outcomes).to.have.length(tokens.length);
    expect(outcomes[3]).to.equal('invalid');
    expect(outcomes[FCM_BATCH_SIZE + 2]).to.equal('invalid');
    expect(outcomes.filter((o) => o === 'sent')).to.have.length(tokens.length - 2);
    expect(new Set(fcm.received.map((m) => m.token)).size).to.equal(tokens.length - 2);
  });
});
