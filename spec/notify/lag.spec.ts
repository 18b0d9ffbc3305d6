/**
 * The notifier's lag gauges and trim-gap detection against real Redis: the gauges a
 * worker refreshes (scraped from its registry) while nobody reads the log and once a
 * notifier catches up, and the entries a trim took from under the group, counted
 * once whether the group is still before the gap or already read past it.
 */
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { RedisEngine } from '../../lib/engine/redis-engine.js';
import { EngineKeys } from '../../lib/engine/keys.js';
import { NotifierLagMonitor } from '../../lib/notify/lag-monitor.js';
import { NOTIFIER_GROUP } from '../../lib/notify/notifier.js';
import { runWorker, type RunningWorker } from '../../lib/notify/worker.js';
import { databases, type TestDatabase } from '../support/databases.js';
import { eventually, openNotifyEnv, type NotifyEnv } from '../support/notify.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';

const TENANT = 'acme';
const sqlite = databases.find((d) => d.name === 'sqlite') ?? databases[0]!;

/** A metric's value as a scrape shows it (0 when absent). */
async function scrape(registry: Registry, name: string): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (metric?.values[0]?.value as number | undefined) ?? 0;
}

describe('notifier lag gauges', function () {
  this.timeout(20_000);

  describe('in the worker', () => {
    let db: TestDatabase;
    let env: NotifyEnv;
    const workers: RunningWorker[] = [];

    beforeEach(async () => {
      db = await sqlite.open();
      env = await openNotifyEnv(db);
    });

    afterEach(async () => {
      try {
        for (const w of workers.splice(0)) await w.close();
      } finally {
        await env.close();
        await db.cleanup();
      }
    });

    const start = async (registry: Registry, runNotifier: boolean) => {
      const w = await runWorker({
        config: env.config(),
        engine: env.engine,
        store: { knex: env.knex, rooms: env.rooms },
        registry,
        runNotifier,
        runSenders: runNotifier,
        lagIntervalMs: 50,
        notifier: { blockMs: 100, claimIntervalMs: 100 },
        closeTimeoutMs: 2000,
        log: () => undefined,
      });
      workers.push(w);
      return w;
    };

    it('reads N while no notifier runs, and drops to 0 once one has handled them', async () => {
      const N = 37;
      // The group exists (a worker ran before), then events come while none runs.
      await env.engine.ensureGroup(NOTIFIER_GROUP, 'latest');
      for (let i = 0; i < N; i++) {
        await env.engine.publish({ tenant: TENANT, channel: `user:u${i}`, event: 'ping', dataJson: '{"title":"hi"}', priority: 'normal', publisher: null });
      }

      const watching = new Registry();
      await start(watching, false);
      expect(await scrape(watching, 'streamgate_notifier_lag_entries')).to.equal(N);
      expect(await scrape(watching, 'streamgate_notifier_pending_entries')).to.equal(0);
      expect(await scrape(watching, 'streamgate_notifier_skipped_total')).to.equal(0);
      const text = await watching.metrics();
      expect(text).to.match(new RegExp(`^streamgate_notifier_lag_entries ${N}$`, 'm'));

      const registry = new Registry();
      await start(registry, true);
      await eventually(async () => (await env.stores.notifications.list(TENANT, `u${N - 1}`)).notifications.length === 1, 'the last notification');
      await eventually(async () => (await scrape(registry, 'streamgate_notifier_lag_entries')) === 0, 'a lag of 0');
      await eventually(async () => (await scrape(registry, 'streamgate_notifier_pending_entries')) === 0, 'nothing pending');
      // The watching worker sees the same.
      await eventually(async () => (await scrape(watching, 'streamgate_notifier_lag_entries')) === 0, 'a lag of 0 for the other worker');
      expect(await scrape(registry, 'streamgate_notifier_skipped_total')).to.equal(0);
    });
  });

  describe('trim gaps', () => {
    let prefix: string;
    let engine: RedisEngine;
    let redis: Redis;
    let registry: Registry;
    let monitor: NotifierLagMonitor;
    let logs: string[];
    const log = () => new EngineKeys(prefix, 1).log(0);

    beforeEach(async () => {
      prefix = uniquePrefix();
      // One shard: every event in one log, so the counts are exact.
      engine = await RedisEngine.create({ url: testRedisUrl(), keyPrefix: prefix, shards: 1, logMaxLength: 100_000, retention: () => ({ count: 1000, seconds: 3600 }) });
      redis = new Redis(testRedisUrl());
      registry = new Registry();
      logs = [];
      monitor = new NotifierLagMonitor({ redis, keyPrefix: prefix, shards: 1, group: NOTIFIER_GROUP, registry, log: (l) => logs.push(l) });
      await engine.ensureGroup(NOTIFIER_GROUP, 'latest');
    });

    afterEach(async () => {
      await monitor.stop();
      redis.disconnect();
      await engine.close();
      await deleteKeysWithPrefix(prefix);
    });

    const publish = async (n: number) => {
      for (let i = 0; i < n; i++) await engine.publish({ tenant: TENANT, channel: `user:u${i % 7}`, event: 'ping', dataJson: '{}', priority: 'normal', publisher: null });
    };
    /** Read everything there is, and acknowledge it, as a notifier would. */
    const drain = async () => {
      for (let i = 0; i < 100; i++) {
        const entries = await engine.readGroup(NOTIFIER_GROUP, 'reader', { count: 100 });
        if (entries.length === 0) return;
        await engine.ack(NOTIFIER_GROUP, entries);
      }
    };
    const trimTo = (n: number) => redis.call('XTRIM', log(), 'MAXLEN', n);

    it('counts entries trimmed before the group read them, once, while the group is still behind the gap', async () => {
      await publish(3);
      await drain();
      await publish(50);
      expect(await monitor.refresh()).to.include({ lag: 50, skipped: 0 });
      await trimTo(8);
      const sample = await monitor.refresh();
      expect(sample).to.include({ lag: 8, skipped: 42 });
      expect(await scrape(registry, 'streamgate_notifier_skipped_total')).to.equal(42);
      expect(await scrape(registry, 'streamgate_notifier_lag_entries')).to.equal(8);
      expect(logs.join('\n')).to.match(/42 entries of .*:log were trimmed before the notifier group read them/);
      // Counted once, however often it is looked at.
      expect((await monitor.refresh()).skipped).to.equal(0);
      expect(await scrape(registry, 'streamgate_notifier_skipped_total')).to.equal(42);
      // Redis's own lag is right again: it reaches 0 once the rest is read.
      await drain();
      expect(await monitor.refresh()).to.include({ lag: 0, skipped: 0 });
      const [group] = (await redis.call('XINFO', 'GROUPS', log())) as unknown[][];
      const fields = Object.fromEntries(Array.from({ length: group!.length / 2 }, (_, i) => [group![2 * i], group![2 * i + 1]]));
      expect(fields.lag).to.equal(0);
    });

    it('counts them too when the group already read past the gap before anyone looked', async () => {
      await publish(3);
      await drain();
      await publish(30);
      await trimTo(5);
      // The notifier's next read jumps the gap; Redis's lag keeps counting the lost entries.
      const jumped = await engine.readGroup(NOTIFIER_GROUP, 'reader', { count: 2 });
      await engine.ack(NOTIFIER_GROUP, jumped);
      const sample = await monitor.refresh();
      expect(sample).to.include({ lag: 3, skipped: 25, pending: 0 });
      expect((await monitor.refresh()).skipped).to.equal(0);
      await drain();
      expect(await monitor.refresh()).to.include({ lag: 0, skipped: 0 });
      expect(await scrape(registry, 'streamgate_notifier_skipped_total')).to.equal(25);
    });

    it('past countLimit, counts the certain part of a gap at once and the rest once the lag comes down', async () => {
      const small = new NotifierLagMonitor({ redis, keyPrefix: prefix, shards: 1, group: NOTIFIER_GROUP, registry: new Registry(), countLimit: 2 });
      await publish(3);
      await drain();
      await publish(30);
      await trimTo(5);
      await engine.ack(NOTIFIER_GROUP, await engine.readGroup(NOTIFIER_GROUP, 'reader', { count: 2 }));
      // 3 entries left to read, but only "at most length - 1 = 4" is certain without counting.
      expect(await small.refresh()).to.include({ lag: 4, skipped: 24 });
      expect(await small.refresh()).to.include({ lag: 4, skipped: 0 });
      await drain();
      expect(await small.refresh()).to.include({ lag: 0, skipped: 1 });
      expect((await small.skipped.get()).values[0]?.value).to.equal(25);
    });

    it('counts no gap for trims of entries the group had read, and counts the lag of a group created at $', async () => {
      // Created at $ and never caught up: Redis has no entries-read, so no lag either.
      await publish(20);
      expect(await monitor.refresh()).to.include({ lag: 20, skipped: 0 });
      const partial = await engine.readGroup(NOTIFIER_GROUP, 'reader', { count: 5 });
      expect(await monitor.refresh()).to.include({ lag: 15, pending: 5, skipped: 0 });
      await engine.ack(NOTIFIER_GROUP, partial);
      await drain();
      await publish(10);
      // Exactly the read entries trimmed: last-delivered-id is now before the first entry, yet nothing was lost.
      await trimTo(10);
      expect(await monitor.refresh()).to.include({ lag: 10, skipped: 0 });
      await drain();
      // Read entries trimmed after they were read: no gap either.
      await publish(6);
      await drain();
      await trimTo(2);
      expect(await monitor.refresh()).to.include({ lag: 0, pending: 0, skipped: 0 });
      expect(logs).to.deep.equal([]);
    });

    it('refreshes on its own every interval until stopped', async () => {
      const timed = new NotifierLagMonitor({ redis, keyPrefix: prefix, shards: 1, group: NOTIFIER_GROUP, registry: new Registry(), intervalMs: 20 });
      await timed.start();
      expect(await timed.lag.get()).to.deep.include({ values: [{ value: 0, labels: {} }] });
      await publish(4);
      await eventually(async () => (await timed.lag.get()).values[0]?.value === 4, 'the new lag');
      await timed.stop();
    });
  });
});
