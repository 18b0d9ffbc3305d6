import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { request, startGateway, TEST_SECRET, type TestGateway } from '../support/gateway.js';

const now = () => Math.floor(Date.now() / 1000);

function expectError(res: { status: number; body: any }, status: number, code: string): void {
  expect(res.status, JSON.stringify(res.body)).to.equal(status);
  expect(res.body).to.have.keys('error');
  expect(res.body.error.code).to.equal(code);
  expect(res.body.error.message).to.be.a('string').and.not.empty;
}

describe('HTTP API', function () {
  let g: TestGateway;
  let ann: string;
  let serverKey: string;

  before(async () => {
    g = await startGateway({ override: { namespaces: { eval: { anonymous: true } } } });
    ann = g.token({ sub: 'ann', tid: 'acme', name: 'Ann', channels: ['team:*', 'eval:*'], publish: ['team:*', 'eval:*'] });
    serverKey = await g.serverKey('acme');
  });
  after(async () => {
    await g.close();
  });

  const publish = (channel: string, body: unknown, token = ann) =>
    request(`${g.url}/v1/channels/${channel}/events`, { token, body });
  const history = (channel: string, query = '', token = ann) =>
    request(`${g.url}/v1/channels/${channel}/events${query}`, { token });

  describe('without credentials', () => {
    it('GET /v1/transports answers the transports and limits', async () => {
      const res = await request(`${g.url}/v1/transports`);
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ transports: ['websocket', 'sse', 'poll'], heartbeat_ms: 30000, max_message_bytes: 65536 });
    });

    it('GET /healthz and /readyz answer ok', async () => {
      expect((await request(`${g.url}/healthz`)).body).to.deep.equal({ status: 'ok' });
      const ready = await request(`${g.url}/readyz`);
      expect(ready.status).to.equal(200);
      expect(ready.body.checks).to.deep.equal({ engine: 'ok', database: 'ok' });
    });

    it('an unknown route answers 404 not_found in the error shape', async () => {
      expectError(await request(`${g.url}/v1/nope`), 404, 'not_found');
      expectError(await request(`${g.url}/elsewhere`), 404, 'not_found');
      expectError(await request(`${g.url}/v1/channels/team:1/events`, { method: 'DELETE', token: ann }), 404, 'not_found');
    });

    it('publishing without credentials is 401 unauthorized', async () => {
      expectError(await request(`${g.url}/v1/channels/team:1/events`, { body: { event: 'x', data: 1 } }), 401, 'unauthorized');
    });
  });

  describe('publish', () => {
    it('appends an event with the user as publisher and answers 201 {id, channel, timestamp}', async () => {
      const res = await publish('team:1', { event: 'goal.updated', data: { goal: 7 } });
      expect(res.status).to.equal(201);
      expect(res.body).to.have.keys('id', 'channel', 'timestamp');
      expect(res.body.channel).to.equal('team:1');
      expect(res.body.id).to.match(/^\d+-\d+$/);
      expect(new Date(res.body.timestamp).getTime()).to.equal(Number(res.body.id.split('-')[0]));
      const h = await history('team:1');
      const ev = h.body.events.find((e: any) => e.id === res.body.id);
      expect(ev).to.deep.equal({
        type: 'event',
        id: res.body.id,
        channel: 'team:1',
        event: 'goal.updated',
        data: { goal: 7 },
        timestamp: res.body.timestamp,
        priority: 'normal',
        publisher: { id: 'ann', name: 'Ann' },
      });
    });

    it('accepts a priority and any JSON data; refuses a bad priority', async () => {
      const ok = await publish('team:2', { event: 'alert', data: [1, 'two', null], priority: 'emergency' });
      expect(ok.status).to.equal(201);
      const h = await history('team:2');
      expect(h.body.events.at(-1)).to.include({ priority: 'emergency' });
      expect(h.body.events.at(-1).data).to.deep.equal([1, 'two', null]);
      expectError(await publish('team:2', { event: 'alert', data: 1, priority: 'urgent' }), 400, 'bad_request');
    });

    it('refuses bad input with 400 and appends nothing', async () => {
      const before = (await history('team:bad')).body.events.length;
      expectError(await publish('team:bad', { data: 1 }), 400, 'bad_request');
      expectError(await publish('team:bad', { event: 'x' }), 400, 'bad_request');
      expectError(await publish('team:bad', { event: 'has space', data: 1 }), 400, 'bad_request');
      expectError(await publish('team:bad', { event: 'x', data: 1, extra: true }), 400, 'bad_request');
      expectError(await publish('team:bad', { event: 'x', data: 1, idempotency_key: 5 }), 400, 'bad_request');
      expectError(await publish('team:bad', [1, 2]), 400, 'bad_request');
      expectError(await publish('team%21bad', { event: 'x', data: 1 }), 400, 'bad_request');
      expectError(await publish('x'.repeat(129), { event: 'x', data: 1 }), 400, 'bad_request');
      expectError(await request(`${g.url}/v1/channels/team:bad/events`, { token: ann, rawBody: '{"event":', headers: { 'content-type': 'application/json' } }), 400, 'bad_request');
      expectError(await request(`${g.url}/v1/channels/team:bad/events`, { token: ann, rawBody: 'event=x', headers: { 'content-type': 'text/plain' } }), 400, 'bad_request');
      expect((await history('team:bad')).body.events.length).to.equal(before);
    });

    it('refuses a body that names another channel than the URL, and a junk gzip body', async () => {
      expectError(await publish('team:1', { channel: 'team:2', event: 'x', data: 1 }), 400, 'bad_request');
      const junk = await fetch(`${g.url}/v1/channels/team:1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ann}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: 'definitely not gzip',
      });
      expect(junk.status).to.equal(400);
      expect(((await junk.json()) as any).error.code).to.equal('bad_request');
    });

    it('refuses a body over 64 KiB with 413 too_large', async () => {
      const res = await publish('team:1', { event: 'big', data: 'x'.repeat(70 * 1024) });
      expectError(res, 413, 'too_large');
    });

    it('answers a repeated idempotency key with the first answer and appends once', async () => {
      const first = await publish('team:idem', { event: 'a', data: 1, idempotency_key: 'order-42' });
      const again = await publish('team:idem', { event: 'b', data: 2, idempotency_key: 'order-42' });
      expect(first.status).to.equal(201);
      expect(again.status).to.equal(201);
      expect(again.body).to.deep.equal(first.body);
      const h = await history('team:idem');
      expect(h.body.events).to.have.length(1);
      expect(h.body.events[0].data).to.equal(1);
    });

    it('applies the channel rules of PROTOCOL §3 to users', async () => {
      expectError(await publish('other:1', { event: 'x', data: 1 }), 403, 'forbidden');
      expectError(await publish('user:ann', { event: 'x', data: 1 }), 403, 'forbidden');
      expectError(await publish('tenant', { event: 'x', data: 1 }), 403, 'forbidden');
      expect((await publish('dm:ann:bo', { event: 'x', data: 1 })).status).to.equal(201);
      expect((await publish('dm:bo:ann', { event: 'x', data: 1 })).status).to.equal(201);
      expectError(await publish('dm:bo:cy', { event: 'x', data: 1 }), 403, 'forbidden');
      expectError(await publish('dm:ann', { event: 'x', data: 1 }), 403, 'forbidden');
      // goal:* does not match goal:
      const goal = g.token({ sub: 'ann', tid: 'acme', publish: ['goal:*'] });
      expect((await publish('goal:a:b', { event: 'x', data: 1 }, goal)).status).to.equal(201);
      expectError(await publish('goal:', { event: 'x', data: 1 }, goal), 403, 'forbidden');
      expectError(await publish('team:1', { event: 'x', data: 1, publisher: { id: 'boss' } }), 403, 'forbidden');
    });

    it('strips the publisher in anonymous namespaces', async () => {
      await publish('eval:9', { event: 'submitted', data: {} });
      const h = await history('eval:9');
      expect(h.body.events[0]).not.to.have.property('publisher');
    });
  });

  describe('server keys', () => {
    it('publish anywhere in their tenant, with an optional publisher', async () => {
      for (const channel of ['user:ann', 'tenant', 'anything:at:all']) {
        expect((await publish(channel, { event: 'x', data: 1 }, serverKey)).status).to.equal(201);
      }
      const res = await publish('team:srv', { event: 'x', data: 1, publisher: { id: 'bot', name: 'Bot' } }, serverKey);
      expect(res.status).to.equal(201);
      const h = await history('team:srv', '', serverKey);
      expect(h.body.events[0].publisher).to.deep.equal({ id: 'bot', name: 'Bot' });
      const none = await publish('team:srv', { event: 'y', data: 1 }, serverKey);
      expect((await history('team:srv', `?since=${res.body.id}`, serverKey)).body.events[0]).to.include({ id: none.body.id }).and.not.have.property('publisher');
    });

    it('are refused in the URL (they would land in access logs)', async () => {
      const res = await request(`${g.url}/v1/channels/team:1/events?token=${serverKey}`, { body: { event: 'x', data: 1 } });
      expectError(res, 401, 'unauthorized');
      expect(res.body.error.message).to.match(/Authorization header/);
    });

    it('a wrong, malformed or revoked key is 401', async () => {
      expectError(await publish('team:1', { event: 'x', data: 1 }, serverKey.slice(0, -2) + 'zz'), 401, 'unauthorized');
      expectError(await publish('team:1', { event: 'x', data: 1 }, 'sgk_nonsense'), 401, 'unauthorized');
      const created = await g.gateway.store.keys.create('acme', 'temp');
      expect((await publish('team:1', { event: 'x', data: 1 }, created.key)).status).to.equal(201);
      await g.gateway.store.keys.revoke(created.id);
      expectError(await publish('team:1', { event: 'x', data: 1 }, created.key), 401, 'unauthorized');
    });

    it('batch publish answers in order and refuses the whole batch for one bad event', async () => {
      const ok = await request(`${g.url}/v1/events`, {
        token: serverKey,
        body: { events: [
          { channel: 'batch:a', event: 'one', data: 1 },
          { channel: 'batch:b', event: 'two', data: 2 },
          { channel: 'batch:a', event: 'three', data: 3, idempotency_key: 'k3' },
        ] },
      });
      expect(ok.status).to.equal(201);
      expect(ok.body.events.map((e: any) => e.channel)).to.deep.equal(['batch:a', 'batch:b', 'batch:a']);
      const a = await history('batch:a', '', serverKey);
      expect(a.body.events.map((e: any) => e.event)).to.deep.equal(['one', 'three']);
      expect(a.body.events.map((e: any) => e.id)).to.deep.equal([ok.body.events[0].id, ok.body.events[2].id]);

      const bad = await request(`${g.url}/v1/events`, {
        token: serverKey,
        body: { events: [{ channel: 'batch:c', event: 'one', data: 1 }, { channel: 'bad channel', event: 'two', data: 2 }] },
      });
      expectError(bad, 400, 'bad_request');
      expect(bad.body.error.message).to.match(/events\[1\]/);
      expect((await history('batch:c', '', serverKey)).body.events).to.have.length(0);

      expectError(await request(`${g.url}/v1/events`, { token: serverKey, body: { events: [] } }), 400, 'bad_request');
      expectError(await request(`${g.url}/v1/events`, { token: serverKey, body: { nope: 1 } }), 400, 'bad_request');
      expectError(await request(`${g.url}/v1/events`, { token: ann, body: { events: [{ channel: 'team:1', event: 'x', data: 1 }] } }), 403, 'forbidden');
      const big = Array.from({ length: 20 }, (_, i) => ({ channel: 'batch:big', event: 'x', data: 'y'.repeat(60 * 1024), idempotency_key: `b${i}` }));
      expectError(await request(`${g.url}/v1/events`, { token: serverKey, body: { events: big } }), 413, 'too_large');
      const oneTooBig = [{ channel: 'batch:big', event: 'x', data: 'y'.repeat(70 * 1024) }];
      expectError(await request(`${g.url}/v1/events`, { token: serverKey, body: { events: oneTooBig } }), 413, 'too_large');
    });
  });

  describe('history', () => {
    it('answers after since (first limit) or the latest limit, oldest first', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 8; i++) ids.push((await publish('team:hist', { event: 'n', data: i })).body.id);
      const latest = await history('team:hist', '?limit=3');
      expect(latest.status).to.equal(200);
      expect(latest.body.recovered).to.equal(true);
      expect(latest.body.events.map((e: any) => e.id)).to.deep.equal(ids.slice(5));
      const after = await history('team:hist', `?since=${ids[1]}&limit=2`);
      expect(after.body.events.map((e: any) => e.data)).to.deep.equal([2, 3]);
      const all = await history('team:hist', '?since=0-0');
      expect(all.body.events).to.have.length(8);
    });

    it('refuses a bad limit or since, and a channel the user may not read', async () => {
      expectError(await history('team:hist', '?limit=0'), 400, 'bad_request');
      expectError(await history('team:hist', '?limit=1001'), 400, 'bad_request');
      expectError(await history('team:hist', '?limit=ten'), 400, 'bad_request');
      expectError(await history('team:hist', '?since=yesterday'), 400, 'bad_request');
      expectError(await history('other:1'), 403, 'forbidden');
      expectError(await history('user:bo'), 403, 'forbidden');
      expect((await history('user:ann')).status).to.equal(200);
      expect((await history('tenant')).status).to.equal(200);
    });

    it("keeps tenants apart: tenant B never sees tenant A's channel of the same name", async () => {
      await publish('team:shared', { event: 'secret', data: 'acme only' });
      const other = g.token({ sub: 'ann', tid: 'globex', channels: ['team:*'], publish: ['team:*'] });
      expect((await history('team:shared', '', other)).body.events).to.deep.equal([]);
      const otherKey = await g.serverKey('globex');
      expect((await history('team:shared', '', otherKey)).body.events).to.deep.equal([]);
      await publish('team:shared', { event: 'mine', data: 'globex' }, other);
      const mine = await history('team:shared', '', other);
      expect(mine.body.events.map((e: any) => e.data)).to.deep.equal(['globex']);
    });
  });

  describe('tokens', () => {
    const sign = (claims: object, opts: jwt.SignOptions = {}, secret = TEST_SECRET) => jwt.sign(claims, secret, { algorithm: 'HS256', ...opts });

    it('refuses alg none, a bad signature, an expired token, missing exp, sub or tid', async () => {
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'ann', tid: 'acme', exp: now() + 60, publish: ['team:*'] })}.`;
      const cases: Record<string, string> = {
        none,
        badSignature: sign({ sub: 'ann', tid: 'acme', exp: now() + 60 }, {}, 'another-secret'),
        expired: sign({ sub: 'ann', tid: 'acme', exp: now() - 10 }),
        noExp: sign({ sub: 'ann', tid: 'acme' }),
        noSub: sign({ tid: 'acme', exp: now() + 60 }),
        noTid: sign({ sub: 'ann', exp: now() + 60 }),
        badTid: sign({ sub: 'ann', tid: 'a:b', exp: now() + 60 }),
        garbage: 'not.a.jwt',
      };
      for (const [name, token] of Object.entries(cases)) {
        const res = await publish('team:1', { event: 'x', data: 1 }, token);
        expect(res.status, name).to.equal(401);
        expect(res.body.error.code, name).to.equal('unauthorized');
      }
    });

    it('takes the token from ?token= too', async () => {
      const res = await request(`${g.url}/v1/channels/team:1/events?token=${ann}`);
      expect(res.status).to.equal(200);
    });
  });

  describe('metrics', () => {
    it('exposes connections, events published, publish latency and HTTP requests', async () => {
      await publish('team:m', { event: 'x', data: 1 });
      const res = await fetch(`${g.url}/metrics`);
      const text = await res.text();
      expect(res.headers.get('content-type')).to.match(/text\/plain/);
      expect(text).to.match(/streamgate_connections\{transport="websocket",tenant=""\} 0/);
      expect(text).to.match(/streamgate_events_published_total\{source="http"\} \d+/);
      expect(text).to.match(/streamgate_publish_duration_seconds_bucket\{le="0.005",source="http"\} \d+/);
      expect(text).to.match(/streamgate_http_requests_total\{method="POST",route="\/v1\/channels\/:channel\/events",status="201"\} \d+/);
    });
  });

  describe('publish audit', () => {
    it('records who published what, in batches', async () => {
      const res = await publish('team:audit', { event: 'audited', data: 1 });
      await g.gateway.store.audit.flush();
      const rows = await g.gateway.store.audit.recentPublishes('acme', 50);
      const row = rows.find((r) => r.eventId === res.body.id);
      expect(row).to.include({ tenant: 'acme', channel: 'team:audit', event: 'audited', publisherKind: 'user', publisherId: 'ann' });
      expect(row!.at).to.be.instanceOf(Date);
    });
  });
});

