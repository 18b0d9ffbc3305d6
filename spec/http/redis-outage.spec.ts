import { expect } from 'chai';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { startRedisServer } from '../support/redis-server.js';

describe('HTTP API when Redis goes away', function () {
  this.timeout(60_000);
  let redis: Awaited<ReturnType<typeof startRedisServer>>;
  let g: TestGateway;
  let key: string;

  before(async () => {
    redis = await startRedisServer({ appendonly: true });
    g = await startGateway({ redisUrl: redis.url });
    key = await g.serverKey('acme');
  });
  after(async () => {
    await g.close();
    await redis.stop();
  });

  it('answers 503 unavailable within a bounded time, reports not ready, and recovers when Redis is back', async () => {
    const publish = (n: number) =>
      request(`${g.url}/v1/channels/team:1/events`, { token: key, body: { event: 'n', data: n, idempotency_key: `n-${n}` } });
    const ok = await publish(1);
    expect(ok.status).to.equal(201);

    await redis.kill('SIGKILL');
    const t0 = Date.now();
    const down = await publish(2);
    expect(down.status).to.equal(503);
    expect(down.body.error.code).to.equal('unavailable');
    expect(Date.now() - t0).to.be.below(5000);
    const ready = await request(`${g.url}/readyz`);
    expect(ready.status).to.equal(503);
    const batch = await request(`${g.url}/v1/events`, { token: key, body: { events: [{ channel: 'team:1', event: 'n', data: 3 }] } });
    expect(batch.status).to.equal(503);

    await redis.restart();
    const deadline = Date.now() + 15_000;
    let again = await publish(2);
    while (again.status !== 201 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      again = await publish(2);
    }
    expect(again.status).to.equal(201);
    expect((await request(`${g.url}/readyz`)).status).to.equal(200);
    const h = await request(`${g.url}/v1/channels/team:1/events?since=0-0`, { token: key });
    // the acknowledged event survived the restart (appendfsync always); the refused one was never acknowledged
    expect(h.body.events.map((e: { data: number }) => e.data)).to.deep.equal([1, 2]);
    expect(h.body.events[0].id).to.equal(ok.body.id);
  });
});
