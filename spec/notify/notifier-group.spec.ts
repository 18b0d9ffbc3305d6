/**
 * The notifier's group operations on real Redis: delivery counts (XPENDING), the
 * idle refresh that only touches the caller's own entries, and the in-process
 * counting used without Redis.
 */
import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { RedisEngine } from '../../lib/engine/redis-engine.js';
import { MemoryNotifierGroup, RedisNotifierGroup } from '../../lib/notify/notifier-group.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';

const GROUP = 'notifier';

describe('notifier group operations', () => {
  let prefix: string;
  let engine: RedisEngine;
  let redis: Redis;
  let group: RedisNotifierGroup;

  beforeEach(async () => {
    prefix = uniquePrefix();
    engine = await RedisEngine.create({ url: testRedisUrl(), keyPrefix: prefix, shards: 2, logMaxLength: 1000, retention: () => ({ count: 100, seconds: 3600 }) });
    redis = new Redis(testRedisUrl());
    group = new RedisNotifierGroup(redis, prefix, 2, GROUP);
    await engine.ensureGroup(GROUP, 'latest');
  });

  afterEach(async () => {
    redis.disconnect();
    await engine.close();
    await deleteKeysWithPrefix(prefix);
  });

  const publish = (channel: string) => engine.publish({ tenant: 'acme', channel, event: 'x', dataJson: '{}', priority: 'normal', publisher: null });

  it('counts deliveries with XPENDING: one per read and per claim', async () => {
    await publish('user:a');
    await publish('user:b');
    const read = await engine.readGroup(GROUP, 'c1', { count: 10 });
    expect(read).to.have.length(2);
    expect(await group.deliveries(read)).to.deep.equal([1, 1]);
    const claimed = await engine.claimStale(GROUP, 'c2', { minIdleMs: 0 });
    const again = await engine.claimStale(GROUP, 'c3', { minIdleMs: 0 });
    expect(claimed).to.have.length(2);
    expect(await group.deliveries(again)).to.deep.equal([3, 3]);
    await engine.ack(GROUP, again);
    // Acknowledged meanwhile: counted as a first delivery.
    expect(await group.deliveries(again)).to.deep.equal([1, 1]);
  });

  it('refreshes the idle time of the caller\'s own entries only, without counting a delivery', async () => {
    await publish('user:a');
    const [entry] = await engine.readGroup(GROUP, 'owner', { count: 1 });
    await sleep(120);
    expect(await group.touch('owner', [entry!])).to.equal(1);
    // Not idle for 100 ms any more: nobody can claim it.
    expect(await engine.claimStale(GROUP, 'thief', { minIdleMs: 100 })).to.deep.equal([]);
    expect(await group.deliveries([entry!])).to.deep.equal([1]);
    await sleep(120);
    expect(await engine.claimStale(GROUP, 'thief', { minIdleMs: 100 })).to.have.length(1);
    // Claimed by another meanwhile: the old owner's touch leaves it alone.
    expect(await group.touch('owner', [entry!])).to.equal(0);
    const pending = (await redis.call('XPENDING', `${prefix}:{s${entry!.shard}}:log`, GROUP, '-', '+', 10)) as unknown[][];
    expect(pending.map((p) => p[1])).to.deep.equal(['thief']);
  });

  it('removes idle consumers with nothing pending, never one with pending entries or the caller', async () => {
    await publish('user:a');
    await publish('user:b');
    await publish('user:c');
    const a = await engine.readGroup(GROUP, 'done', { count: 1 });
    await engine.ack(GROUP, a);
    await engine.readGroup(GROUP, 'busy', { count: 1 });
    await engine.readGroup(GROUP, 'me', { count: 1 });
    await sleep(30);
    expect(await group.removeIdleConsumers('me', 10_000)).to.equal(0);
    // Consumers exist per shard log: "done" in one or two of them.
    expect(await group.removeIdleConsumers('me', 10)).to.be.at.least(1);
    const names: string[] = [];
    for (const shard of [0, 1]) {
      const consumers = (await redis.call('XINFO', 'CONSUMERS', `${prefix}:{s${shard}}:log`, GROUP)) as unknown[][];
      names.push(...consumers.map((c) => String(c[1])));
    }
    expect([...new Set(names)].sort()).to.deep.equal(['busy', 'me']);
  });

  it('counts in the process when there is no Redis', async () => {
    const memory = new MemoryNotifierGroup();
    const e = { shard: 0, id: '1-0', event: { id: '1-0', tenant: 'acme', channel: 'user:a', event: 'x', dataJson: '{}', timestamp: '0', priority: 'normal' as const, publisher: null } };
    expect(await memory.deliveries([e])).to.deep.equal([1]);
    memory.claimed([e]);
    memory.claimed([e]);
    expect(await memory.deliveries([e])).to.deep.equal([3]);
    memory.forget([e]);
    expect(await memory.deliveries([e])).to.deep.equal([1]);
  });
});
