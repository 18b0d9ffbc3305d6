/**
 * Quiet hours in time zones (daylight saving included), and what preferences make
 * of a notification: categories, channels, devices, quiet hours, do-not-disturb and
 * the emergency override.
 */
import { expect } from 'chai';
import { planDelivery, type PlanContext } from '../../lib/notify/delivery-policy.js';
import { quietHoursEnd } from '../../lib/notify/quiet-hours.js';
import { digestEmail, linkOf, notificationEmail } from '../../lib/notify/templates.js';
import { defaultPreferences, type NotificationPreferences } from '../../lib/store/notification-preferences.js';

const at = (iso: string) => Date.parse(iso);

describe('quiet hours', () => {
  const night = { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' };

  it('end at the local end time, across midnight', () => {
    // 23:30 in Paris (UTC+1): until 07:00 local = 06:00Z.
    expect(quietHoursEnd(at('2026-01-15T22:30:00Z'), night)).to.equal(at('2026-01-16T06:00:00Z'));
    // 03:15 local, already past midnight.
    expect(quietHoursEnd(at('2026-01-16T02:15:00Z'), night)).to.equal(at('2026-01-16T06:00:00Z'));
    // Daytime: not quiet.
    expect(quietHoursEnd(at('2026-01-16T12:00:00Z'), night)).to.equal(null);
    // The end itself is outside; the start inside.
    expect(quietHoursEnd(at('2026-01-16T06:00:00Z'), night)).to.equal(null);
    expect(quietHoursEnd(at('2026-01-15T21:00:00Z'), night)).to.equal(at('2026-01-16T06:00:00Z'));
  });

  it('work within a day and in other zones', () => {
    const lunch = { start: '12:00', end: '13:30', timeZone: 'Asia/Tokyo' };
    expect(quietHoursEnd(at('2026-06-01T03:10:00Z'), lunch)).to.equal(at('2026-06-01T04:30:00Z'));
    expect(quietHoursEnd(at('2026-06-01T05:00:00Z'), lunch)).to.equal(null);
    expect(quietHoursEnd(at('2026-06-01T03:10:00Z'), { start: '00:00', end: '23:59', timeZone: 'UTC' })).to.equal(at('2026-06-01T23:59:00Z'));
  });

  it('end at the local time on the night the clocks change', () => {
    // Paris springs forward on 29 March 2026 at 02:00; 07:00 that morning is CEST (05:00Z).
    expect(quietHoursEnd(at('2026-03-28T22:00:00Z'), night)).to.equal(at('2026-03-29T05:00:00Z'));
    // …and falls back on 25 October 2026; 07:00 is CET again (06:00Z).
    expect(quietHoursEnd(at('2026-10-24T21:00:00Z'), night)).to.equal(at('2026-10-25T06:00:00Z'));
  });
});

describe('delivery plan', () => {
  const ctx = (extra: Partial<PlanContext> = {}): PlanContext => ({
    category: 'room',
    event: 'message.created',
    priority: 'normal',
    defaultQuietHours: null,
    now: at('2026-01-15T12:00:00Z'),
    ...extra,
  });
  const prefs = (p: Partial<NotificationPreferences>): NotificationPreferences => ({ ...defaultPreferences(), ...p });

  it('allows every channel by default, now', () => {
    expect(planDelivery(defaultPreferences(), ctx())).to.deep.equal({ notify: true, channels: ['webpush', 'fcm', 'email'], excludedDevices: [], delayUntil: null, held: false });
  });

  it('turns notifications, categories, event names, channels and devices off', () => {
    expect(planDelivery(prefs({ enabled: false }), ctx()).notify).to.equal(false);
    expect(planDelivery(prefs({ categories: { room: false } }), ctx()).notify).to.equal(false);
    expect(planDelivery(prefs({ categories: { room: false, 'message.created': true } }), ctx()).notify).to.equal(true);
    expect(planDelivery(prefs({ categories: { room: { email: false } } }), ctx()).channels).to.deep.equal(['webpush', 'fcm']);
    expect(planDelivery(prefs({ channels: { fcm: false } }), ctx()).channels).to.deep.equal(['webpush', 'email']);
    expect(planDelivery(prefs({ devices: { ios: false, web: true } }), ctx()).excludedDevices).to.deep.equal(['ios']);
  });

  it('delays in quiet hours (own or default), holds back during DND; emergencies go through both', () => {
    const quiet = { start: '11:00', end: '14:00', timeZone: 'UTC' };
    expect(planDelivery(prefs({ quietHours: quiet }), ctx()).delayUntil).to.equal(at('2026-01-15T14:00:00Z'));
    expect(planDelivery(defaultPreferences(), ctx({ defaultQuietHours: { start: '11:00', end: '13:00', time_zone: 'UTC' } })).delayUntil).to.equal(at('2026-01-15T13:00:00Z'));
    const dnd = prefs({ dndUntil: new Date(at('2026-01-15T13:00:00Z')), quietHours: quiet });
    expect(planDelivery(dnd, ctx())).to.include({ notify: true, held: true, delayUntil: null }).and.to.have.property('channels').that.is.empty;
    expect(planDelivery(dnd, ctx({ now: at('2026-01-15T13:30:00Z') }))).to.include({ held: false, delayUntil: at('2026-01-15T14:00:00Z') });
    expect(planDelivery(dnd, ctx({ priority: 'emergency' }))).to.deep.include({ held: false, delayUntil: null, channels: ['webpush', 'fcm', 'email'] });
  });
});

describe('email templates', () => {
  const n = { title: 'Paid <now>', body: 'a & b', channel: 'user:ann', createdAt: new Date('2026-01-15T12:00:00Z'), data: { url: 'javascript:alert(1)' } };

  it('escape HTML, keep text as it is, and only link http(s) URLs', () => {
    const mail = notificationEmail(n, { baseUrl: null });
    expect(mail.subject).to.equal('Paid <now>');
    expect(mail.text).to.include('Paid <now>').and.include('a & b').and.not.include('javascript');
    expect(mail.html).to.include('Paid &lt;now&gt;').and.include('a &amp; b').and.not.include('javascript');
    expect(linkOf({ url: '/x?a=1' }, 'https://app.example.com')).to.equal('https://app.example.com/x?a=1');
    expect(linkOf({ url: '/x' }, null)).to.equal(null);
    expect(linkOf({ url: '//evil.example.com/x' }, 'https://app.example.com')).to.equal(null);
  });

  it('list the digest items and count the rest', () => {
    const mail = digestEmail([n, { ...n, title: 'Second', data: {} }], 25, { baseUrl: null });
    expect(mail.subject).to.equal('You have 25 unread notifications');
    expect(mail.text).to.include('* Paid <now>: a & b').and.include('* Second').and.include('…and 23 more.');
    expect(mail.html).to.include('<strong>Paid &lt;now&gt;</strong>');
  });
});
