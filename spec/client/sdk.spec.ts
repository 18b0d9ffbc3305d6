/**
 * The client SDK in Node against real gateways (PROTOCOL §4–§6, §8; issue 4 item 5):
 * `ws` and `eventsource` as the constructors, failures staged with a loopback proxy
 * and a server that refuses.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import WebSocket from 'ws';
import { Redis } from 'ioredis';
import type { Client, ConnectOptions, EventFrame, StorageLike, TransportName } from '../../lib/client/index.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { sdkClients } from '../support/sdk-clients.js';
import { testRedisUrl, uniquePrefix, deleteKeysWithPrefix } from '../support/redis.js';

const TRANSPORTS: TransportName[] = ['websocket', 'sse', 'poll'];
const CLAIMS = { sub: 'u1', tid: 't1', channels: ['team:*'], publish: ['team:*'] };

/** Poll `pred` every 20 ms, at most `timeoutMs`. */
async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function memoryStorage(): StorageLike {
  const map = new Map<string, string>();
  return { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => void map.set(k, v) };
}

const clients = sdkClients();
const client = clients.watch;

function feed(c: Client, channel: string, options: { since?: string } = {}) {
  const events: EventFrame[] = [];
  const resets: string[] = [];
  const sub = c.subscribe(channel, (e) => events.push(e), { ...options, onReset: (r) => resets.push(r.channel) });
  return { events, resets, sub, data: () => events.map((e) => e.data) };
}

async function publishAs(gw: { url: string }, token: string, channel: string, data: unknown): Promise<string> {
  const r = await request(`${gw.url}/v1/channels/${channel}/events`, { token, body: { event: 'test.added', data } });
  expect(r.status, JSON.stringify(r.body)).to.equal(201);
  return r.body.id as string;
}

afterEach(() => {
  clients.closeAll();
});