describe('HTTP API with METRICS_TOKEN', function () {
  it('protects /metrics with the token', async () => {
    const { createGateway } = await import('../../lib/gateway.js');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'sg-metrics-'));
    const gw = await createGateway({
      env: { NODE_ENV: 'test', STREAMGATE_DATA_DIR: dir, METRICS_TOKEN: 'scrape-me' },
      defaultMetrics: false,
      settings: { sqliteFile: join(dir, 'db.sqlite'), jwt: { secret: TEST_SECRET } },
    });
    try {
      const port = await gw.listen(0, '127.0.0.1');
      expectError(await request(`http://127.0.0.1:${port}/metrics`), 401, 'unauthorized');
      const ok = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: 'Bearer scrape-me' } });
      expect(ok.status).to.equal(200);
      expect(await ok.text()).to.include('streamgate_connections');
    } finally {
      await gw.close();
    }
  });
});

describe('HTTP API with issuer, audience and public keys', function () {
  it('checks issuer and audience when configured', async () => {
    const g = await startGateway({ jwt: { secret: TEST_SECRET, issuer: 'https://idp.example', audience: 'streamgate' } });
    try {
      const body = { event: 'x', data: 1 };
      const good = jwt.sign({ sub: 'a', tid: 't', publish: ['team:*'] }, TEST_SECRET, { expiresIn: 60, issuer: 'https://idp.example', audience: 'streamgate' });
      const wrongIss = jwt.sign({ sub: 'a', tid: 't', publish: ['team:*'] }, TEST_SECRET, { expiresIn: 60, issuer: 'https://evil', audience: 'streamgate' });
      const wrongAud = jwt.sign({ sub: 'a', tid: 't', publish: ['team:*'] }, TEST_SECRET, { expiresIn: 60, issuer: 'https://idp.example', audience: 'other' });
      expect((await request(`${g.url}/v1/channels/team:1/events`, { token: good, body })).status).to.equal(201);
      expectError(await request(`${g.url}/v1/channels/team:1/events`, { token: wrongIss, body }), 401, 'unauthorized');
      expectError(await request(`${g.url}/v1/channels/team:1/events`, { token: wrongAud, body }), 401, 'unauthorized');
    } finally {
      await g.close();
    }
  });

  for (const [alg, keyType, opts] of [
    ['RS256', 'rsa', { modulusLength: 2048 }],
    ['ES256', 'ec', { namedCurve: 'P-256' }],
  ] as const) {
    it(`verifies ${alg} tokens with JWT_PUBLIC_KEY and refuses HS256 ones`, async () => {
      const { publicKey, privateKey } = generateKeyPairSync(keyType as 'rsa', opts as { modulusLength: number });
      const pub = publicKey.export({ type: 'spki', format: 'pem' }).toString();
      const g = await startGateway({ jwt: { publicKey: pub } });
      try {
        const body = { event: 'x', data: 1 };
        const good = jwt.sign({ sub: 'a', tid: 't', publish: ['team:*'] }, privateKey, { algorithm: alg, expiresIn: 60 });
        expect((await request(`${g.url}/v1/channels/team:1/events`, { token: good, body })).status).to.equal(201);
        const hs = jwt.sign({ sub: 'a', tid: 't', publish: ['team:*'] }, pub, { algorithm: 'HS256', expiresIn: 60 });
        expectError(await request(`${g.url}/v1/channels/team:1/events`, { token: hs, body }), 401, 'unauthorized');
      } finally {
        await g.close();
      }
    });
  }
});

