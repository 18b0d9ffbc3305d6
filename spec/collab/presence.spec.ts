import { expect } from 'chai';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { connect, type Frame, type TestClient } from '../support/ws-client.js';
import { openSse, type SseReader } from '../support/sse-reader.js';
import { deleteKeysWithPrefix, testRedisUrl } from '../support/redis.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const engine of ['memory', 'redis'] as const) {
  describe(`presence, typing and receipts (${engine} engine)`, function () {
    this.timeout(20_000);
    let g: TestGateway;
    const clients: TestClient[] = [];
    const readers: SseReader[] = [];
    const tokenFor = (sub: string, name?: string) =>
      g.token({ sub, tid: 'acme', ...(name ? { name } : {}), channels: ['team:*', 'eval:*', 'user:*'], publish: ['team:*', 'eval:*'] });
    const open = async (sub: string, opts: { name?: string; device?: string } = {}) => {
      const c = await connect(g.url, tokenFor(sub, opts.name), opts.device ? { device: opts.device } : {});
      clients.push(c);
      return c;
    };
    const presenceOf = (c: TestClient, channel: string) => c.frames.filter((f) => f.type === 'presence' && f.channel === channel);

    before(async () => {
      g = await startGateway({
        ...(engine === 'redis' ? { redisUrl: testRedisUrl() } : {}),
        override: { namespaces: { eval: { anonymous: true } }, presence: { grace_ms: 400, timeout_ms: 3000 } },
      });
    });
    afterEach(async () => {
      await Promise.all(clients.splice(0).map((c) => c.close()));
      for (const r of readers.splice(0)) r.close();
    });
    after(async () => {
      await g.close();
      if (engine === 'redis') await deleteKeysWithPrefix(g.keyPrefix);
    });

    it('announces a join to the others, lists members, and aggregates devices: a user leaves when the last connection goes', async () => {
      const watcher = await open('watcher');
      await watcher.request({ type: 'subscribe', channel: 'team:p' });
      const web = await open('ann', { name: 'Ann', device: 'web' });
      await web.request({ type: 'subscribe', channel: 'team:p' });
      const join = await watcher.next((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'ann');
      expect(join.user).to.include({ id: 'ann', name: 'Ann', status: 'online', device: 'web', custom_status: null });
      expect(join.user.last_seen).to.be.a('string');
      expect(presenceOf(web, 'team:p').filter((f) => f.user?.id === 'ann')).to.deep.equal([]);
      const mobile = await open('ann', { name: 'Ann', device: 'mobile' });
      await mobile.request({ type: 'subscribe', channel: 'team:p' });
      const members = await watcher.request({ type: 'members', channel: 'team:p' });
      expect(members.count).to.equal(2);
      expect(members.members.map((m: Frame) => m.id).sort()).to.deep.equal(['ann', 'watcher']);
      const http = await request(`${g.url}/v1/channels/team:p/presence`, { token: tokenFor('watcher') });
      expect(http.body.count).to.equal(2);

      // one device goes: ann is still there, nobody hears a leave
      await web.close();
      await sleep(1500);
      expect(presenceOf(watcher, 'team:p').filter((f) => f.action === 'leave')).to.deep.equal([]);
      let users = (await request(`${g.url}/v1/presence?users=ann,nobody`, { token: tokenFor('watcher') })).body.users;
      expect(users[0]).to.include({ id: 'ann', status: 'online' });
      expect(users[1]).to.deep.equal({ id: 'nobody', status: 'offline', last_seen: null, device: null, custom_status: null });

      // the last one goes: a leave after the grace period, with last_seen
      const t0 = Date.now();
      await mobile.close();
      const leave = await watcher.next((f) => f.type === 'presence' && f.action === 'leave' && f.user.id === 'ann', 5000);
      expect(Date.now() - t0).to.be.within(300, 3000);
      expect(leave.user).to.include({ id: 'ann', status: 'offline' });
      expect(Date.parse(leave.user.last_seen)).to.be.closeTo(Date.now(), 5000);
      await sleep(500);
      users = (await request(`${g.url}/v1/presence?users=ann`, { token: tokenFor('watcher') })).body.users;
      expect(users[0].status).to.equal('offline');
      expect(users[0].last_seen).to.be.a('string');
    });

    it('does not flap: a reconnect within the grace period sends no leave and no join', async () => {
      const watcher = await open('watcher');
      await watcher.request({ type: 'subscribe', channel: 'team:flap' });
      const a = await open('bo');
      await a.request({ type: 'subscribe', channel: 'team:flap' });
      await watcher.next((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'bo');
      await a.close();
      const b = await open('bo');
      await b.request({ type: 'subscribe', channel: 'team:flap' });
      await sleep(1500);
      const frames = presenceOf(watcher, 'team:flap').filter((f) => f.user?.id === 'bo');
      expect(frames.map((f) => f.action)).to.deep.equal(['join']);
    });

    it('sends status updates to the channels only, at most 2 per second per user, the last one winning', async () => {
      const watcher = await open('watcher');
      const outsider = await open('outsider');
      await watcher.request({ type: 'subscribe', channel: 'team:status' });
      const cy = await open('cy');
      await cy.request({ type: 'subscribe', channel: 'team:status' });
      for (let i = 0; i < 8; i++) cy.send({ type: 'presence', status: i % 2 ? 'away' : 'busy', custom_status: `step ${i}` });
      await cy.request({ type: 'ping' });
      const t0 = Date.now();
      await watcher.next((f) => f.type === 'presence' && f.action === 'update' && f.user.custom_status === 'step 7', 4000);
      const updates = presenceOf(watcher, 'team:status').filter((f) => f.action === 'update');
      expect(updates.length).to.be.within(1, 4);
      expect(updates.at(-1)!.user).to.include({ id: 'cy', status: 'away', custom_status: 'step 7' });
      expect(Date.now() - t0).to.be.below(2500);
      expect(outsider.frames.filter((f) => f.type === 'presence')).to.deep.equal([]);
      expect((await cy.request({ type: 'presence', status: 'sleeping' })).code).to.equal('bad_request');
      const put = await request(`${g.url}/v1/presence`, { method: 'PUT', token: tokenFor('cy'), body: { status: 'online', custom_status: null } });
      expect(put.status).to.equal(200);
      expect(put.body).to.include({ id: 'cy', status: 'online', custom_status: null });
    });

    it('sends only counts in anonymous namespaces, and members answers [] with the count', async () => {
      const watcher = await open('watcher');
      await watcher.request({ type: 'subscribe', channel: 'eval:9' });
      const a = await open('ann');
      await a.request({ type: 'subscribe', channel: 'eval:9' });
      const count = await watcher.next((f) => f.type === 'presence' && f.action === 'count' && f.count === 2);
      expect(count).to.deep.equal({ type: 'presence', channel: 'eval:9', action: 'count', count: 2 });
      const m = await watcher.request({ type: 'members', channel: 'eval:9' });
      expect(m.members).to.deep.equal([]);
      expect(m.count).to.equal(2);
      expect(presenceOf(watcher, 'eval:9').some((f) => f.user)).to.equal(false);
      await a.close();
      await watcher.next((f) => f.type === 'presence' && f.action === 'count' && f.count === 1, 5000);
    });

    it('refuses members where presence is off', async () => {
      const c = await open('ann');
      expect((await c.request({ type: 'members', channel: 'user:ann' })).code).to.equal('forbidden');
    });

    it('sends typing to the others only, and stops it by itself 3 s after the last start', async () => {
      const typer = await open('ann', { name: 'Ann' });
      const other = await open('bo');
      await typer.request({ type: 'subscribe', channel: 'team:t' });
      await other.request({ type: 'subscribe', channel: 'team:t' });
      expect(await typer.request({ type: 'typing', channel: 'team:t', state: 'start' })).to.include({ type: 'reply' });
      const start = await other.next((f) => f.type === 'typing');
      expect(start).to.deep.equal({ type: 'typing', channel: 'team:t', user: { id: 'ann', name: 'Ann' }, state: 'start' });
      const t0 = Date.now();
      const stop = await other.next((f) => f.type === 'typing' && f.state === 'stop', 5000);
      expect(Date.now() - t0).to.be.within(2500, 4000);
      expect(stop.user.id).to.equal('ann');
      expect(typer.frames.filter((f) => f.type === 'typing')).to.deep.equal([]);
      expect((await typer.request({ type: 'typing', channel: 'team:t', state: 'maybe' })).code).to.equal('bad_request');
      expect((await typer.request({ type: 'typing', channel: 'secret:1', state: 'start' })).code).to.equal('forbidden');
      expect((await typer.request({ type: 'typing', channel: 'user:ann', state: 'start' })).code).to.equal('forbidden');
      const http = await request(`${g.url}/v1/channels/team:t/typing`, { token: tokenFor('ann'), body: { state: 'stop' } });
      expect(http.status).to.equal(204);
    });

    it('stores receipts, signals them where the namespace has receipts, and counts unread', async () => {
      const ann = await open('ann');
      const bo = await open('bo');
      await ann.request({ type: 'subscribe', channel: 'dm:ann:bo' });
      await bo.request({ type: 'subscribe', channel: 'dm:ann:bo' });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await ann.request({ type: 'publish', channel: 'dm:ann:bo', event: 'msg', data: i })).event_id);
      ids.push((await bo.request({ type: 'publish', channel: 'dm:ann:bo', event: 'msg', data: 'bo' })).event_id);
      expect(await bo.request({ type: 'ack', channel: 'dm:ann:bo', until: ids[2] })).to.include({ type: 'reply' });
      const delivered = await ann.next((f) => f.type === 'receipt' && f.kind === 'delivered');
      expect(delivered).to.deep.equal({ type: 'receipt', channel: 'dm:ann:bo', user: { id: 'bo' }, kind: 'delivered', until: ids[2] });
      let unread = (await request(`${g.url}/v1/unread`, { token: tokenFor('bo') })).body.channels;
      expect(unread).to.deep.equal([{ channel: 'dm:ann:bo', unread: 3 }]);
      expect(await bo.request({ type: 'read', channel: 'dm:ann:bo', until: ids[1] })).to.include({ type: 'reply' });
      await ann.next((f) => f.type === 'receipt' && f.kind === 'read');
      unread = (await request(`${g.url}/v1/unread`, { token: tokenFor('bo') })).body.channels;
      expect(unread).to.deep.equal([{ channel: 'dm:ann:bo', unread: 1 }]);
      const viaHttp = await request(`${g.url}/v1/channels/dm:ann:bo/read`, { token: tokenFor('bo'), body: { until: ids[3] } });
      expect(viaHttp.status).to.equal(204);
      unread = (await request(`${g.url}/v1/unread`, { token: tokenFor('bo') })).body.channels;
      expect(unread).to.deep.equal([{ channel: 'dm:ann:bo', unread: 0 }]);
      expect(bo.frames.filter((f) => f.type === 'receipt')).to.deep.equal([]);
      // team namespaces have no receipts: stored, but no signal and no unread entry
      await ann.request({ type: 'subscribe', channel: 'team:r' });
      const e = await bo.request({ type: 'publish', channel: 'team:r', event: 'x', data: 1 });
      expect(await bo.request({ type: 'read', channel: 'team:r', until: e.event_id })).to.include({ type: 'reply' });
      await sleep(200);
      expect(ann.frames.filter((f) => f.type === 'receipt' && f.channel === 'team:r')).to.deep.equal([]);
      expect((await bo.request({ type: 'read', channel: 'dm:ann:bo', until: 'yesterday' })).code).to.equal('bad_request');
      expect((await bo.request({ type: 'read', channel: 'dm:cy:dee', until: ids[0] })).code).to.equal('forbidden');
    });

    it('shows the same presence and typing to a WebSocket client and an SSE client', async () => {
      const ws = await open('wsuser');
      await ws.request({ type: 'subscribe', channel: 'team:both' });
      const sse = await openSse(`${g.url}/v1/sse?channels=team:both&token=${tokenFor('sseuser')}`);
      readers.push(sse);
      await sse.next((f) => f.event === 'welcome');
      const joinSeenByWs = await ws.next((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'sseuser');
      const typer = await open('typer', { name: 'Ty' });
      await typer.request({ type: 'subscribe', channel: 'team:both' });
      const wsJoin = await ws.next((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'typer');
      const sseJoin = await sse.next((f) => f.event === 'presence' && f.data.action === 'join' && f.data.user.id === 'typer');
      expect(sseJoin.data.user).to.deep.include({ id: wsJoin.user.id, name: 'Ty', status: wsJoin.user.status });
      await typer.request({ type: 'typing', channel: 'team:both', state: 'start' });
      const wsTyping = await ws.next((f) => f.type === 'typing');
      const sseTyping = await sse.next((f) => f.event === 'typing');
      expect(sseTyping.data).to.deep.equal(wsTyping);
      expect(sseTyping.id).to.equal(undefined);
      expect(joinSeenByWs.user.id).to.equal('sseuser');
      // an SSE user sets status and types over HTTP
      await request(`${g.url}/v1/presence`, { method: 'PUT', token: tokenFor('sseuser'), body: { status: 'busy' } });
      await ws.next((f) => f.type === 'presence' && f.action === 'update' && f.user.id === 'sseuser' && f.user.status === 'busy');
      await request(`${g.url}/v1/channels/team:both/typing`, { token: tokenFor('sseuser'), body: { state: 'start' } });
      await ws.next((f) => f.type === 'typing' && f.user.id === 'sseuser');
    });
  });
}
