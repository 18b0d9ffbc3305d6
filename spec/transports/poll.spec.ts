import { expect } from 'chai';
import { compareIds } from '../../lib/protocol/event-id.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { deleteKeysWithPrefix, testRedisUrl } from '../support/redis.js';

describe('long-polling /v1/poll', function () {
  this.timeout(30_000);
  let g: TestGateway;
  let key: string;
  const token = (claims: Record<string, unknown> = {}) =>
    g.token({ sub: 'ann', tid: 'acme', channels: ['team:*', 'short:*'], ...claims });
  const poll = (query: string, base = g.url) => request(`${base}/v1/poll?${query}`);
  const publish = async (channel: string, data: unknown, base = g.url, withKey = key) =>
    (await request(`${base}/v1/channels/${channel}/events`, { token: withKey, body: { event: 'n', data } })).body.id as string;

  before(async () => {
    g = await startGateway({ redisUrl: testRedisUrl(), override: { namespaces: { short: { retention: { count: 5 } } } } });
    key = await g.serverKey('acme');
  });
  after(async () => {
    await g.close();
    await deleteKeysWithPrefix(g.keyPrefix);
  });

  it('without a cursor answers at once with no frames and the current cursor', async () => {
    const t0 = Date.now();
    const r = await poll(`channels=team:p1,team:p2&token=${token()}`);
    expect(r.status).to.equal(200);
    expect(r.body.frames).to.deep.equal([]);
    expect(r.body.cursor).to.be.a('string').and.match(/^[A-Za-z0-9_-]+$/);
    expect(Date.now() - t0).to.be.below(1000);
  });

  it('answers at once with what waits after the cursor, then the next poll goes on from the new cursor', async () => {
    const start = (await poll(`channels=team:w1,team:w2&token=${token()}`)).body.cursor;
    const ids = [await publish('team:w1', 1), await publish('team:w2', 2), await publish('team:w1', 3)];
    const t0 = Date.now();
    const r = await poll(`channels=team:w1,team:w2&token=${token()}&cursor=${start}`);
    expect(Date.now() - t0).to.be.below(1000);
    expect(r.body.frames.map((f: any) => f.id)).to.have.members(ids);
    expect(r.body.frames.filter((f: any) => f.channel === 'team:w1').map((f: any) => f.data)).to.deep.equal([1, 3]);
    const id4 = await publish('team:w2', 4);
    const r2 = await poll(`channels=team:w1,team:w2&token=${token()}&cursor=${r.body.cursor}`);
    expect(r2.body.frames.map((f: any) => f.id)).to.deep.equal([id4]);
  });

  it('holds until something arrives, then answers with it', async () => {
    const start = (await poll(`channels=team:hold&token=${token()}`)).body.cursor;
    const t0 = Date.now();
    const pending = poll(`channels=team:hold&token=${token()}&cursor=${start}&timeout=10`);
    await new Promise((r) => setTimeout(r, 300));
    const id = await publish('team:hold', 'late');
    const r = await pending;
    expect(Date.now() - t0).to.be.within(250, 3000);
    expect(r.body.frames.map((f: any) => f.id)).to.deep.equal([id]);
  });

  it('answers empty frames at the timeout', async () => {
    const start = (await poll(`channels=team:quiet&token=${token()}`)).body.cursor;
    const t0 = Date.now();
    const r = await poll(`channels=team:quiet&token=${token()}&cursor=${start}&timeout=1`);
    expect(Date.now() - t0).to.be.within(900, 2500);
    expect(r.body.frames).to.deep.equal([]);
    expect(r.body.cursor).to.equal(start);
  });

  it('refuses a forbidden channel (403), a bad timeout or cursor (400), no token (401)', async () => {
    expect((await poll(`channels=team:1,secret:1&token=${token()}`)).status).to.equal(403);
    expect((await poll(`channels=team:1&token=${token()}&timeout=0`)).status).to.equal(400);
    expect((await poll(`channels=team:1&token=${token()}&timeout=31`)).status).to.equal(400);
    expect((await poll(`channels=team:1&token=${token()}&cursor=!!`)).status).to.equal(400);
    const r = await poll(`channels=team:1`);
    expect(r.status).to.equal(401);
    expect(r.body.error.code).to.equal('unauthorized');
  });

  it('puts a reset frame before the retained events when the cursor is older than the retention', async () => {
    const start = (await poll(`channels=short:p&token=${token()}`)).body.cursor;
    const first = await publish('short:p', 0);
    const c1 = (await poll(`channels=short:p&token=${token()}&cursor=${start}`)).body;
    expect(c1.frames.map((f: any) => f.id)).to.deep.equal([first]);
    const ids: string[] = [];
    for (let i = 1; i <= 20; i++) ids.push(await publish('short:p', i));
    const r = await poll(`channels=short:p&token=${token()}&cursor=${c1.cursor}`);
    expect(r.body.frames[0]).to.deep.equal({ type: 'reset', channel: 'short:p' });
    const events = r.body.frames.slice(1).map((f: any) => f.id);
    expect(events.length).to.be.at.least(5);
    expect(events).to.deep.equal(ids.slice(20 - events.length));
  });

  it('keeps tenants apart', async () => {
    const start = (await poll(`channels=team:iso&token=${token({ tid: 'globex' })}`)).body.cursor;
    await publish('team:iso', 'acme');
    const r = await poll(`channels=team:iso&token=${token({ tid: 'globex' })}&cursor=${start}&timeout=1`);
    expect(r.body.frames).to.deep.equal([]);
  });

  it('needs no sticky sessions: polls alternating between two nodes get every event once, in order', async () => {
    const b = await startGateway({ redisUrl: testRedisUrl(), keyPrefix: g.keyPrefix });
    try {
      const nodes = [g.url, b.url];
      const keys = [key, await b.serverKey('acme')];
      let cursor = (await poll(`channels=team:ab&token=${token()}`)).body.cursor;
      const acked: string[] = [];
      const publishing = (async () => {
        for (let i = 0; i < 200; i++) acked.push(await publish('team:ab', i, nodes[i % 2], keys[i % 2]));
      })();
      const got: string[] = [];
      let n = 0;
      const deadline = Date.now() + 20_000;
      let done = false;
      void publishing.then(() => (done = true));
      while (Date.now() < deadline) {
        const r = await poll(`channels=team:ab&token=${token()}&cursor=${cursor}&timeout=1`, nodes[n++ % 2]);
        expect(r.status).to.equal(200);
        got.push(...r.body.frames.map((f: any) => f.id));
        cursor = r.body.cursor;
        if (done && got.length >= acked.length) break;
      }
      expect(got).to.deep.equal([...acked].sort(compareIds));
      expect(n).to.be.at.least(2);
    } finally {
      await b.close();
    }
  });

  it('a user polling again is no new presence join: two pollers do not wake each other', async () => {
    const joinsSeen = { ann: 0, bo: 0 };
    const loop = async (user: 'ann' | 'bo') => {
      const t = token({ sub: user });
      let cursor = (await poll(`channels=team:pres&token=${t}`)).body.cursor;
      for (let i = 0; i < 4; i++) {
        const r = await poll(`channels=team:pres&token=${t}&cursor=${cursor}&timeout=1`);
        joinsSeen[user] += r.body.frames.filter((f: any) => f.type === 'presence' && f.action === 'join').length;
        cursor = r.body.cursor;
      }
    };
    const t0 = Date.now();
    await Promise.all([loop('ann'), loop('bo')]);
    // Each learns of the other's first join at most once; the rest of the polls are held.
    expect(joinsSeen.ann).to.be.at.most(1);
    expect(joinsSeen.bo).to.be.at.most(1);
    expect(Date.now() - t0).to.be.above(2500);
  });

  it('releases held polls at once on shutdown', async () => {
    const c = await startGateway();
    const t = c.token({ sub: 'ann', tid: 'acme', channels: ['team:*'] });
    const start = (await request(`${c.url}/v1/poll?channels=team:1&token=${t}`)).body.cursor;
    const pending = request(`${c.url}/v1/poll?channels=team:1&token=${t}&cursor=${start}&timeout=25`);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await c.close();
    const r = await pending;
    expect(Date.now() - t0).to.be.below(3000);
    expect(r.status).to.equal(200);
    expect(r.body.frames).to.deep.equal([]);
  });
});