describe('client SDK over each transport', function () {
  let gw: TestGateway;
  let token: string;

  beforeEach(async () => {
    gw = await startGateway();
    token = gw.token(CLAIMS);
  });
  afterEach(async () => {
    clients.closeAll();
    await gw.close();
  });

  for (const transport of ['websocket', 'sse'] as const) {
    it(`${transport}: presence signals of subscribed channels come through the signal event`, async () => {
      const { client: c } = client({ url: gw.url, token, transports: [transport] });
      const signals: Array<Record<string, unknown>> = [];
      c.on('signal', (s) => signals.push(s));
      await feed(c, 'team:1').sub.ready;
      await waitFor(() => c.state === 'connected', 5000, 'connected');
      // The stream is live once the welcome came: wait for it through a first event.
      const probe = feed(c, 'team:9');
      await probe.sub.ready;
      await publishAs(gw, token, 'team:9', 'live');
      await waitFor(() => probe.events.length === 1, 5000, 'the stream live');
      const other = client({ url: gw.url, token: gw.token({ ...CLAIMS, sub: 'u2' }), transports: ['websocket'] });
      await feed(other.client, 'team:1').sub.ready;
      await waitFor(() => signals.some((s) => s.type === 'presence' && s.action === 'join'), 5000, 'the join of u2');
      expect(signals.find((s) => s.action === 'join')).to.deep.include({ channel: 'team:1' });
    });
  }

  for (const transport of TRANSPORTS) {
    it(`${transport}: subscribe from 0-0, publish, history: every event once, in order`, async () => {
      await publishAs(gw, token, 'team:1', 'before-1');
      await publishAs(gw, token, 'team:1', 'before-2');
      const { client: c, states } = client({ url: gw.url, token, transports: [transport] });
      const f = feed(c, 'team:1', { since: '0-0' });
      await f.sub.ready;
      const answers = [];
      for (const n of [1, 2, 3]) answers.push(await c.publish('team:1', 'test.added', `mine-${n}`, { priority: 'high' }));
      await waitFor(() => f.events.length >= 5, 5000, 'five events');
      await new Promise((r) => setTimeout(r, 200));
      expect(f.data()).to.deep.equal(['before-1', 'before-2', 'mine-1', 'mine-2', 'mine-3']);
      expect(answers.map((a) => a.id)).to.deep.equal(f.events.slice(2).map((e) => e.id));
      expect(f.events[2]!.priority).to.equal('high');
      expect(c.state).to.equal('connected');
      expect(c.transport).to.equal(transport);
      expect(states.map((s) => s.state)).to.deep.equal(['connecting', 'connected']);
      const h = await c.history('team:1', { limit: 2 });
      expect(h.events.map((e) => e.data)).to.deep.equal(['mine-2', 'mine-3']);
      expect(h.recovered).to.equal(true);
    });

    it(`${transport}: channels added and removed while connected lose nothing on the others`, async () => {
      const { client: c } = client({ url: gw.url, token, transports: [transport] });
      const a = feed(c, 'team:1');
      await a.sub.ready;
      await publishAs(gw, token, 'team:1', 'a1');
      await waitFor(() => a.events.length === 1, 5000, 'a1');
      // Over SSE and polling this restarts the one stream with the cursor: a2 lands in the gap.
      const b = feed(c, 'team:2');
      await publishAs(gw, token, 'team:1', 'a2');
      await b.sub.ready;
      await publishAs(gw, token, 'team:2', 'b1');
      await publishAs(gw, token, 'team:1', 'a3');
      await waitFor(() => a.events.length === 3 && b.events.length === 1, 5000, 'a2, a3 and b1');
      b.sub.unsubscribe();
      await publishAs(gw, token, 'team:2', 'b2');
      await publishAs(gw, token, 'team:1', 'a4');
      await waitFor(() => a.events.length === 4, 5000, 'a4');
      await new Promise((r) => setTimeout(r, 300));
      expect(a.data()).to.deep.equal(['a1', 'a2', 'a3', 'a4']);
      expect(b.data()).to.deep.equal(['b1']);
    });

    it(`${transport}: a refused channel rejects its subscription and leaves the others alone`, async () => {
      const { client: c, errors } = client({ url: gw.url, token, transports: [transport] });
      const ok = feed(c, 'team:2');
      const refused: Error[] = [];
      const bad = c.subscribe('secret:1', () => undefined, { onError: (e) => refused.push(e) });
      const outcome = await bad.ready.then(() => 'accepted', (e: { code?: string }) => e.code);
      expect(outcome).to.equal('forbidden');
      expect(refused).to.have.length(1);
      expect(errors.map((e) => (e as { code?: string }).code)).to.include('forbidden');
      await ok.sub.ready;
      await c.publish('team:2', 'test.added', 'still here');
      await waitFor(() => ok.events.length === 1, 5000, 'the allowed channel event');
      expect(c.state).to.equal('connected');
    });
  }
});

