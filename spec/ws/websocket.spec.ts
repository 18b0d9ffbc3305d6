import { expect } from 'chai';
import WebSocket from 'ws';
import { compareIds } from '../../lib/protocol/event-id.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { connect, type TestClient } from '../support/ws-client.js';
import { startRedisServer } from '../support/redis-server.js';
import { testRedisUrl } from '../support/redis.js';
import { deleteKeysWithPrefix } from '../support/redis.js';
import { Store } from '../../lib/store/store.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function refused(promise: Promise<unknown>): Promise<{ status: number; body: any; headers: Record<string, string> }> {
  try {
    await promise;
  } catch (err) {
    return err as { status: number; body: any; headers: Record<string, string> };
  }
  throw new Error('connection was not refused');
}

for (const engine of ['memory', 'redis'] as const) {
  describe(`WebSocket /v1/ws (${engine} engine)`, function () {
    this.timeout(20_000);
    let g: TestGateway;
    const clients: TestClient[] = [];
    const annToken = () => g.token({ sub: 'ann', tid: 'acme', name: 'Ann', channels: ['team:*', 'eval:*'], publish: ['team:*', 'eval:*'] });
    const open = async (token = annToken(), opts = {}) => {
      const c = await connect(g.url, token, opts);
      clients.push(c);
      return c;
    };

    before(async () => {
      g = await startGateway({
        ...(engine === 'redis' ? { redisUrl: testRedisUrl() } : {}),
        override: { namespaces: { eval: { anonymous: true }, short: { retention: { count: 5 } } } },
      });
    });
    afterEach(async () => {
      await Promise.all(clients.splice(0).map((c) => c.close()));
    });
    after(async () => {
      await g.close();
      if (engine === 'redis') await deleteKeysWithPrefix(g.keyPrefix);
    });

    describe('connecting', () => {
      it('sends welcome with the connection, server time, heartbeat, user and limits', async () => {
        const c = await open(annToken(), { device: 'mobile' });
        expect(c.welcome).to.include({ type: 'welcome', heartbeat_ms: 30000 });
        expect(c.welcome.connection_id).to.be.a('string').and.not.empty;
        expect(Math.abs(Date.parse(c.welcome.server_time) - Date.now())).to.be.below(5000);
        expect(c.welcome.user).to.deep.equal({ id: 'ann', name: 'Ann' });
        expect(c.welcome.limits).to.deep.equal({ max_message_bytes: 65536, messages_per_second: 100 });
      });

      it('takes the token from the Authorization header too', async () => {
        const c = await open(annToken(), { header: true });
        expect(c.welcome.user.id).to.equal('ann');
      });

      it('refuses a missing, invalid or expired token with HTTP 401 and a JSON body before the upgrade', async () => {
        for (const token of ['', 'garbage', g.token({ sub: 'ann', tid: 'acme', ttlSeconds: -10 })]) {
          const r = await refused(connect(g.url, token));
          expect(r.status).to.equal(401);
          expect(r.body.error.code).to.equal('unauthorized');
        }
      });

      it('refuses a server key with 403 and an unknown device with 400', async () => {
        const key = await g.serverKey('acme');
        expect((await refused(connect(g.url, key))).status).to.equal(403);
        const r = await refused(connect(g.url, annToken(), { device: 'toaster' }));
        expect(r.status).to.equal(400);
        expect(r.body.error.code).to.equal('bad_request');
      });

      it('closes the 6th connection of a user with 4009 before any welcome', async () => {
        const token = g.token({ sub: 'many', tid: 'acme' });
        for (let i = 0; i < 5; i++) await open(token);
        const ws = new WebSocket(`${g.url.replace('http', 'ws')}/v1/ws?token=${token}`);
        const frames: string[] = [];
        ws.on('message', (d) => frames.push(d.toString()));
        const code = await new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)));
        expect(code).to.equal(4009);
        expect(frames).to.deep.equal([]);
        // another user is not affected, and a closed slot is free again
        await open(g.token({ sub: 'other', tid: 'acme' }));
        await clients[0]!.close();
        await sleep(50);
        await open(token);
      });
    });

    describe('operations', () => {
      it('subscribe → reply with recovered and position, then live events; unsubscribe stops them', async () => {
        const c = await open();
        const before = await request(`${g.url}/v1/channels/team:ops/events`, { token: annToken(), body: { event: 'old', data: 0 } });
        const reply = await c.request({ type: 'subscribe', channel: 'team:ops' });
        expect(reply).to.deep.include({ type: 'reply', ok: true, channel: 'team:ops', recovered: true, position: before.body.id });
        const pub = await c.request({ type: 'publish', channel: 'team:ops', event: 'goal.updated', data: { n: 1 }, priority: 'high' });
        expect(pub).to.include({ type: 'reply', ok: true });
        expect(pub.event_id).to.match(/^\d+-\d+$/);
        const ev = await c.next((f) => f.type === 'event' && f.id === pub.event_id);
        expect(ev).to.deep.equal({
          type: 'event', id: pub.event_id, channel: 'team:ops', event: 'goal.updated', data: { n: 1 },
          timestamp: pub.timestamp, priority: 'high', publisher: { id: 'ann', name: 'Ann' },
        });
        expect(c.events('team:ops').map((e) => e.event)).to.deep.equal(['goal.updated']);
        expect(await c.request({ type: 'unsubscribe', channel: 'team:ops' })).to.include({ type: 'reply', ok: true });
        await c.request({ type: 'publish', channel: 'team:ops', event: 'after', data: 2 });
        await c.request({ type: 'ping' });
        await sleep(100);
        expect(c.events('team:ops').map((e) => e.event)).to.deep.equal(['goal.updated']);
      });

      it('subscribe with since replays every retained event after it, then goes live', async () => {
        const ids: string[] = [];
        const key = await g.serverKey('acme');
        for (let i = 0; i < 5; i++) ids.push((await request(`${g.url}/v1/channels/team:replay/events`, { token: key, body: { event: 'n', data: i } })).body.id);
        const c = await open();
        const reply = await c.request({ type: 'subscribe', channel: 'team:replay', since: ids[1] });
        expect(reply).to.include({ recovered: true, position: ids[4] });
        await c.next((f) => f.type === 'event' && f.id === ids[4]);
        const idx = c.frames.indexOf(reply);
        const after = c.frames.slice(idx + 1).filter((f) => f.type === 'event').map((f) => f.id);
        expect(after).to.deep.equal(ids.slice(2));
        const all = await open();
        await all.request({ type: 'subscribe', channel: 'team:replay', since: '0-0' });
        await all.next((f) => f.type === 'event' && f.id === ids[4]);
        expect(all.events('team:replay').map((e) => e.data)).to.deep.equal([0, 1, 2, 3, 4]);
      });

      it('subscribe with a since older than retention answers recovered:false and sends what is left', async () => {
        const key = await g.serverKey('acme');
        const ids: string[] = [];
        for (let i = 0; i < 20; i++) ids.push((await request(`${g.url}/v1/channels/short:1/events`, { token: key, body: { event: 'n', data: i } })).body.id);
        const c = await open(g.token({ sub: 'ann', tid: 'acme', channels: ['short:*'] }));
        const reply = await c.request({ type: 'subscribe', channel: 'short:1', since: ids[0] });
        expect(reply.recovered).to.equal(false);
        await c.next((f) => f.type === 'event' && f.id === ids[19]);
        const got = c.events('short:1').map((e) => e.id);
        expect(got.length).to.be.at.least(5);
        expect(got).to.deep.equal(ids.slice(20 - got.length));
      });

      it('publish honours idempotency_key; history answers events and recovered', async () => {
        const c = await open();
        const a = await c.request({ type: 'publish', channel: 'team:idem', event: 'x', data: 1, idempotency_key: 'k1' });
        const b = await c.request({ type: 'publish', channel: 'team:idem', event: 'x', data: 2, idempotency_key: 'k1' });
        expect(b.event_id).to.equal(a.event_id);
        const http = await request(`${g.url}/v1/channels/team:idem/events`, { token: annToken(), body: { event: 'x', data: 3, idempotency_key: 'k1' } });
        expect(http.body.id).to.equal(a.event_id);
        const h = await c.request({ type: 'history', channel: 'team:idem' });
        expect(h).to.include({ type: 'reply', ok: true, recovered: true });
        expect(h.events.map((e: any) => e.data)).to.deep.equal([1]);
        const limited = await c.request({ type: 'history', channel: 'team:replay', limit: 2 });
        expect(limited.events).to.have.length(2);
        expect((await c.request({ type: 'history', channel: 'team:replay', limit: 0 })).code).to.equal('bad_request');
        expect((await c.request({ type: 'history', channel: 'team:replay', limit: 1001 })).code).to.equal('bad_request');
        expect((await c.request({ type: 'history', channel: 'team:replay', since: 'x' })).code).to.equal('bad_request');
      });

      it('answers ping with pong carrying the id', async () => {
        const c = await open();
        expect(await c.request({ type: 'ping', id: 'p1' })).to.deep.equal({ type: 'pong', id: 'p1' });
      });

      it('gives forbidden for channels the token does not allow, and changes nothing', async () => {
        const c = await open();
        for (const frame of [
          { type: 'subscribe', channel: 'secret:1' },
          { type: 'subscribe', channel: 'user:bo' },
          { type: 'history', channel: 'dm:bo:cy' },
          { type: 'publish', channel: 'tenant', event: 'x', data: 1 },
          { type: 'publish', channel: 'secret:1', event: 'x', data: 1 },
          { type: 'publish', channel: 'team:1', event: 'x', data: 1, publisher: { id: 'boss' } },
        ]) {
          const r = await c.request(frame);
          expect(r, JSON.stringify(frame)).to.include({ type: 'error', code: 'forbidden' });
          expect(r.message).to.be.a('string');
        }
        const key = await g.serverKey('acme');
        const h = await request(`${g.url}/v1/channels/secret:1/events`, { token: key });
        expect(h.body.events).to.deep.equal([]);
      });

      it('strips the publisher in anonymous namespaces', async () => {
        const c = await open();
        await c.request({ type: 'subscribe', channel: 'eval:1' });
        const r = await c.request({ type: 'publish', channel: 'eval:1', event: 'submitted', data: {} });
        const ev = await c.next((f) => f.type === 'event' && f.id === r.event_id);
        expect(ev).not.to.have.property('publisher');
      });
    });

    describe('malformed frames', () => {
      it('get bad_request and the connection stays open', async () => {
        const c = await open();
        const bad: Array<string | object> = [
          'not json', '[1,2]', '"str"', '42', 'null',
          { type: 'nope', id: 'a' },
          { id: 'b' },
          { type: 'subscribe', id: 'c' },
          { type: 'subscribe', id: 'd', channel: 'bad channel' },
          { type: 'subscribe', id: 'e', channel: 'team:1', since: 5 },
          { type: 'publish', id: 'f', channel: 'team:1', data: 1 },
          { type: 'publish', id: 'g', channel: 'team:1', event: 'x' },
          { type: 'publish', id: 'h', channel: 'team:1', event: 'x', data: 1, priority: 'urgent' },
          { type: 'refresh', id: 'i' },
          { type: 'subscribe', id: 42, channel: 'team:1' },
        ];
        for (const frame of bad) c.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
        await c.request({ type: 'ping' });
        const errors = c.frames.filter((f) => f.type === 'error');
        expect(errors).to.have.length(bad.length);
        for (const e of errors) expect(e.code).to.equal('bad_request');
        for (const id of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']) expect(errors.some((e) => e.id === id), id).to.equal(true);
        c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
        expect((await c.next((f) => f.type === 'error' && /binary/.test(f.message))).code).to.equal('bad_request');
        expect(c.ws.readyState).to.equal(WebSocket.OPEN);
      });

      it('closes with 1009 on a frame over max_message_bytes', async () => {
        const c = await open();
        c.send({ type: 'publish', channel: 'team:big', event: 'x', data: 'y'.repeat(70 * 1024) });
        expect((await c.closed).code).to.equal(1009);
        const key = await g.serverKey('acme');
        expect((await request(`${g.url}/v1/channels/team:big/events`, { token: key })).body.events).to.deep.equal([]);
      });

      it('answers each id exactly once', async () => {
        const c = await open();
        const ids = Array.from({ length: 30 }, (_, i) => `x${i}`);
        for (const [i, id] of ids.entries()) {
          const kind = i % 3;
          c.send(kind === 0 ? { type: 'publish', id, channel: 'team:once', event: 'e', data: i } : kind === 1 ? { type: 'subscribe', id, channel: 'team:once' } : { type: 'history', id, channel: 'nope:1' });
        }
        await c.request({ type: 'ping' });
        await sleep(100);
        for (const id of ids) {
          expect(c.frames.filter((f) => (f.type === 'reply' || f.type === 'error') && f.id === id), id).to.have.length(1);
        }
      });
    });

    describe('tenants', () => {
      it("never delivers tenant A's events to tenant B's subscriber of the same channel", async () => {
        const a = await open(g.token({ sub: 'ann', tid: 'acme', channels: ['team:*'], publish: ['team:*'] }));
        const b = await open(g.token({ sub: 'ann', tid: 'globex', channels: ['team:*'], publish: ['team:*'] }));
        await a.request({ type: 'subscribe', channel: 'team:iso', since: '0-0' });
        await b.request({ type: 'subscribe', channel: 'team:iso', since: '0-0' });
        const ra = await a.request({ type: 'publish', channel: 'team:iso', event: 'x', data: 'acme' });
        const rb = await b.request({ type: 'publish', channel: 'team:iso', event: 'x', data: 'globex' });
        await a.next((f) => f.type === 'event' && f.id === ra.event_id);
        await b.next((f) => f.type === 'event' && f.id === rb.event_id);
        await sleep(100);
        expect(a.events('team:iso').map((e) => e.data)).to.deep.equal(['acme']);
        expect(b.events('team:iso').map((e) => e.data)).to.deep.equal(['globex']);
      });
    });

    describe('the replay seam', () => {
      it('a subscriber resubscribing with since while 500 events are published gets each exactly once, in order', async function () {
        this.timeout(60_000);
        // five publishers of 100 each stay within the per-connection frame budget (burst 100)
        const pubs = await Promise.all([1, 2, 3, 4, 5].map((i) => open(g.token({ sub: `pub${i}`, tid: 'acme', publish: ['team:*'] }))));
        const sub = await open();
        await sub.request({ type: 'subscribe', channel: 'team:seam', since: '0-0' });
        const acked: string[] = [];
        const publishing = Promise.all(
          pubs.map(async (pub, p) => {
            for (let i = 0; i < 100; i += 10) {
              const replies = await Promise.all(
                Array.from({ length: 10 }, (_, j) => pub.request({ type: 'publish', channel: 'team:seam', event: 'n', data: p * 100 + i + j })),
              );
              for (const r of replies) {
                expect(r.type, JSON.stringify(r)).to.equal('reply');
                acked.push(r.event_id);
              }
            }
          }),
        );
        // a fresh subscriber joins mid-stream from the start: its raw stream has no repeats at all
        await sleep(15);
        const fresh = await open();
        const freshReply = fresh.request({ type: 'subscribe', channel: 'team:seam', since: '0-0' });
        // resubscribe a few times mid-stream from the last id seen, as a resuming client does
        for (let k = 0; k < 5; k++) {
          await sleep(20);
          const seen = sub.events('team:seam');
          const since = seen.length ? seen[seen.length - 1]!.id : '0-0';
          const r = await sub.request({ type: 'subscribe', channel: 'team:seam', since });
          expect(r.recovered).to.equal(true);
        }
        await publishing;
        expect(acked).to.have.length(500);
        const last = [...acked].sort(compareIds)[acked.length - 1];
        await sub.next((f) => f.type === 'event' && f.id === last, 10_000);
        await sleep(100);
        // What the SDK does: keep an event when its id is after the last one kept. A frame
        // dropped that way must be a true repeat (sent by the old subscription before the
        // resubscribe was answered), never a new event arriving out of order.
        const kept: string[] = [];
        const keptSet = new Set<string>();
        for (const e of sub.events('team:seam')) {
          if (!kept.length || compareIds(e.id, kept[kept.length - 1]!) > 0) {
            kept.push(e.id);
            keptSet.add(e.id);
          } else {
            expect(keptSet.has(e.id), `event ${e.id} arrived out of order`).to.equal(true);
          }
        }
        expect(kept).to.have.members(acked);
        expect(kept).to.have.length(500);
        expect((await freshReply).recovered).to.equal(true);
        await fresh.next((f) => f.type === 'event' && f.id === last, 10_000);
        const raw = fresh.events('team:seam').map((e) => e.id);
        expect(raw).to.have.length(500);
        for (let i = 1; i < raw.length; i++) expect(compareIds(raw[i - 1]!, raw[i]!), `fresh order at ${i}`).to.equal(-1);
      });
    });
  });
}

