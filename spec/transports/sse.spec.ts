import { expect } from 'chai';
import { EventSource } from 'eventsource';
import { compareIds } from '../../lib/protocol/event-id.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { openSse, type SseReader } from '../support/sse-reader.js';
import { deleteKeysWithPrefix, testRedisUrl } from '../support/redis.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SSE /v1/sse', function () {
  this.timeout(20_000);
  let g: TestGateway;
  let key: string;
  const readers: SseReader[] = [];
  const token = (claims: Record<string, unknown> = {}) =>
    g.token({ sub: 'ann', tid: 'acme', channels: ['team:*', 'short:*'], publish: ['team:*'], ...claims });
  const open = async (query: string, headers: Record<string, string> = {}) => {
    const r = await openSse(`${g.url}/v1/sse?${query}`, headers);
    readers.push(r);
    return r;
  };
  const publish = async (channel: string, data: unknown, tenantKey = key) =>
    (await request(`${g.url}/v1/channels/${channel}/events`, { token: tenantKey, body: { event: 'n', data } })).body.id as string;

  before(async () => {
    g = await startGateway({
      redisUrl: testRedisUrl(),
      override: { namespaces: { short: { retention: { count: 5 } } }, limits: { sse_comment_ms: 1000 } },
    });
    key = await g.serverKey('acme');
  });
  afterEach(() => {
    for (const r of readers.splice(0)) r.close();
  });
  after(async () => {
    await g.close();
    await deleteKeysWithPrefix(g.keyPrefix);
  });

  it('answers with headers that defeat buffering, a 2 KiB comment, retry, then welcome', async () => {
    const r = await open(`channels=team:1&token=${token()}`);
    expect(r.status).to.equal(200);
    expect(r.headers.get('content-type')).to.match(/^text\/event-stream/);
    expect(r.headers.get('cache-control')).to.equal('no-cache, no-transform');
    expect(r.headers.get('x-accel-buffering')).to.equal('no');
    const welcome = await r.next((f) => f.event === 'welcome');
    expect(welcome.data).to.include({ type: 'welcome' });
    expect(welcome.id).to.equal(undefined);
    const raw = r.raw();
    expect(raw.startsWith(':')).to.equal(true);
    expect(raw.indexOf('\n')).to.be.at.least(2048);
    expect(raw).to.match(/\n\nretry: \d+\n\nevent: welcome\n/);
  });

  it('carries events as event/id/data with the cursor in id, and sends keep-alive comments', async () => {
    const r = await open(`channels=team:1,team:2&token=${token()}`);
    await r.next((f) => f.event === 'welcome');
    await sleep(100);
    const id1 = await publish('team:1', 1);
    const id2 = await publish('team:2', 2);
    const e1 = await r.next((f) => f.event === 'event' && f.data.id === id1);
    const e2 = await r.next((f) => f.event === 'event' && f.data.id === id2);
    expect(e1.data).to.deep.include({ type: 'event', channel: 'team:1', data: 1 });
    expect(e1.id).to.match(/^[A-Za-z0-9_-]+$/);
    expect(e2.id).to.not.equal(e1.id);
    await sleep(1300);
    expect(r.comments.some((c) => c.trim() === 'keepalive')).to.equal(true);
  });

  it('refuses before the stream: 401 without a valid token, 403 for a forbidden channel, 400 for bad channels or cursor', async () => {
    for (const [query, status, code] of [
      ['channels=team:1', 401, 'unauthorized'],
      [`channels=team:1&token=junk`, 401, 'unauthorized'],
      [`channels=team:1,secret:1&token=${token()}`, 403, 'forbidden'],
      [`channels=user:bo&token=${token()}`, 403, 'forbidden'],
      [`token=${token()}`, 400, 'bad_request'],
      [`channels=bad%20name&token=${token()}`, 400, 'bad_request'],
      [`channels=team:1&token=${token()}&last_event_id=%21%21`, 400, 'bad_request'],
    ] as const) {
      const r = await open(query);
      expect(r.status, query).to.equal(status);
      expect(JSON.parse(r.raw()).error.code, query).to.equal(code);
    }
    const many = Array.from({ length: 101 }, (_, i) => `team:${i}`).join(',');
    expect((await open(`channels=${many}&token=${token()}`)).status).to.equal(400);
  });

  it('resumes two channels from Last-Event-ID (header or last_event_id) with exactly what was missed, in order', async () => {
    const r = await open(`channels=team:a,team:b&token=${token()}`);
    await r.next((f) => f.event === 'welcome');
    const seen = [await publish('team:a', 'a1'), await publish('team:b', 'b1')];
    const last = await r.next((f) => f.event === 'event' && f.data.id === seen[1]);
    r.close();
    const missedA = [await publish('team:a', 'a2'), await publish('team:a', 'a3')];
    const missedB = [await publish('team:b', 'b2')];
    for (const how of ['header', 'query'] as const) {
      const again =
        how === 'header'
          ? await open(`channels=team:a,team:b&token=${token()}`, { 'last-event-id': last.id! })
          : await open(`channels=team:a,team:b&token=${token()}&last_event_id=${last.id}`);
      await again.next((f) => f.event === 'event' && f.data.id === missedA[1]);
      await again.next((f) => f.event === 'event' && f.data.id === missedB[0]);
      await sleep(100);
      const events = again.frames.filter((f) => f.event === 'event');
      expect(events.filter((e) => e.data.channel === 'team:a').map((e) => e.data.data), how).to.deep.equal(['a2', 'a3']);
      expect(events.filter((e) => e.data.channel === 'team:b').map((e) => e.data.data), how).to.deep.equal(['b2']);
      expect(again.frames.some((f) => f.event === 'reset')).to.equal(false);
    }
  });

  it('a channel with no event yet resumes from its start, so nothing published in between is lost', async () => {
    const r = await open(`channels=team:a2,team:empty&token=${token()}`);
    await r.next((f) => f.event === 'welcome');
    const first = await publish('team:a2', 1);
    const f1 = await r.next((f) => f.event === 'event' && f.data.id === first);
    r.close();
    const missed = await publish('team:empty', 'x');
    const again = await open(`channels=team:a2,team:empty&token=${token()}&last_event_id=${f1.id}`);
    const got = await again.next((f) => f.event === 'event' && f.data.id === missed);
    expect(got.data.data).to.equal('x');
  });

  it('sends reset, then the retained events, when the cursor is older than the retention', async () => {
    const r = await open(`channels=short:1&token=${token()}`);
    await r.next((f) => f.event === 'welcome');
    const first = await publish('short:1', 0);
    const f0 = await r.next((f) => f.event === 'event' && f.data.id === first);
    r.close();
    const ids: string[] = [];
    for (let i = 1; i <= 20; i++) ids.push(await publish('short:1', i));
    const again = await open(`channels=short:1&token=${token()}&last_event_id=${f0.id}`);
    const reset = await again.next((f) => f.event === 'reset');
    expect(reset.data).to.deep.equal({ type: 'reset', channel: 'short:1' });
    expect(reset.id).to.equal(undefined);
    await again.next((f) => f.event === 'event' && f.data.id === ids[19]);
    const after = again.frames.slice(again.frames.indexOf(reset) + 1).filter((f) => f.event === 'event').map((f) => f.data.id);
    expect(after.length).to.be.at.least(5);
    expect(after).to.deep.equal(ids.slice(20 - after.length));
  });

  it("keeps tenants apart: another tenant's stream of the same channel sees nothing", async () => {
    const other = await open(`channels=team:iso&token=${token({ tid: 'globex' })}`);
    const mine = await open(`channels=team:iso&token=${token()}`);
    await other.next((f) => f.event === 'welcome');
    await mine.next((f) => f.event === 'welcome');
    const id = await publish('team:iso', 'acme');
    await mine.next((f) => f.event === 'event' && f.data.id === id);
    await sleep(150);
    expect(other.frames.filter((f) => f.event === 'event')).to.deep.equal([]);
  });

  it('works with a real EventSource client, which resumes by itself after the server ends the stream', async () => {
    const es = new EventSource(`${g.url}/v1/sse?channels=team:es&token=${token()}`);
    const got: Array<{ id: string; data: unknown }> = [];
    es.addEventListener('event', (m) => {
      const f = JSON.parse(m.data);
      got.push({ id: f.id, data: f.data });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        es.addEventListener('welcome', () => resolve());
        setTimeout(() => reject(new Error('no welcome')), 5000);
      });
      const a = await publish('team:es', 'before');
      for (let i = 0; i < 50 && !got.some((e) => e.id === a); i++) await sleep(20);
      // the server ends every stream (as in a deploy); EventSource reconnects with Last-Event-ID
      g.gateway.connections.closeAll(1001, 'going away');
      const b = await publish('team:es', 'while away');
      for (let i = 0; i < 250 && !got.some((e) => e.id === b); i++) await sleep(20);
      const c = await publish('team:es', 'after');
      for (let i = 0; i < 100 && !got.some((e) => e.id === c); i++) await sleep(20);
      expect(got.map((e) => e.data)).to.deep.equal(['before', 'while away', 'after']);
      for (let i = 1; i < got.length; i++) expect(compareIds(got[i - 1]!.id, got[i]!.id)).to.equal(-1);
    } finally {
      es.close();
    }
  });

  it('GET /v1/announcements streams the tenant channel through sse-channel', async () => {
    const ann = await openSse(`${g.url}/v1/announcements?token=${token()}`);
    readers.push(ann);
    expect(ann.status).to.equal(200);
    expect(ann.headers.get('content-type')).to.match(/text\/event-stream/);
    await sleep(100);
    const id = await publish('tenant', { notice: 'maintenance at 22:00' });
    const f = await ann.next((x) => x.event === 'event');
    expect(f.data).to.deep.include({ type: 'event', id, channel: 'tenant' });
    expect(f.data.data).to.deep.equal({ notice: 'maintenance at 22:00' });
    const other = await openSse(`${g.url}/v1/announcements?token=${token({ tid: 'globex' })}`);
    readers.push(other);
    await sleep(100);
    await publish('tenant', 'acme only');
    await sleep(150);
    expect(other.frames.filter((x) => x.event === 'event')).to.deep.equal([]);
    expect((await openSse(`${g.url}/v1/announcements`)).status).to.equal(401);
  });
});
