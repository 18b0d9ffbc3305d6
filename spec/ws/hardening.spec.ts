import { expect } from 'chai';
import { connect as tcpConnect } from 'node:net';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { connect, type TestClient } from '../support/ws-client.js';
import { deleteKeysWithPrefix, testRedisUrl } from '../support/redis.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('hardening against misbehaving clients', function () {
  this.timeout(30_000);
  let g: TestGateway;
  const clients: TestClient[] = [];
  const token = (claims: Record<string, unknown> = {}) =>
    g.token({ sub: 'ann', tid: 'acme', channels: ['team:*', 'eval:*'], publish: ['team:*', 'eval:*'], ...claims });
  const open = async (t = token()) => {
    const c = await connect(g.url, t);
    clients.push(c);
    return c;
  };

  before(async () => {
    g = await startGateway({ override: { namespaces: { eval: { anonymous: true } }, limits: { messages_per_second: 20 } } });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await g.close();
  });

  it('survives clients that reset the connection in the middle of the upgrade', async () => {
    // Redis makes admission a real round trip: the window in which a reset used to crash the node.
    const r = await startGateway({ redisUrl: testRedisUrl() });
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
    const { port } = new URL(r.url);
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        new Promise<void>((resolve) => {
          const s = tcpConnect(Number(port), '127.0.0.1', () => {
            s.write(
              `GET /v1/ws?token=${token()} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
            );
            setTimeout(() => {
              s.resetAndDestroy();
              resolve();
            }, i % 4);
          });
          s.on('error', () => resolve());
        }),
      ),
    );
    await sleep(300);
    expect(uncaught).to.deep.equal([]);
    expect((await request(`${r.url}/healthz`)).status).to.equal(200);
    // and no connection slot was left behind: the user still gets 5 connections
    for (let i = 0; i < 5; i++) clients.push(await connect(r.url, token()));
    } finally {
      process.off('uncaughtException', onUncaught);
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await r.close();
      await deleteKeysWithPrefix(r.keyPrefix);
    }
  });

  it('leaves no session or slot behind when SSE clients leave during admission', async () => {
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const ctrl = new AbortController();
        setTimeout(() => ctrl.abort(), i % 3);
        await fetch(`${g.url}/v1/sse?channels=team:1&token=${token()}`, { signal: ctrl.signal }).then((r) => r.body?.cancel(), () => undefined);
      }),
    );
    await sleep(300);
    expect(g.gateway.connections.size).to.equal(0);
    for (let i = 0; i < 5; i++) await open();
  });

  it('charges binary frames to the frame budget', async () => {
    const c = await open();
    for (let i = 0; i < 40; i++) c.ws.send(Buffer.from([i]), { binary: true });
    await c.next((f) => f.type === 'error' && f.code === 'rate_limited');
  });

  it('counts held polls against the connection limit', async () => {
    const t = token({ sub: 'poller' });
    const cursor = (await request(`${g.url}/v1/poll?channels=team:p&token=${t}`)).body.cursor;
    const held = Array.from({ length: 5 }, () => request(`${g.url}/v1/poll?channels=team:p&token=${t}&cursor=${cursor}&timeout=3`));
    await sleep(300);
    const sixth = await request(`${g.url}/v1/poll?channels=team:p&token=${t}&cursor=${cursor}&timeout=3`);
    expect(sixth.status).to.equal(429);
    expect(sixth.body.error.code).to.equal('rate_limited');
    await Promise.all(held);
  });

  it('announces no second join when a connection subscribes again', async () => {
    const watcher = await open(token({ sub: 'watcher' }));
    await watcher.request({ type: 'subscribe', channel: 'team:again' });
    const c = await open(token({ sub: 'again' }));
    await c.request({ type: 'subscribe', channel: 'team:again' });
    await c.request({ type: 'subscribe', channel: 'team:again', since: '0-0' });
    await sleep(300);
    const joins = watcher.frames.filter((f) => f.type === 'presence' && f.action === 'join' && f.user.id === 'again');
    expect(joins).to.have.length(1);
  });

  it('tells nobody who types in an anonymous namespace', async () => {
    const a = await open(token({ sub: 'typist' }));
    const b = await open(token({ sub: 'reader' }));
    await a.request({ type: 'subscribe', channel: 'eval:1' });
    await b.request({ type: 'subscribe', channel: 'eval:1' });
    await a.request({ type: 'typing', channel: 'eval:1', state: 'start' });
    const typing = await b.next((f) => f.type === 'typing');
    expect(typing).to.deep.equal({ type: 'typing', channel: 'eval:1', state: 'start' });
  });

  it('ends subscriptions that a refreshed token no longer allows', async () => {
    const c = await open(token({ sub: 'narrow', channels: ['team:*', 'eval:*'] }));
    await c.request({ type: 'subscribe', channel: 'team:1' });
    await c.request({ type: 'subscribe', channel: 'eval:1' });
    const r = await c.request({ type: 'refresh', token: g.token({ sub: 'narrow', tid: 'acme', channels: ['team:*'] }) });
    expect(r.type).to.equal('reply');
    const gone = await c.next((f) => f.type === 'unsubscribed');
    expect(gone).to.include({ channel: 'eval:1' });
    const pub = await request(`${g.url}/v1/channels/eval:1/events`, { token: await g.serverKey('acme'), body: { event: 'x', data: 1 } });
    await sleep(100);
    expect(c.events('eval:1').map((e) => e.id)).not.to.include(pub.body.id);
  });
});
