import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import express from 'express';
import { createGateway, type Gateway } from '../../lib/index.js';
import { Publisher } from '../../lib/publisher.js';
import type { LogEvent } from '../../lib/engine/engine.js';
import { request, TEST_SECRET } from '../support/gateway.js';
import { signUserToken } from '../../lib/auth/tokens.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';

const execFileP = promisify(execFile);

describe('Node API', function () {
  this.timeout(30_000);
  let gateway: Gateway;
  let server: Server;
  let base: string;
  let prefix: string;

  before(async () => {
    prefix = uniquePrefix();
    const dir = mkdtempSync(join(tmpdir(), 'sg-node-api-'));
    gateway = await createGateway({
      env: { NODE_ENV: 'test', STREAMGATE_DATA_DIR: dir },
      override: { redis: { key_prefix: prefix, shards: 4 } },
      defaultMetrics: false,
      settings: { redisUrl: testRedisUrl(), sqliteFile: join(dir, 'db.sqlite'), jwt: { secret: TEST_SECRET } },
    });
    const app = express();
    app.get('/app/ping', (_req, res) => {
      res.json({ pong: true });
    });
    app.use('/realtime', gateway.router);
    server = createServer(app);
    gateway.attach(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await gateway.close();
    await deleteKeysWithPrefix(prefix);
  });

  it('mounts the gateway under a prefix of an existing Express app without taking its routes', async () => {
    expect((await request(`${base}/app/ping`)).body).to.deep.equal({ pong: true });
    expect((await request(`${base}/realtime/v1/transports`)).status).to.equal(200);
    expect((await request(`${base}/realtime/healthz`)).body).to.deep.equal({ status: 'ok' });
    const token = signUserToken(TEST_SECRET, { sub: 'ann', tid: 'acme', publish: ['team:*'], channels: ['team:*'] });
    const res = await request(`${base}/realtime/v1/channels/team:mounted/events`, { token, body: { event: 'x', data: 1 } });
    expect(res.status).to.equal(201);
    const unknown = await request(`${base}/realtime/v1/nothing`);
    expect(unknown.status).to.equal(404);
    expect(unknown.body.error.code).to.equal('not_found');
  });

  it('sees an event appended by Publisher from another process in history and on the live feed, with the same idempotency', async () => {
    const live: LogEvent[] = [];
    const subscriber = { deliver: (_frame: unknown, e: LogEvent) => live.push(e) };
    gateway.hub.subscribe('acme', 'team:pub', subscriber);
    try {
      const { stdout } = await execFileP(process.execPath, ['--import', 'tsx', 'spec/support/publisher-child.ts'], {
        env: {
          ...process.env,
          REDIS_URL: testRedisUrl(),
          SG_PREFIX: prefix,
          SG_EVENTS: JSON.stringify([
            { tenant: 'acme', channel: 'team:pub', event: 'order.created', data: { order: 1 }, idempotencyKey: 'order-1' },
            { tenant: 'acme', channel: 'team:pub', event: 'order.created', data: { order: 'again' }, idempotencyKey: 'order-1' },
          ]),
        },
        timeout: 20_000,
      });
      const [first, second] = JSON.parse(stdout.trim()) as Array<{ id: string; duplicate: boolean }>;
      expect(first!.duplicate).to.equal(false);
      expect(second).to.deep.include({ id: first!.id, duplicate: true });

      const deadline = Date.now() + 5000;
      while (live.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(live.map((e) => e.id)).to.deep.equal([first!.id]);
      expect(JSON.parse(live[0]!.dataJson)).to.deep.equal({ order: 1 });

      const key = (await gateway.store.keys.create('acme')).key;
      const h = await request(`${base}/realtime/v1/channels/team:pub/events`, { token: key });
      expect(h.body.events.map((e: { id: string }) => e.id)).to.deep.equal([first!.id]);
      // the same idempotency key over HTTP gets the Publisher's first answer
      const viaHttp = await request(`${base}/realtime/v1/channels/team:pub/events`, {
        token: key,
        body: { event: 'order.created', data: { order: 'http' }, idempotency_key: 'order-1' },
      });
      expect(viaHttp.status).to.equal(201);
      expect(viaHttp.body.id).to.equal(first!.id);
    } finally {
      gateway.hub.unsubscribe('acme', 'team:pub', subscriber);
    }
  });

  it('Publisher validates its input before touching Redis', async () => {
    const p = await Publisher.connect({ redisUrl: testRedisUrl(), env: {}, override: { redis: { key_prefix: prefix, shards: 4 } } });
    try {
      for (const [tenant, channel, event, key] of [['a:b', 'team:1', 'x'], ['acme', 'bad channel', 'x'], ['acme', 'team:1', 'bad event'], ['acme', 'team:1', 'x', '']]) {
        let code: string | undefined;
        const opts = key === undefined ? { event: event!, data: 1 } : { event: event!, data: 1, idempotencyKey: key };
        await p.publish(tenant!, channel!, opts).catch((e: { code: string }) => (code = e.code));
        expect(code, `${tenant} ${channel} ${event} ${key}`).to.equal('bad_request');
      }
      let tooBig: string | undefined;
      await p.publish('acme', 'team:1', { event: 'x', data: 'y'.repeat(70_000) }).catch((e: { code: string }) => (tooBig = e.code));
      expect(tooBig).to.equal('too_large');
    } finally {
      await p.close();
    }
  });
});
