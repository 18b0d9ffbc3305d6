import { expect } from 'chai';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { connect, type TestClient } from '../support/ws-client.js';
import { openSse } from '../support/sse-reader.js';
import { startNode, killAllNodes } from '../support/node-process.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';
import { TEST_SECRET } from '../support/gateway.js';
import { signUserToken } from '../../lib/auth/tokens.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('rooms on the live wire', function () {
  this.timeout(20_000);
  let g: TestGateway;
  const clients: TestClient[] = [];
  const token = (sub: string) => g.token({ sub, tid: 'acme', name: sub.toUpperCase() });
  const open = async (sub: string) => {
    const c = await connect(g.url, token(sub));
    clients.push(c);
    return c;
  };
  const api = (sub: string, path: string, init: { method?: string; body?: unknown } = {}) =>
    request(`${g.url}/v1/rooms${path}`, { token: token(sub), ...init });

  before(async () => {
    g = await startGateway({ redisUrl: testRedisUrl() });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await g.close();
    await deleteKeysWithPrefix(g.keyPrefix);
  });

  it('lets members in by role, keeps others out, and ends a removed member\'s stream at once', async () => {
    const created = await api('ann', '', { body: { name: 'Ward 7 handover' } });
    expect(created.status).to.equal(201);
    const id = created.body.id as string;
    const channel = `room:${id}`;
    expect((await api('ann', `/${id}/members`, { body: { user_id: 'bo' } })).status).to.equal(201);
    expect((await api('ann', `/${id}/members`, { body: { user_id: 'cy', role: 'viewer' } })).status).to.equal(201);

    const bo = await open('bo');
    const cy = await open('cy');
    const dee = await open('dee');
    expect(await bo.request({ type: 'subscribe', channel })).to.include({ type: 'reply' });
    expect(await cy.request({ type: 'subscribe', channel })).to.include({ type: 'reply' });
    expect((await dee.request({ type: 'subscribe', channel })).code).to.equal('forbidden');
    expect((await dee.request({ type: 'history', channel })).code).to.equal('forbidden');
    expect((await openSse(`${g.url}/v1/sse?channels=${channel}&token=${token('dee')}`)).status).to.equal(403);
    expect((await request(`${g.url}/v1/poll?channels=${channel}&token=${token('dee')}`)).status).to.equal(403);

    const ok = await bo.request({ type: 'publish', channel, event: 'note.added', data: { text: 'bed 4 stable' } });
    expect(ok.type).to.equal('reply');
    expect((await cy.request({ type: 'publish', channel, event: 'note.added', data: {} })).code).to.equal('forbidden');
    expect((await bo.request({ type: 'publish', channel, event: 'member.removed', data: { user_id: 'cy' } })).code).to.equal('forbidden');
    await cy.next((f) => f.type === 'event' && f.id === ok.event_id);

    // presence works in rooms
    await bo.next((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'cy');

    // ann removes bo: bo hears it, then the stream ends for bo only
    expect((await api('ann', `/${id}/members/bo`, { method: 'DELETE' })).status).to.be.within(200, 204);
    const removed = await bo.next((f) => f.type === 'event' && f.event === 'member.removed');
    expect(removed.data).to.include({ user_id: 'bo' });
    const unsub = await bo.next((f) => f.type === 'unsubscribed');
    expect(unsub).to.deep.equal({ type: 'unsubscribed', channel, reason: 'removed from the room' });
    await cy.next((f) => f.type === 'event' && f.event === 'member.removed');
    const later = (await api('ann', `/${id}`, { method: 'PATCH', body: { name: 'Ward 7' } })).status;
    expect(later).to.equal(200);
    await cy.next((f) => f.type === 'event' && f.event === 'room.updated');
    await sleep(100);
    expect(bo.events(channel).some((e) => e.event === 'room.updated')).to.equal(false);
    expect((await bo.request({ type: 'subscribe', channel })).code).to.equal('forbidden');

    // room channels count for unread once you are a member
    const unread = (await request(`${g.url}/v1/unread`, { token: token('cy') })).body.channels;
    expect(unread.find((u: { channel: string }) => u.channel === channel).unread).to.be.at.least(1);

    // deleting the room ends every subscription
    expect((await api('ann', `/${id}`, { method: 'DELETE' })).status).to.be.within(200, 204);
    const gone = await cy.next((f) => f.type === 'unsubscribed');
    expect(gone.reason).to.equal('the room was deleted');
  });
});

describe('presence across nodes', function () {
  this.timeout(60_000);
  afterEach(async () => {
    await killAllNodes();
  });

  it("a node killed with SIGKILL: its users leave everyone's presence within the timeout", async () => {
    const keyPrefix = uniquePrefix();
    const config = { presence: { grace_ms: 500, timeout_ms: 3000 } };
    const a = await startNode({ redisUrl: testRedisUrl(), keyPrefix, secret: TEST_SECRET, config });
    const b = await startNode({ redisUrl: testRedisUrl(), keyPrefix, secret: TEST_SECRET, config });
    const tok = (sub: string) => signUserToken(TEST_SECRET, { sub, tid: 'acme', channels: ['team:*'] });
    const watcher = await connect(b.url, tok('watcher'));
    const doomed = await connect(a.url, tok('doomed'));
    try {
      await watcher.request({ type: 'subscribe', channel: 'team:n' });
      await doomed.request({ type: 'subscribe', channel: 'team:n' });
      await watcher.next((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'doomed');
      const t0 = Date.now();
      await a.kill();
      const leave = await watcher.next((f) => f.type === 'presence' && f.action === 'leave' && f.user.id === 'doomed', 15_000);
      const took = Date.now() - t0;
      expect(took).to.be.below(3000 + 3000);
      expect(leave.user.status).to.equal('offline');
      const members = await watcher.request({ type: 'members', channel: 'team:n' });
      expect(members.members.map((m: { id: string }) => m.id)).to.deep.equal(['watcher']);
    } finally {
      await watcher.close();
      await doomed.close().catch(() => undefined);
      // the nodes go first: a node still running would write presence after the cleanup
      await killAllNodes();
      await deleteKeysWithPrefix(keyPrefix);
    }
  });
});