describe('WebSocket limits, heartbeat and expiry', function () {
  this.timeout(30_000);
  let g: TestGateway;
  const clients: TestClient[] = [];
  before(async () => {
    g = await startGateway({
      override: { limits: { heartbeat_ms: 1000, pong_timeout_ms: 500, messages_per_second: 20, max_queued_bytes: 256 * 1024, tenant_messages_per_second: 50 } },
    });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await g.close();
  });
  const open = async (claims: { sub: string; tid?: string; ttlSeconds?: number }, opts = {}) => {
    const c = await connect(g.url, g.token({ tid: 'acme', channels: ['team:*'], publish: ['team:*'], ...claims }), opts);
    clients.push(c);
    return c;
  };

  it('pings every heartbeat_ms and closes 4008 when no pong comes within pong_timeout_ms', async () => {
    const ok = await open({ sub: 'alive' });
    const dead = await open({ sub: 'dead' }, { autoPong: false });
    expect(ok.welcome.heartbeat_ms).to.equal(1000);
    const t0 = Date.now();
    const closed = await dead.closed;
    expect(closed.code).to.equal(4008);
    expect(Date.now() - t0).to.be.within(1000, 2800);
    expect(dead.frames.some((f) => f.type === 'ping')).to.equal(true);
    await sleep(1200);
    expect(ok.ws.readyState).to.equal(WebSocket.OPEN);
    expect(ok.frames.filter((f) => f.type === 'ping').length).to.be.at.least(2);
  });

  it('sends WebSocket ping frames too', async () => {
    const c = await open({ sub: 'pinged' });
    const got = await new Promise<boolean>((resolve) => {
      c.ws.once('ping', () => resolve(true));
      setTimeout(() => resolve(false), 2500);
    });
    expect(got).to.equal(true);
  });

  it('warns with token_expiring, then closes 4001 within a second after exp', async () => {
    const c = await open({ sub: 'short', ttlSeconds: 2 });
    const warn = await c.next((f) => f.type === 'token_expiring', 2000);
    const exp = Date.parse(warn.expires_at);
    const closed = await c.closed;
    expect(closed.code).to.equal(4001);
    expect(Date.now() - exp).to.be.below(1000 + 300);
  });

  it('refresh with a valid token for the same user keeps the connection; another user is forbidden; junk is unauthorized', async () => {
    const c = await open({ sub: 'fresh', ttlSeconds: 2 });
    const other = await c.request({ type: 'refresh', token: g.token({ sub: 'someone', tid: 'acme', ttlSeconds: 60 }) });
    expect(other).to.include({ type: 'error', code: 'forbidden' });
    const otherTenant = await c.request({ type: 'refresh', token: g.token({ sub: 'fresh', tid: 'globex', ttlSeconds: 60 }) });
    expect(otherTenant).to.include({ type: 'error', code: 'forbidden' });
    const junk = await c.request({ type: 'refresh', token: 'junk' });
    expect(junk).to.include({ type: 'error', code: 'unauthorized' });
    const ok = await c.request({ type: 'refresh', token: g.token({ sub: 'fresh', tid: 'acme', channels: ['team:*'], ttlSeconds: 60 }) });
    expect(ok).to.include({ type: 'reply', ok: true });
    await sleep(2800);
    expect(c.ws.readyState).to.equal(WebSocket.OPEN);
  });

  it('answers frames over the rate with rate_limited, and closes 4029 after 5 s over it', async function () {
    this.timeout(20_000);
    const c = await open({ sub: 'flood' });
    for (let i = 0; i < 40; i++) c.send({ type: 'ping', id: `f${i}` });
    const limited = await c.next((f) => f.type === 'error' && f.code === 'rate_limited');
    expect(limited.id).to.match(/^f\d+$/);
    expect(c.ws.readyState).to.equal(WebSocket.OPEN);
    const t0 = Date.now();
    const flood = setInterval(() => {
      for (let i = 0; i < 10; i++) if (c.ws.readyState === WebSocket.OPEN) c.send({ type: 'ping' });
    }, 100);
    try {
      const closed = await c.closed;
      expect(closed.code).to.equal(4029);
      expect(Date.now() - t0).to.be.within(4000, 8000);
    } finally {
      clearInterval(flood);
    }
  });

  it('closes a slow consumer with 4010 while another subscriber of the channel keeps up', async function () {
    this.timeout(30_000);
    const slow = await open({ sub: 'slow' });
    const fast = await open({ sub: 'fast' });
    await slow.request({ type: 'subscribe', channel: 'team:flood' });
    await fast.request({ type: 'subscribe', channel: 'team:flood' });
    // the slow client stops reading from its socket
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const key = await g.serverKey('acme');
    const payload = 'z'.repeat(60 * 1024);
    let sent = 0;
    const deadline = Date.now() + 20_000;
    let slowClosed: { code: number } | null = null;
    void slow.closed.then((c) => (slowClosed = c));
    while (!slowClosed && Date.now() < deadline && sent < 400) {
      await request(`${g.url}/v1/events`, {
        token: key,
        body: { events: Array.from({ length: 10 }, () => ({ channel: 'team:flood', event: 'big', data: payload })) },
      }).then((r) => {
        if (r.status === 429) return sleep(200);
        expect(r.status).to.equal(201);
        sent += 10;
      });
      await sleep(5);
    }
    (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const code = (await slow.closed).code;
    expect(code).to.equal(4010);
    await fast.next(() => fast.events('team:flood').length >= sent, 10_000).catch(() => undefined);
    expect(fast.events('team:flood').length).to.equal(sent);
    expect(fast.ws.readyState).to.equal(WebSocket.OPEN);
  });

  it('refuses publishes over the tenant message quota with rate_limited and HTTP 429 + Retry-After', async () => {
    const key = await g.serverKey('quota-tenant');
    let limited: Awaited<ReturnType<typeof request>> | null = null;
    for (let i = 0; i < 120 && !limited; i++) {
      const r = await request(`${g.url}/v1/channels/team:q/events`, { token: key, body: { event: 'x', data: i } });
      if (r.status === 429) limited = r;
    }
    expect(limited, 'a 429 within 120 publishes').to.not.equal(null);
    expect(limited!.body.error.code).to.equal('rate_limited');
    expect(Number(limited!.headers.get('retry-after'))).to.be.at.least(1);
  });
});

describe('WebSocket connection limits across nodes', function () {
  this.timeout(20_000);
  it('counts a user\'s connections on every node of one Redis', async () => {
    const a = await startGateway({ redisUrl: testRedisUrl() });
    const b = await startGateway({ redisUrl: testRedisUrl(), keyPrefix: a.keyPrefix });
    const clients: TestClient[] = [];
    try {
      const token = a.token({ sub: 'roamer', tid: 'acme' });
      for (let i = 0; i < 5; i++) clients.push(await connect(i % 2 ? b.url : a.url, token));
      for (const g of [a, b]) {
        const ws = new WebSocket(`${g.url.replace('http', 'ws')}/v1/ws?token=${token}`);
        const code = await new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)));
        expect(code).to.equal(4009);
      }
      await clients.shift()!.close();
      await sleep(100);
      clients.push(await connect(b.url, token));
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await a.close();
      await b.close();
      await deleteKeysWithPrefix(a.keyPrefix);
    }
  });
});