describe('HTTP API with CORS_ORIGINS', function () {
  it('answers preflights and marks answers for the allowed origins only', async () => {
    const { createGateway } = await import('../../lib/gateway.js');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'sg-cors-'));
    const gw = await createGateway({
      env: { NODE_ENV: 'test', STREAMGATE_DATA_DIR: dir, CORS_ORIGINS: 'https://ward.example' },
      defaultMetrics: false,
      settings: { sqliteFile: join(dir, 'db.sqlite'), jwt: { secret: TEST_SECRET } },
    });
    try {
      const base = `http://127.0.0.1:${await gw.listen(0, '127.0.0.1')}`;
      const pre = await fetch(`${base}/v1/channels/team:1/events`, {
        method: 'OPTIONS',
        headers: { origin: 'https://ward.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
      });
      expect(pre.status).to.equal(204);
      expect(pre.headers.get('access-control-allow-origin')).to.equal('https://ward.example');
      expect(pre.headers.get('access-control-allow-headers')).to.match(/Authorization/);
      const ok = await fetch(`${base}/v1/transports`, { headers: { origin: 'https://ward.example' } });
      expect(ok.headers.get('access-control-allow-origin')).to.equal('https://ward.example');
      const other = await fetch(`${base}/v1/transports`, { headers: { origin: 'https://evil.example' } });
      expect(other.headers.get('access-control-allow-origin')).to.equal(null);
    } finally {
      await gw.close();
    }
  });
});