describe('client SDK: lost events and refused frames', function () {
  let gw: TestGateway;
  let token: string;

  beforeEach(async () => {
    gw = await startGateway({ override: { namespaces: { team: { retention: { count: 2, seconds: 86400 } } } } });
    token = gw.token(CLAIMS);
  });
  afterEach(async () => {
    clients.closeAll();
    await gw.close();
  });

  for (const transport of TRANSPORTS) {
    it(`${transport}: events trimmed by retention surface as a reset of the channel, then the retained events follow`, async () => {
      const ids: string[] = [];
      for (let n = 1; n <= 6; n++) ids.push(await publishAs(gw, token, 'team:1', n));
      const { client: c } = client({ url: gw.url, token, transports: [transport] });
      const channelResets: string[] = [];
      c.on('reset', (r) => channelResets.push(r.channel));
      const f = feed(c, 'team:1', { since: ids[0]! });
      await waitFor(() => f.events.length > 0 && f.events[f.events.length - 1]!.data === 6, 5000, 'the retained events');
      await c.publish('team:1', 'test.added', 7);
      await waitFor(() => f.events[f.events.length - 1]!.data === 7, 5000, 'the live event');
      expect(f.resets).to.deep.equal(['team:1']);
      expect(channelResets).to.deep.equal(['team:1']);
      const data = f.data() as number[];
      expect(data.length).to.be.within(3, 4);
      expect(data).to.deep.equal([...data].sort((a, b) => a - b));
    });
  }

  for (const transport of ['websocket', 'sse'] as const) {
    it(`${transport}: a publish larger than max_message_bytes is refused with too_large and the connection stays`, async () => {
      const { client: c, states } = client({ url: gw.url, token, transports: [transport] });
      const f = feed(c, 'team:1');
      await f.sub.ready;
      await waitFor(() => c.state === 'connected', 5000, 'connected');
      const big = 'x'.repeat(70 * 1024);
      const outcome = await c.publish('team:1', 'test.added', big).then(() => 'sent', (e: { code?: string }) => e.code);
      expect(outcome).to.equal('too_large');
      await c.publish('team:1', 'test.added', 'small');
      await waitFor(() => f.events.length === 1, 5000, 'the small event');
      expect(states.map((s) => s.state)).to.deep.equal(['connecting', 'connected']);
    });
  }
});

describe('client SDK: drops, queue, dedupe, liveness', function () {
  let gw: TestGateway;
  let proxy: TestProxy;
  let token: string;

  beforeEach(async () => {
    gw = await startGateway({ override: { limits: { heartbeat_ms: 1000, pong_timeout_ms: 1000 } } });
    token = gw.token(CLAIMS);
    proxy = await startProxy({ targetPort: gw.port });
  });
  afterEach(async () => {
    clients.closeAll();
    await proxy.close();
    await gw.close();
  });

  for (const transport of TRANSPORTS) {
    it(`${transport}: after a dropped connection it resumes what it missed and sends the offline publishes in order`, async () => {
      const { client: c, states } = client({ url: proxy.url, token, transports: [transport], backoff: { baseMs: 100 } });
      const f = feed(c, 'team:1');
      await f.sub.ready;
      await waitFor(() => c.state === 'connected', 5000, 'connected');
      await c.publish('team:1', 'test.added', 'online');
      await waitFor(() => f.events.length === 1, 5000, 'the first event');

      proxy.refuse = true;
      proxy.dropAll();
      await waitFor(() => states.some((s) => s.state === 'reconnecting'), 5000, 'reconnecting');
      const missed = [await publishAs(gw, token, 'team:1', 'missed-1'), await publishAs(gw, token, 'team:1', 'missed-2')];
      const queued = ['offline-1', 'offline-2', 'offline-3'].map((d) => c.publish('team:1', 'test.added', d));
      await new Promise((r) => setTimeout(r, 300));
      proxy.refuse = false;

      const answers = await Promise.all(queued);
      await waitFor(() => f.events.length >= 6, 10_000, 'six events');
      await new Promise((r) => setTimeout(r, 300));
      expect(f.data()).to.deep.equal(['online', 'missed-1', 'missed-2', 'offline-1', 'offline-2', 'offline-3']);
      expect(f.events.slice(1, 3).map((e) => e.id)).to.deep.equal(missed);
      expect(f.events.slice(3).map((e) => e.id)).to.deep.equal(answers.map((a) => a.id));
      const h = await c.history('team:1', { since: '0-0', limit: 100 });
      expect(h.events.map((e) => e.data)).to.deep.equal(f.data());
      expect(states.some((s) => s.state === 'reconnecting' && typeof s.delay === 'number')).to.equal(true);
    });
  }

  it('drops events whose id is not after the last one kept (a wire that repeats frames)', async () => {
    // A WebSocket that hands every event frame over twice, and the previous one again after it.
    class Repeating extends WebSocket {
      constructor(url: string) {
        super(url);
        let previous: string | null = null;
        const deliver = (listener: ((ev: { data: unknown }) => void) | null, data: string) => listener?.call(this, { data });
        let own: ((ev: { data: unknown }) => void) | null = null;
        Object.defineProperty(this, 'onmessage', {
          get: () => own,
          set: (fn: ((ev: { data: unknown }) => void) | null) => {
            own = fn;
          },
        });
        this.on('message', (raw: Buffer) => {
          const data = raw.toString();
          deliver(own, data);
          if (JSON.parse(data).type !== 'event') return;
          deliver(own, data);
          if (previous) deliver(own, previous);
          previous = data;
        });
      }
    }
    const { client: c } = client({ url: gw.url, token, transports: ['websocket'], WebSocket: Repeating as unknown as ConnectOptions['WebSocket'] });
    await publishAs(gw, token, 'team:1', 'old');
    const f = feed(c, 'team:1', { since: '0-0' });
    await f.sub.ready;
    for (const n of [1, 2, 3]) await c.publish('team:1', 'test.added', n);
    await waitFor(() => f.events.length >= 4, 5000, 'four events');
    await new Promise((r) => setTimeout(r, 300));
    expect(f.data()).to.deep.equal(['old', 1, 2, 3]);
  });

  it('answers the server ping, and treats heartbeat + pong of silence as a dead connection', async () => {
    const { client: c, states } = client({ url: proxy.url, token, transports: ['websocket'], timeouts: { pongMs: 500 }, backoff: { baseMs: 100 } });
    const f = feed(c, 'team:1');
    await f.sub.ready;
    // Three heartbeats pass: the server's pings are answered, nothing closes.
    await new Promise((r) => setTimeout(r, 3200));
    expect(states.map((s) => s.state)).to.deep.equal(['connecting', 'connected']);

    proxy.frozen = true;
    await waitFor(() => c.state !== 'connected', 5000, 'the dead connection noticed');
    // Silence is counted from the last thing the client heard (a ping may have come just
    // before the freeze or a heartbeat earlier): heartbeat 1000 + pongMs 500.
    const silence = Date.now() - proxy.lastDownAt;
    expect(silence).to.be.within(1300, 2600);
    expect(states.find((s) => s.state === 'reconnecting')!.reason).to.match(/nothing heard/);
    proxy.frozen = false;
    proxy.dropAll();
    await waitFor(() => c.state === 'connected', 5000, 'reconnected');
    await publishAs(gw, token, 'team:1', 'after');
    await waitFor(() => f.events.length === 1, 5000, 'the event after the reconnect');
  });
});