describe('WebSocket when Redis goes away', function () {
  this.timeout(30_000);
  it('publish answers unavailable in bounded time; subscribers get what was published after Redis returns', async () => {
    const redis = await startRedisServer({ appendonly: true });
    const g = await startGateway({ redisUrl: redis.url });
    try {
      const c = await connect(g.url, g.token({ sub: 'ann', tid: 'acme', channels: ['team:*'], publish: ['team:*'] }));
      await c.request({ type: 'subscribe', channel: 'team:r' });
      await redis.kill('SIGKILL');
      const t0 = Date.now();
      const r = await c.request({ type: 'publish', channel: 'team:r', event: 'x', data: 1 }, 8000);
      expect(r).to.include({ type: 'error', code: 'unavailable' });
      expect(Date.now() - t0).to.be.below(5000);
      // a subscribe that fails leaves no subscription behind
      const s = await c.request({ type: 'subscribe', channel: 'team:other', since: '0-0' }, 8000);
      expect(s).to.include({ type: 'error', code: 'unavailable' });
      expect(g.gateway.hub.subscriberCount('acme', 'team:other')).to.equal(0);
      await redis.restart();
      let ok: any = null;
      for (let i = 0; i < 50 && !(ok && ok.type === 'reply'); i++) {
        await sleep(200);
        ok = await c.request({ type: 'publish', channel: 'team:r', event: 'x', data: 2 }, 8000);
      }
      expect(ok.type).to.equal('reply');
      const ev = await c.next((f) => f.type === 'event' && f.id === ok.event_id, 10_000);
      expect(ev.data).to.equal(2);
      await c.close();
    } finally {
      await g.close();
      await redis.stop();
    }
  });
});

describe('graceful shutdown', function () {
  it('closes sessions with 1001, then the audit holds both the open and the close', async () => {
    const g = await startGateway();
    try {
      const c = await connect(g.url, g.token({ sub: 'ann', tid: 'acme' }), { device: 'tablet' });
      const closing = g.gateway.close();
      expect((await c.closed).code).to.equal(1001);
      await closing;
      const store = await Store.open(g.gateway.config);
      try {
        const rows = await store.audit.recentConnections('acme', 10);
        const open = rows.find((r) => r.kind === 'open' && r.connectionId === c.welcome.connection_id);
        const close = rows.find((r) => r.kind === 'close' && r.connectionId === c.welcome.connection_id);
        expect(open).to.include({ userId: 'ann', device: 'tablet', transport: 'websocket', ip: '127.0.0.1' });
        expect(close).to.include({ closeCode: 1001 });
        expect(close!.durationMs).to.be.a('number').and.at.least(0);
      } finally {
        await store.close();
      }
    } finally {
      await g.close();
    }
  });
});
