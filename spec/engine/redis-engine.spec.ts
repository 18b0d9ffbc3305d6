/**
 * What only the Redis engine has: key layout, surviving a Redis crash, consumer-group
 * take-over, trim tracking, idempotency keys in Redis, resuming the live feed. The
 * behaviour both engines share is in the contract suite.
 */
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { StreamgateError } from '../../lib/errors.js';
import { compareIds } from '../../lib/protocol/event-id.js';
import type { LogEvent, LogFeed, Retention } from '../../lib/engine/engine.js';
import { EngineKeys, shardOf } from '../../lib/engine/keys.js';
import { RedisEngine, type RedisEngineOptions } from '../../lib/engine/redis-engine.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';

const SHARDS = 4;

/** Polls `done` until it holds; fails after `ms`. */
async function until(done: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The code of the StreamgateError `p` rejects with (fails when it resolves). */
async function errorCodeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(StreamgateError);
    return (err as StreamgateError).code;
  }
  throw new Error('expected a rejection');
}

/** Every event the feed delivered, and per channel in order. */
function collector(): { events: LogEvent[]; listener: (batch: LogEvent[]) => void } {
  const events: LogEvent[] = [];
  return { events, listener: (batch) => events.push(...batch) };
}

describe('RedisEngine (Redis specifics)', function () {
  this.timeout(20_000);

  let prefix: string;
  let engines: RedisEngine[];
  let clients: Redis[];
  let servers: RedisServer[];

  beforeEach(() => {
    prefix = uniquePrefix();
    engines = [];
    clients = [];
    servers = [];
  });

  afterEach(async () => {
    await Promise.all(engines.map((e) => e.close()));
    for (const c of clients) c.disconnect();
    await Promise.all(servers.map((s) => s.stop()));
    await deleteKeysWithPrefix(prefix);
  });

  async function engine(options: Partial<RedisEngineOptions> = {}, retention: Retention = { count: 1000, seconds: 3600 }): Promise<RedisEngine> {
    const e = await RedisEngine.create({
      url: testRedisUrl(),
      keyPrefix: prefix,
      shards: SHARDS,
      logMaxLength: 10_000,
      retention: () => retention,
      ...options,
    });
    engines.push(e);
    return e;
  }

  function client(url = testRedisUrl()): Redis {
    const c = new Redis(url);
    clients.push(c);
    return c;
  }

  it('appends an event to its shard log and its channel stream with the same id, under {s<n>} keys', async () => {
    const e = await engine();
    const { id } = await e.publish({
      tenant: 'acme', channel: 'room:1', event: 'goal.updated', dataJson: '{"a":1}', publisher: { id: 'u1', name: 'Ann' },
    });
    const shard = shardOf('acme', 'room:1', SHARDS);
    const keys = new EngineKeys(prefix, SHARDS).channel('acme', 'room:1');
    expect(keys.log).to.equal(`${prefix}:{s${shard}}:log`);
    expect(keys.stream).to.equal(`${prefix}:{s${shard}}:ch:acme:room:1`);
    expect(keys.meta).to.equal(`${prefix}:{s${shard}}:meta:acme:room:1`);

    const r = client();
    const log = (await r.xrange(keys.log, '-', '+')) as Array<[string, string[]]>;
    const ch = (await r.xrange(keys.stream, '-', '+')) as Array<[string, string[]]>;
    expect(log.map(([i]) => i)).to.deep.equal([id]);
    expect(ch.map(([i]) => i)).to.deep.equal([id]);
    expect(log[0]![1]).to.include.members(['tenant', 'acme', 'channel', 'room:1', 'goal.updated', '{"a":1}', 'normal']);
    expect(ch[0]![1]).not.to.include('tenant');
    expect(await r.hget(keys.meta, 'last')).to.equal(id);
    expect(await r.pttl(keys.stream)).to.be.greaterThan(0);
    expect(await r.pttl(keys.meta)).to.be.greaterThan(await r.pttl(keys.stream));

    const all: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      all.push(...found);
    } while (cursor !== '0');
    for (const key of all) expect(key).to.match(/^sgt-[0-9a-f-]+:\{s\d+\}:/);
    expect(all).to.include.members([keys.log, keys.stream, keys.meta]);
  });

  it('keeps every acknowledged event across a SIGKILL of Redis, and refuses publishes quickly while it is down', async function () {
    const server = await startRedisServer({ appendonly: true });
    servers.push(server);
    const e = await engine({ url: server.url });
    const seen = collector();
    const feed = await e.subscribeLog('latest', seen.listener);

    const channels = ['room:1', 'room:2', 'dm:a:b', 'team:9'];
    const acked: Array<{ channel: string; id: string }> = [];
    const refusals: Array<{ code: string; ms: number }> = [];
    let stop = false;
    const publisher = (async () => {
      const deadline = Date.now() + 15_000;
      for (let i = 0; !stop && i < 50_000 && Date.now() < deadline; i++) {
        const channel = channels[i % channels.length]!;
        const started = Date.now();
        try {
          const { id } = await e.publish({ tenant: 't', channel, event: 'n', dataJson: String(i) });
          acked.push({ channel, id });
        } catch (err) {
          refusals.push({ code: err instanceof StreamgateError ? err.code : String(err), ms: Date.now() - started });
          await sleep(20);
        }
      }
    })();

    await until(() => acked.length >= 200, 5000, '200 publishes before the crash');
    await server.kill('SIGKILL');
    await until(() => refusals.length >= 5, 5000, 'refused publishes while Redis is down');
    expect(await errorCodeOf(e.ping())).to.equal('unavailable');
    const ackedBeforeRestart = acked.length;
    await server.restart();
    await until(() => acked.length >= ackedBeforeRestart + 200, 10_000, '200 publishes after the restart');
    stop = true;
    await publisher;

    const seenIds = new Set<string>();
    let scanned = 0;
    await until(() => {
      for (; scanned < seen.events.length; scanned++) seenIds.add(seen.events[scanned]!.channel + ' ' + seen.events[scanned]!.id);
      return acked.every((a) => seenIds.has(a.channel + ' ' + a.id));
    }, 10_000, 'the live feed to catch up');

    for (const channel of channels) {
      const fed = seen.events.filter((x) => x.channel === channel).map((x) => x.id);
      for (let i = 1; i < fed.length; i++) expect(compareIds(fed[i - 1]!, fed[i]!)).to.be.lessThan(0);
      // Durable, not just delivered before the crash: the channel still holds every acknowledged event.
      const stored = new Set((await e.history('t', channel, { since: '0-0', limit: 1000 })).events.map((x) => x.id));
      for (const a of acked) if (a.channel === channel) expect(stored.has(a.id), a.id).to.equal(true);
    }
    expect(refusals.length).to.be.greaterThan(0);
    for (const r of refusals) {
      expect(r.code).to.equal('unavailable');
      expect(r.ms).to.be.lessThan(5000);
    }
    await feed.close();
  });

  it('refuses a publish with unavailable within the command timeout when Redis hangs', async () => {
    const server = await startRedisServer();
    servers.push(server);
    const e = await engine({ url: server.url, commandTimeoutMs: 300 });
    await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '1' });
    server.pause();
    try {
      const started = Date.now();
      expect(await errorCodeOf(e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '2' }))).to.equal('unavailable');
      expect(await errorCodeOf(e.ping())).to.equal('unavailable');
      expect(Date.now() - started).to.be.within(250, 2000);
    } finally {
      server.resume();
    }
    const { id } = await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '3' });
    expect(await e.position('t', 'room:1')).to.equal(id);
  });

  it('lets another consumer take over entries a dead consumer never acknowledged', async () => {
    const e = await engine();
    await e.ensureGroup('notifier');
    await e.ensureGroup('notifier'); // idempotent
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      ids.push((await e.publish({ tenant: 't', channel: `room:${i}`, event: 'n', dataJson: String(i) })).id);
    }
    const taken = await e.readGroup('notifier', 'dead', { count: 100 });
    expect(taken.map((x) => x.id)).to.have.members(ids);
    expect(taken.every((x) => x.event.tenant === 't' && x.shard === shardOf('t', x.event.channel, SHARDS))).to.equal(true);

    expect(await e.claimStale('notifier', 'alive', { minIdleMs: 60_000 })).to.deep.equal([]);
    await sleep(60);
    const claimed = await e.claimStale('notifier', 'alive', { minIdleMs: 50 });
    expect(claimed.map((x) => x.id)).to.have.members(ids);
    // Ids are unique per shard log, not across shards: find the event by its channel.
    expect(claimed.find((x) => x.event.channel === 'room:2')!.event.dataJson).to.equal('2');
    expect(await e.ack('notifier', claimed)).to.equal(6);
    await sleep(60);
    expect(await e.claimStale('notifier', 'other', { minIdleMs: 50 })).to.deep.equal([]);
    expect(await e.readGroup('notifier', 'alive', { count: 100 })).to.deep.equal([]);
  });

  it('honours count and blockMs in group reads', async () => {
    const e = await engine();
    await e.ensureGroup('archiver', 'latest');
    for (let i = 0; i < 10; i++) await e.publish({ tenant: 't', channel: `c:${i}`, event: 'n', dataJson: '1' });
    expect(await e.readGroup('archiver', 'a', { count: 4 })).to.have.length(4);
    expect(await e.readGroup('archiver', 'a', { count: 100 })).to.have.length(6);
    const started = Date.now();
    const waiting = e.readGroup('archiver', 'a', { count: 100, blockMs: 5000 });
    await sleep(50);
    const { id } = await e.publish({ tenant: 't', channel: 'late', event: 'n', dataJson: '1' });
    expect((await waiting).map((x) => x.id)).to.deep.equal([id]);
    expect(Date.now() - started).to.be.lessThan(2000);
    expect(await e.readGroup('archiver', 'a', { count: 10, blockMs: 100 })).to.deep.equal([]);
  });

  it('records what retention trimmed, so history says recovered:false only for a since before it', async () => {
    const e = await engine({}, { count: 5, seconds: 3600 });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: String(i) })).id);
    const r = client();
    const keys = new EngineKeys(prefix, SHARDS).channel('t', 'room:1');
    const trimmed = await r.hget(keys.meta, 'trimmed');
    expect(trimmed).to.be.a('string');
    const len = await r.xlen(keys.stream);
    expect(len).to.be.within(5, 6);
    expect(trimmed).to.equal(ids[19 - len]);

    const old = await e.history('t', 'room:1', { since: ids[0]!, limit: 100 });
    expect(old.recovered).to.equal(false);
    expect(old.events.map((x) => x.id)).to.deep.equal(ids.slice(20 - len));
    expect(old.position).to.equal(ids[19]);
    expect((await e.history('t', 'room:1', { since: '0-0', limit: 100 })).recovered).to.equal(false);
    const recent = await e.history('t', 'room:1', { since: ids[16]!, limit: 2 });
    expect(recent.recovered).to.equal(true);
    expect(recent.events.map((x) => x.id)).to.deep.equal([ids[17], ids[18]]);
    const latest = await e.history('t', 'room:1', { limit: 3 });
    expect(latest).to.deep.include({ recovered: true, position: ids[19] });
    expect(latest.events.map((x) => x.id)).to.deep.equal(ids.slice(17));
  });

  it('trims by age and treats an expired channel stream as trimmed', async () => {
    const e = await engine({}, { count: 1000, seconds: 1 });
    const first = (await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '1' })).id;
    await sleep(1100);
    const second = (await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '2' })).id;
    const keys = new EngineKeys(prefix, SHARDS).channel('t', 'room:1');
    const r = client();
    expect(await r.hget(keys.meta, 'trimmed')).to.equal(first);
    const h = await e.history('t', 'room:1', { since: '0-0', limit: 10 });
    expect(h).to.deep.include({ recovered: false, position: second });
    expect(h.events.map((x) => x.id)).to.deep.equal([second]);
    expect((await e.history('t', 'room:1', { since: first, limit: 10 })).recovered).to.equal(true);

    // An idle channel's stream expires before its meta: what it held counts as trimmed.
    await r.del(keys.stream);
    expect((await e.history('t', 'room:1', { since: first, limit: 10 })).recovered).to.equal(false);
    const third = (await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '3' })).id;
    expect(await r.hget(keys.meta, 'trimmed')).to.equal(second);
    const after = await e.history('t', 'room:1', { since: first, limit: 10 });
    expect(after.recovered).to.equal(false);
    expect(after.events.map((x) => x.id)).to.deep.equal([third]);
  });

  it('answers an idempotent publish with the first id, also from another engine, and appends once', async () => {
    const a = await engine();
    const first = await a.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '1', idempotencyKey: 'order-42' });
    expect(first.duplicate).to.equal(false);
    const again = await a.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '2', idempotencyKey: 'order-42' });
    expect(again).to.deep.equal({ ...first, duplicate: true });
    await a.close();

    const b = await engine();
    const later = await b.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '3', idempotencyKey: 'order-42' });
    expect(later).to.deep.equal({ ...first, duplicate: true });
    const elsewhere = await b.publish({ tenant: 't', channel: 'room:2', event: 'n', dataJson: '4', idempotencyKey: 'order-42' });
    expect(elsewhere.duplicate).to.equal(false);

    const keys = new EngineKeys(prefix, SHARDS);
    const r = client();
    expect(await r.xlen(keys.channel('t', 'room:1').stream)).to.equal(1);
    const ttl = await r.ttl(keys.idem('t', 'room:1', 'order-42'));
    expect(ttl).to.be.within(86_000, 86_400);
    const h = await b.history('t', 'room:1', { limit: 10 });
    expect(h.events.map((x) => x.dataJson)).to.deep.equal(['1']);
  });

  it('replays to a feed started from saved positions what was published while it was closed', async () => {
    const e = await engine();
    const before = collector();
    const feed1 = await e.subscribeLog('latest', before.listener);
    const early = await e.publish({ tenant: 't', channel: 'room:1', event: 'n', dataJson: '0' });
    await until(() => before.events.length === 1, 5000, 'the first event');
    const positions = feed1.positions();
    expect(positions).to.have.length(SHARDS);
    const closing = Date.now();
    await feed1.close();
    expect(Date.now() - closing).to.be.lessThan(1000);

    const missed: Array<{ channel: string; id: string }> = [];
    for (let i = 0; i < 12; i++) {
      const channel = `room:${i % 3}`;
      missed.push({ channel, id: (await e.publish({ tenant: 't', channel, event: 'n', dataJson: String(i) })).id });
    }
    const after = collector();
    const feed2: LogFeed = await e.subscribeLog(positions, after.listener);
    await until(() => after.events.length >= missed.length, 5000, 'the replay');
    const got = after.events.map((x) => ({ channel: x.channel, id: x.id }));
    expect(got).to.have.deep.members(missed);
    // ids are unique per channel (two shards may use the same id), so compare both
    expect(got).not.to.deep.include({ channel: 'room:1', id: early.id });
    for (const channel of ['room:0', 'room:1', 'room:2']) {
      const order = got.filter((x) => x.channel === channel).map((x) => x.id);
      expect([...order].sort(compareIds)).to.deep.equal(order);
    }
    expect(before.events).to.have.length(1);
    await feed2.close();
  });

  it('fails to start with unavailable when Redis does not answer', async () => {
    const server = await startRedisServer();
    await server.stop();
    const started = Date.now();
    const creating = RedisEngine.create({ url: server.url, keyPrefix: prefix, shards: 1, logMaxLength: 10, retention: () => ({ count: 1, seconds: 1 }) });
    expect(await errorCodeOf(creating)).to.equal('unavailable');
    expect(Date.now() - started).to.be.lessThan(5000);
  });
});