describe('client SDK: backoff', function () {
  let server: Server;
  let url: string;
  let attempts: number[];

  beforeEach(async () => {
    attempts = [];
    const refuse = '{"error":{"code":"unavailable","message":"down for maintenance"}}';
    server = createServer((_req, res) => {
      attempts.push(Date.now());
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(refuse);
    });
    server.on('upgrade', (_req, socket) => {
      attempts.push(Date.now());
      socket.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: ${refuse.length}\r\nConnection: close\r\n\r\n${refuse}`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    clients.closeAll();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('waits base·2ⁿ (capped) between attempts against a server that refuses', async () => {
    const { client: c, states } = client({ url, token: 'x.y.z', transports: ['websocket'], backoff: { baseMs: 50, maxMs: 800, random: () => 0.999 } });
    await new Promise((r) => setTimeout(r, 3000));
    c.close();
    const delays = states.filter((s) => s.state === 'reconnecting').map((s) => s.delay!);
    const ceilings = delays.map((_, i) => Math.min(800, 50 * 2 ** i));
    expect(delays.slice(0, 5)).to.deep.equal(ceilings.slice(0, 5).map((x) => Math.floor(x * 0.999)));
    // 50+100+200+400+800+800 ≈ 2.35 s of waiting: seven attempts fit in 3 s, not more.
    expect(attempts.length).to.be.within(6, 8);
    for (let i = 1; i < attempts.length; i++) expect(attempts[i]! - attempts[i - 1]!).to.be.at.least(delays[i - 1]! - 5);
  });

  it('never loops tightly with full jitter, whatever the transports', async () => {
    const { client: c, states } = client({ url, token: 'x.y.z', backoff: { baseMs: 50 } });
    await new Promise((r) => setTimeout(r, 3000));
    c.close();
    const waits = states.filter((s) => s.state === 'reconnecting');
    // Every round tries the three transports once, then waits a random time below the ceiling.
    waits.forEach((s, i) => expect(s.delay!).to.be.below(Math.min(30_000, 50 * 2 ** i)));
    expect(waits.length).to.be.within(3, 10);
    expect(attempts.length).to.be.at.most(3 * (waits.length + 1));
    expect(attempts.length).to.be.at.least(6);
  });

  it('stops on 4003 and reports forbidden', async () => {
    const gw = await startGateway();
    try {
      const token = gw.token(CLAIMS);
      const { client: c, errors, states } = client({ url: gw.url, token, transports: ['websocket'] });
      await waitFor(() => c.state === 'connected', 5000, 'connected');
      gw.gateway.connections.closeAll(4003, 'tenant disabled');
      await waitFor(() => c.state === 'disconnected', 5000, 'stopped');
      await new Promise((r) => setTimeout(r, 500));
      expect(states.map((s) => s.state)).to.deep.equal(['connecting', 'connected', 'disconnected']);
      expect((errors[0] as { code?: string }).code).to.equal('forbidden');
      const late = await c.publish('team:1', 'test.added', 1).then(() => 'sent', (e: { code?: string }) => e.code);
      expect(late).to.equal('closed');
    } finally {
      await gw.close();
    }
  });
});

describe('client SDK: tokens', function () {
  let gw: TestGateway;

  beforeEach(async () => {
    gw = await startGateway();
  });
  afterEach(async () => {
    clients.closeAll();
    await gw.close();
  });

  it('calls getToken on token_expiring and refreshes the connection in place', async () => {
    let calls = 0;
    // The first token expires in 63 s: the server warns 60 s before, about 3 s in.
    const getToken = () => gw.token({ ...CLAIMS, ttlSeconds: ++calls === 1 ? 63 : 3600 });
    const { client: c, states, errors } = client({ url: gw.url, getToken, transports: ['websocket'] });
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    expect(calls).to.equal(1);
    await waitFor(() => calls === 2, 8000, 'getToken called again');
    await new Promise((r) => setTimeout(r, 300));
    expect(errors).to.deep.equal([]);
    expect(states.map((s) => s.state)).to.deep.equal(['connecting', 'connected']);
  });

  it('calls getToken after close 4001, then reconnects and resumes', async () => {
    let calls = 0;
    const getToken = async () => {
      calls++;
      return gw.token(CLAIMS);
    };
    const { client: c, states } = client({ url: gw.url, getToken, transports: ['websocket'], backoff: { baseMs: 100 } });
    const f = feed(c, 'team:1');
    await f.sub.ready;
    await c.publish('team:1', 'test.added', 'first');
    gw.gateway.connections.closeAll(4001, 'token expired');
    await waitFor(() => states.filter((s) => s.state === 'connected').length === 2, 5000, 'reconnected');
    expect(states.find((s) => s.state === 'reconnecting')).to.include({ closeCode: 4001 });
    expect(calls).to.equal(2);
    await c.publish('team:1', 'test.added', 'second');
    await waitFor(() => f.events.length === 2, 5000, 'two events');
    expect(f.data()).to.deep.equal(['first', 'second']);
  });

  it('renews a refused token after HTTP 401 (long-polling)', async () => {
    let calls = 0;
    const getToken = () => {
      calls++;
      return gw.token(CLAIMS);
    };
    const expired = gw.token({ ...CLAIMS, ttlSeconds: -10 });
    const bad = expired.slice(0, -4) + 'AAAA';
    const { client: c, errors } = client({ url: gw.url, token: bad, getToken, transports: ['poll'] });
    const f = feed(c, 'team:1');
    await f.sub.ready;
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    expect(calls).to.be.at.least(1);
    await c.publish('team:1', 'test.added', 'ok');
    await waitFor(() => f.events.length === 1, 5000, 'the event');
    expect(errors).to.deep.equal([]);
  });

  it('stops with unauthorized when a fixed token is refused', async () => {
    const bad = gw.token(CLAIMS).slice(0, -4) + 'AAAA';
    const { client: c, errors } = client({ url: gw.url, token: bad, transports: ['poll'] });
    feed(c, 'team:1');
    await waitFor(() => c.state === 'disconnected', 5000, 'stopped');
    expect(errors.map((e) => (e as { code?: string }).code)).to.include('unauthorized');
  });
});

describe('client SDK: capability detection', function () {
  let gw: TestGateway;
  let token: string;
  const proxies: TestProxy[] = [];

  beforeEach(async () => {
    gw = await startGateway();
    token = gw.token(CLAIMS);
  });
  afterEach(async () => {
    clients.closeAll();
    for (const p of proxies.splice(0)) await p.close();
    await gw.close();
  });

  async function proxyWith(options: { websocket?: 'pass' | 'refuse' | 'blackhole'; sse?: 'pass' | 'buffer' }) {
    const p = await startProxy({ targetPort: gw.port, ...options });
    proxies.push(p);
    return p;
  }

  it('falls back to SSE when the WebSocket upgrade is refused', async () => {
    const p = await proxyWith({ websocket: 'refuse' });
    const { client: c, states } = client({ url: p.url, token });
    const f = feed(c, 'team:1');
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    expect(c.transport).to.equal('sse');
    expect(states.filter((s) => s.state === 'connecting').map((s) => s.transport)).to.deep.equal(['websocket', 'sse']);
    await c.publish('team:1', 'test.added', 'over sse');
    await waitFor(() => f.events.length === 1, 5000, 'the event');
  });

  it('falls back when the proxy accepts the upgrade but passes no frame (no welcome in time)', async () => {
    const p = await proxyWith({ websocket: 'blackhole' });
    const { client: c } = client({ url: p.url, token, timeouts: { connectMs: 700 } });
    const f = feed(c, 'team:1');
    await waitFor(() => c.state === 'connected', 5000, 'connected');
    expect(c.transport).to.equal('sse');
    await c.publish('team:1', 'test.added', 'x');
    await waitFor(() => f.events.length === 1, 5000, 'the event');
  });

  it('falls back to long-polling when SSE is buffered, without losing events published meanwhile', async () => {
    const p = await proxyWith({ websocket: 'refuse', sse: 'buffer' });
    const { client: c } = client({ url: p.url, token, timeouts: { connectMs: 700 } });
    const f = feed(c, 'team:1');
    await f.sub.ready;
    await publishAs(gw, token, 'team:1', 'while detecting');
    await waitFor(() => c.state === 'connected' && c.transport === 'poll', 5000, 'connected over poll');
    await c.publish('team:1', 'test.added', 'over poll');
    await waitFor(() => f.events.length === 2, 5000, 'two events');
    expect(f.data()).to.deep.equal(['while detecting', 'over poll']);
  });

  it('remembers a transport that keeps failing for the session, and goes back to the better one once it works', async () => {
    const storage = memoryStorage();
    const p = await proxyWith({ websocket: 'refuse' });
    const timeouts = { retryBetterMs: 1000 };
    // Two clients of one page session find WebSocket broken: it has failed twice in a row.
    for (let n = 0; n < 2; n++) {
      const w = client({ url: p.url, token, storage, timeouts });
      feed(w.client, 'team:1');
      await waitFor(() => w.client.transport === 'sse', 5000, 'a client on sse');
      expect(w.states[0]).to.include({ state: 'connecting', transport: 'websocket' });
      w.client.close();
    }
    const upgradesBefore = p.counts.upgrades;

    // The next one does not try WebSocket first.
    const third = client({ url: p.url, token, storage, timeouts });
    const f = feed(third.client, 'team:1');
    await waitFor(() => third.client.transport === 'sse', 5000, 'the third client on sse');
    expect(third.states[0]).to.include({ state: 'connecting', transport: 'sse' });
    expect(p.counts.upgrades).to.equal(upgradesBefore);

    // The proxy now passes WebSocket: once its time is up, the client goes back to it by itself.
    p.options.websocket = 'pass';
    await waitFor(() => third.client.transport === 'websocket', 6000, 'back on websocket');
    await publishAs(gw, token, 'team:1', 'on websocket');
    await waitFor(() => f.events.length === 1, 5000, 'the event');
    expect(f.data()).to.deep.equal(['on websocket']);
  });
});

describe('client SDK: resume across a gateway restart (Redis)', function () {
  this.timeout(40_000);
  const prefixes: string[] = [];

  before(async function () {
    const redis = new Redis(testRedisUrl(), { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
    redis.on('error', () => undefined);
    try {
      await redis.connect();
      await redis.ping();
    } catch {
      console.warn(`    skipping: no Redis at ${testRedisUrl()}; events would not survive the restart`);
      this.skip();
    } finally {
      redis.disconnect();
    }
  });
  after(async () => {
    for (const p of prefixes) await deleteKeysWithPrefix(p);
  });

  for (const transport of TRANSPORTS) {
    it(`${transport}: after the gateway restarts on the same port it receives what it missed, once each, and its offline publishes`, async () => {
      const keyPrefix = uniquePrefix();
      prefixes.push(keyPrefix);
      const redisUrl = testRedisUrl();
      let gw1: TestGateway | null = await startGateway({ redisUrl, keyPrefix });
      const port = gw1.port;
      const token = gw1.token(CLAIMS);
      let gw2: TestGateway | null = null;
      let gw3: TestGateway | null = null;
      try {
        const { client: c, states } = client({ url: gw1.url, token, transports: [transport], backoff: { baseMs: 200, maxMs: 1000 } });
        const f = feed(c, 'team:1');
        const other = feed(c, 'team:2');
        await Promise.all([f.sub.ready, other.sub.ready]);
        await waitFor(() => c.state === 'connected', 5000, 'connected');
        await c.publish('team:1', 'test.added', 'before');
        await waitFor(() => f.events.length === 1, 5000, 'the first event');

        await gw1.close();
        gw1 = null;
        await waitFor(() => states.some((s) => s.state === 'reconnecting'), 5000, 'reconnecting');
        // Another node of the same Redis takes publishes while this one is down.
        gw2 = await startGateway({ redisUrl, keyPrefix });
        const missed = [await publishAs(gw2, token, 'team:1', 'missed-1'), await publishAs(gw2, token, 'team:1', 'missed-2')];
        await publishAs(gw2, token, 'team:2', 'missed-other');
        const queued = c.publish('team:1', 'test.added', 'offline');

        gw3 = await startGateway({ redisUrl, keyPrefix });
        await gw3.gateway.listen(port, '127.0.0.1');
        await queued;
        await waitFor(() => f.events.length >= 4 && other.events.length >= 1, 15_000, 'the missed events');
        await publishAs(gw3, token, 'team:1', 'live');
        await waitFor(() => f.events.length >= 5, 5000, 'the live event');
        await new Promise((r) => setTimeout(r, 300));
        expect(f.data()).to.deep.equal(['before', 'missed-1', 'missed-2', 'offline', 'live']);
        expect(f.events.slice(1, 3).map((e) => e.id)).to.deep.equal(missed);
        expect(other.data()).to.deep.equal(['missed-other']);
        expect(f.resets).to.deep.equal([]);
        expect(c.transport).to.equal(transport);
      } finally {
        clients.closeAll();
        await gw1?.close();
        await gw2?.close();
        await gw3?.close();
      }
    });
  }
});
