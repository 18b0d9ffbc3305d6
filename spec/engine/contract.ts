/**
 * The engine contract: one suite, run against every Engine implementation, so the
 * memory and Redis engines cannot drift apart (STYLE §13).
 */
import { expect } from 'chai';
import { compareIds } from '../../lib/protocol/event-id.js';
import type { Engine, LogEvent, Retention } from '../../lib/engine/engine.js';

export interface EngineHarness {
  engine: Engine;
  cleanup(): Promise<void>;
}

/** Builds a fresh engine; `short:` channels keep 5 events, the rest 1000. */
export type EngineFactory = (retention: (channel: string) => Retention) => Promise<EngineHarness>;

const retention = (channel: string): Retention =>
  channel.startsWith('short:') ? { count: 5, seconds: 3600 } : { count: 1000, seconds: 3600 };

const publish = (engine: Engine, tenant: string, channel: string, n: number, extra: Record<string, unknown> = {}) =>
  engine.publish({ tenant, channel, event: 'test.event', dataJson: JSON.stringify({ n, ...extra }) });

function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() - start > timeoutMs) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

export function engineContract(name: string, factory: EngineFactory): void {
  describe(`Engine contract: ${name}`, function () {
    this.timeout(30_000);
    let h: EngineHarness;
    let engine: Engine;

    beforeEach(async () => {
      h = await factory(retention);
      engine = h.engine;
    });
    afterEach(async () => {
      await h.cleanup();
    });

    it('assigns ids that strictly increase per channel, sequential and concurrent', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) ids.push((await publish(engine, 't1', 'team:1', i)).id);
      const concurrent = await Promise.all(Array.from({ length: 50 }, (_, i) => publish(engine, 't1', 'team:1', 100 + i)));
      const all = [...ids, ...concurrent.map((r) => r.id)];
      const { events } = await engine.history('t1', 'team:1', { since: '0-0', limit: 1000 });
      expect(events.map((e) => e.id)).to.have.members(all);
      for (let i = 1; i < events.length; i++) expect(compareIds(events[i - 1]!.id, events[i]!.id)).to.equal(-1);
      for (const id of all) expect(id).to.match(/^\d+-\d+$/);
    });

    it('stores the event as published: data, name, priority, publisher, timestamp', async () => {
      const r = await engine.publish({
        tenant: 't1',
        channel: 'team:1',
        event: 'goal.updated',
        dataJson: JSON.stringify({ title: 'Ünïcode ✓', list: [1, 2], nested: { a: null } }),
        priority: 'emergency',
        publisher: { id: 'u1', name: 'Ann' },
      });
      const plain = await publish(engine, 't1', 'team:1', 2);
      expect(r.duplicate).to.equal(false);
      expect(new Date(r.timestamp).getTime()).to.equal(Number(r.id.split('-')[0]));
      const { events } = await engine.history('t1', 'team:1', { limit: 10 });
      expect(events).to.have.length(2);
      const [e, p] = events as [LogEvent, LogEvent];
      expect(e).to.include({ id: r.id, tenant: 't1', channel: 'team:1', event: 'goal.updated', priority: 'emergency', timestamp: r.timestamp });
      expect(JSON.parse(e.dataJson)).to.deep.equal({ title: 'Ünïcode ✓', list: [1, 2], nested: { a: null } });
      expect(e.publisher).to.deep.equal({ id: 'u1', name: 'Ann' });
      expect(p.priority).to.equal('normal');
      expect(p.publisher).to.equal(null);
      expect(p.id).to.equal(plain.id);
    });

    it('answers history after `since` (first `limit`) and without it (latest `limit`)', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) ids.push((await publish(engine, 't1', 'feed:a', i)).id);
      const latest = await engine.history('t1', 'feed:a', { limit: 3 });
      expect(latest.events.map((e) => e.id)).to.deep.equal(ids.slice(7));
      expect(latest.recovered).to.equal(true);
      expect(latest.position).to.equal(ids[9]);
      const after = await engine.history('t1', 'feed:a', { since: ids[2]!, limit: 4 });
      expect(after.events.map((e) => e.id)).to.deep.equal(ids.slice(3, 7));
      expect(after.recovered).to.equal(true);
      const fromStart = await engine.history('t1', 'feed:a', { since: '0-0', limit: 2 });
      expect(fromStart.events.map((e) => e.id)).to.deep.equal(ids.slice(0, 2));
      expect(fromStart.recovered).to.equal(true);
      const atEnd = await engine.history('t1', 'feed:a', { since: ids[9]!, limit: 10 });
      expect(atEnd.events).to.deep.equal([]);
      expect(atEnd.recovered).to.equal(true);
      expect(await engine.position('t1', 'feed:a')).to.equal(ids[9]);
    });

    it('answers an empty channel with no events, recovered and a null position', async () => {
      const r = await engine.history('t1', 'nothing:here', { since: '0-0', limit: 10 });
      expect(r).to.deep.equal({ events: [], recovered: true, position: null });
      expect(await engine.position('t1', 'nothing:here')).to.equal(null);
    });

    it('answers a since on a channel with no record: recovered unless older than the retention', async () => {
      const old = await engine.history('t1', 'never:published', { since: '1000-0', limit: 10 });
      expect(old).to.deep.equal({ events: [], recovered: false, position: null });
      const recent = await engine.history('t1', 'never:published', { since: `${Date.now() - 1000}-0`, limit: 10 });
      expect(recent.recovered).to.equal(true);
      expect((await engine.history('t1', 'never:published', { since: '0-0', limit: 10 })).recovered).to.equal(true);
    });

    it('trims by retention and then answers recovered:false for a since before the trim', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 30; i++) ids.push((await publish(engine, 't1', 'short:x', i)).id);
      const old = await engine.history('t1', 'short:x', { since: '0-0', limit: 100 });
      expect(old.recovered).to.equal(false);
      expect(old.events.length).to.be.at.least(5).and.below(30);
      expect(old.events.map((e) => e.id)).to.deep.equal(ids.slice(30 - old.events.length));
      const recent = await engine.history('t1', 'short:x', { since: ids[27]!, limit: 100 });
      expect(recent.recovered).to.equal(true);
      expect(recent.events.map((e) => e.id)).to.deep.equal(ids.slice(28));
      const latest = await engine.history('t1', 'short:x', { limit: 100 });
      expect(latest.recovered).to.equal(true);
      // a long channel in the same engine is untouched
      for (let i = 0; i < 30; i++) await publish(engine, 't1', 'long:x', i);
      expect((await engine.history('t1', 'long:x', { since: '0-0', limit: 100 })).events).to.have.length(30);
    });

    it('honours an idempotency key: the first answer again, appended once, per channel', async () => {
      const first = await engine.publish({ tenant: 't1', channel: 'team:1', event: 'a', dataJson: '{"v":1}', idempotencyKey: 'k-1' });
      const again = await engine.publish({ tenant: 't1', channel: 'team:1', event: 'b', dataJson: '{"v":2}', idempotencyKey: 'k-1' });
      expect(first.duplicate).to.equal(false);
      expect(again).to.deep.equal({ id: first.id, timestamp: first.timestamp, duplicate: true });
      const other = await engine.publish({ tenant: 't1', channel: 'team:2', event: 'a', dataJson: '{}', idempotencyKey: 'k-1' });
      expect(other.duplicate).to.equal(false);
      const otherTenant = await engine.publish({ tenant: 't2', channel: 'team:1', event: 'a', dataJson: '{}', idempotencyKey: 'k-1' });
      expect(otherTenant.duplicate).to.equal(false);
      const { events } = await engine.history('t1', 'team:1', { since: '0-0', limit: 10 });
      expect(events).to.have.length(1);
      expect(JSON.parse(events[0]!.dataJson)).to.deep.equal({ v: 1 });
    });

    it("never shows tenant A's events on tenant B's channel of the same name", async () => {
      await publish(engine, 'tenant-a', 'team:1', 1, { secret: 'a' });
      await publish(engine, 'tenant-b', 'team:1', 2, { secret: 'b' });
      const a = await engine.history('tenant-a', 'team:1', { since: '0-0', limit: 10 });
      const b = await engine.history('tenant-b', 'team:1', { since: '0-0', limit: 10 });
      expect(a.events.map((e) => JSON.parse(e.dataJson).secret)).to.deep.equal(['a']);
      expect(b.events.map((e) => JSON.parse(e.dataJson).secret)).to.deep.equal(['b']);
      expect(a.events[0]!.tenant).to.equal('tenant-a');
    });

    it('feeds every event of 10,000 published concurrently by 4 publishers, in per-channel order', async function () {
      this.timeout(60_000);
      const seen = new Map<string, LogEvent[]>();
      let total = 0;
      const feed = await engine.subscribeLog('latest', (batch) => {
        for (const e of batch) {
          const k = e.tenant + '/' + e.channel;
          let list = seen.get(k);
          if (!list) seen.set(k, (list = []));
          list.push(e);
          total++;
        }
      });
      try {
        const perPublisher = 2500;
        const acked = new Map<string, string[]>();
        await Promise.all(
          [0, 1, 2, 3].map(async (p) => {
            const tenant = p % 2 === 0 ? 'ta' : 'tb';
            for (let i = 0; i < perPublisher; i += 50) {
              const rs = await Promise.all(
                Array.from({ length: 50 }, (_, j) => {
                  const channel = `load:${(i + j) % 10}`;
                  return publish(engine, tenant, channel, i + j, { p }).then((r) => ({ channel, tenant, id: r.id }));
                }),
              );
              for (const r of rs) {
                const k = r.tenant + '/' + r.channel;
                let list = acked.get(k);
                if (!list) acked.set(k, (list = []));
                list.push(r.id);
              }
            }
          }),
        );
        await waitFor(() => total >= 10_000, 30_000, 'all 10,000 events on the feed');
        expect(total).to.equal(10_000);
        for (const [k, list] of seen) {
          for (let i = 1; i < list.length; i++) expect(compareIds(list[i - 1]!.id, list[i]!.id), k).to.equal(-1);
          expect(list.map((e) => e.id)).to.have.members(acked.get(k)!);
        }
      } finally {
        await feed.close();
      }
    });

    it('resumes a feed from its positions with what was published while it was closed', async () => {
      const got: string[] = [];
      const feed = await engine.subscribeLog('latest', (b) => got.push(...b.map((e) => e.id)));
      const a = await publish(engine, 't1', 'team:1', 1);
      await waitFor(() => got.length === 1, 5000, 'first event');
      const positions = feed.positions();
      expect(positions).to.have.length(engine.shards);
      await feed.close();
      const missed = [await publish(engine, 't1', 'team:1', 2), await publish(engine, 't1', 'team:9', 3)];
      const again: string[] = [];
      const feed2 = await engine.subscribeLog(positions, (b) => again.push(...b.map((e) => e.id)));
      try {
        const live = await publish(engine, 't1', 'team:1', 4);
        await waitFor(() => again.length >= 3, 5000, 'missed and live events');
        expect(again).to.have.members([...missed.map((m) => m.id), live.id]);
        expect(again).not.to.include(a.id);
      } finally {
        await feed2.close();
      }
    });

    it('gives consumer groups at-least-once delivery: read, ack, claim what a dead consumer left', async () => {
      await engine.ensureGroup('workers', 'latest');
      await engine.ensureGroup('workers', 'latest'); // idempotent
      const published = [];
      for (let i = 0; i < 6; i++) published.push((await publish(engine, 't1', `job:${i}`, i)).id);
      const first = await engine.readGroup('workers', 'c1', { count: 4 });
      expect(first).to.have.length(4);
      const rest = await engine.readGroup('workers', 'c2', { count: 10 });
      expect(rest).to.have.length(2);
      expect([...first, ...rest].map((e) => e.id)).to.have.members(published);
      expect(rest[0]!.event.tenant).to.equal('t1');
      expect(await engine.ack('workers', rest)).to.equal(2);
      // c1 dies without acking; c3 takes over its entries once they are idle long enough
      expect(await engine.claimStale('workers', 'c3', { minIdleMs: 60_000 })).to.have.length(0);
      await new Promise((r) => setTimeout(r, 60));
      const claimed = await engine.claimStale('workers', 'c3', { minIdleMs: 50 });
      expect(claimed.map((e) => e.id)).to.have.members(first.map((e) => e.id));
      expect(await engine.ack('workers', claimed)).to.equal(4);
      await new Promise((r) => setTimeout(r, 60));
      expect(await engine.claimStale('workers', 'c4', { minIdleMs: 50 })).to.have.length(0);
      expect(await engine.readGroup('workers', 'c1', { count: 10 })).to.have.length(0);
    });

    it('counts connection slots: limits, release, expiry and refresh', async () => {
      const user = { name: 'user:t1:ann', limit: 2 };
      const ip = { name: 'ip:127.0.0.1', limit: 3 };
      expect(await engine.acquireSlots([user, ip], 'c1', 60_000)).to.equal(-1);
      expect(await engine.acquireSlots([user, ip], 'c1', 60_000)).to.equal(-1); // the same connection again
      expect(await engine.acquireSlots([user, ip], 'c2', 60_000)).to.equal(-1);
      expect(await engine.acquireSlots([ip, user], 'c3', 60_000)).to.equal(1);
      // the refused connection holds nothing: the IP slot it took was given back
      expect(await engine.acquireSlots([ip], 'c4', 60_000)).to.equal(-1);
      expect(await engine.acquireSlots([ip], 'c5', 60_000)).to.equal(0);
      await engine.releaseSlots([user.name, ip.name], 'c1');
      expect(await engine.acquireSlots([user], 'c3', 60_000)).to.equal(-1);
      // slots a node stops refreshing expire; refreshed ones stay
      const short = { name: 'user:t1:bo', limit: 1 };
      expect(await engine.acquireSlots([short], 'k1', 150)).to.equal(-1);
      expect(await engine.acquireSlots([short], 'k2', 150)).to.equal(0);
      await new Promise((r) => setTimeout(r, 200));
      expect(await engine.acquireSlots([short], 'k2', 150)).to.equal(-1);
      await new Promise((r) => setTimeout(r, 100));
      await engine.refreshSlots([{ names: [short.name], connectionId: 'k2' }], 150);
      await new Promise((r) => setTimeout(r, 100));
      expect(await engine.acquireSlots([short], 'k3', 150)).to.equal(0);
    });

    it('delivers signals to every listener, never into the log', async () => {
      const got: unknown[] = [];
      const sub = await engine.subscribeSignals((s) => got.push(s));
      try {
        await new Promise((r) => setTimeout(r, 50));
        await engine.publishSignal({ tenant: 't1', channel: 'team:1', kind: 'typing', frame: '{"type":"typing"}', exceptUser: 'ann' });
        await waitFor(() => got.length === 1, 3000, 'the signal');
        expect(got[0]).to.deep.equal({ tenant: 't1', channel: 'team:1', kind: 'typing', frame: '{"type":"typing"}', exceptUser: 'ann' });
        expect((await engine.history('t1', 'team:1', { since: '0-0', limit: 10 })).events).to.deep.equal([]);
      } finally {
        await sub.close();
      }
    });

    it('keeps presence per connection: first join, renew, expiry sweep announces the last leave once', async () => {
      const ann1 = { connectionId: 'c1', userId: 'ann', name: 'Ann', device: 'web' };
      const ann2 = { connectionId: 'c2', userId: 'ann', name: 'Ann', device: 'mobile' };
      const bo = { connectionId: 'c3', userId: 'bo', device: null };
      expect(await engine.presenceJoin('t1', 'room:1', ann1, 60_000)).to.deep.equal({ first: true, count: 1 });
      expect(await engine.presenceJoin('t1', 'room:1', ann2, 60_000)).to.deep.equal({ first: false, count: 1 });
      expect(await engine.presenceJoin('t1', 'room:1', bo, 60_000)).to.deep.equal({ first: true, count: 2 });
      expect(await engine.presenceJoin('t2', 'room:1', bo, 60_000)).to.deep.equal({ first: true, count: 1 });
      // The same connection joining again (a long-poll renewing its stable entry) is no join.
      expect(await engine.presenceJoin('t2', 'room:1', bo, 60_000)).to.deep.equal({ first: false, count: 1 });
      const list = await engine.presenceList('t1', 'room:1');
      expect(list.map((e) => e.connectionId).sort()).to.deep.equal(['c1', 'c2', 'c3']);
      expect(list.find((e) => e.connectionId === 'c1')).to.deep.equal(ann1);
      // c1 closes with a short grace: ann is still there through c2
      await engine.presenceTouch([{ tenant: 't1', channel: 'room:1', connectionId: 'c1', userId: 'ann' }], 50);
      await new Promise((r) => setTimeout(r, 80));
      const s1 = await engine.presenceSweep('t1', 'room:1');
      expect(s1).to.deep.equal({ left: [], count: 2, changed: true });
      // c2 and bo expire: both users leave, announced once
      await engine.presenceTouch([
        { tenant: 't1', channel: 'room:1', connectionId: 'c2', userId: 'ann' },
        { tenant: 't1', channel: 'room:1', connectionId: 'c3', userId: 'bo' },
      ], 50);
      await new Promise((r) => setTimeout(r, 80));
      const [a, b] = await Promise.all([engine.presenceSweep('t1', 'room:1'), engine.presenceSweep('t1', 'room:1')]);
      const left = [...a.left, ...b.left].map((e) => e.userId).sort();
      expect(left).to.deep.equal(['ann', 'bo']);
      expect(a.count + b.count).to.equal(0);
      expect(await engine.presenceList('t1', 'room:1')).to.deep.equal([]);
      expect((await engine.presenceList('t2', 'room:1')).map((e) => e.userId)).to.deep.equal(['bo']);
      expect(await engine.userChannels('t2', 'bo')).to.deep.equal(['room:1']);
      expect(await engine.userChannels('t1', 'bo')).to.deep.equal([]);
    });

    it('renews thousands of users and slots in batches; a renewal never brings back a released slot', async () => {
      const n = 1200;
      const users = Array.from({ length: n }, (_, i) => (i === 7 ? 'odd\u0000user' : `r${i}`));
      const conns = users.map((u, i) => ({ tenant: 't1', userId: u, connectionId: i === 7 ? 'poll:odd\u0000user:any' : `rc${i}` }));
      await engine.connectionsTouch(conns, 150);
      const ip = { name: 'ip:t1:10.0.0.1', limit: n };
      for (let i = 0; i < n; i += 100) {
        const taken = await Promise.all(conns.slice(i, i + 100).map((c) => engine.acquireSlots([{ name: `user:t1:${c.userId}`, limit: 1 }, ip], c.connectionId, 1000)));
        expect(taken.every((t) => t === -1)).to.equal(true);
      }
      await engine.releaseSlots([`user:t1:${users[3]}`, ip.name], conns[3]!.connectionId);
      // The holding node renews everyone but user 5, in one go each.
      const kept = conns.filter((_, i) => i !== 5);
      await engine.connectionsTouch(kept, 60_000, { renewal: true });
      await engine.refreshSlots(kept.map((c) => ({ names: [`user:t1:${c.userId}`, ip.name], connectionId: c.connectionId })), 60_000);
      // Past every first expiry (1 s): only what was renewed is left.
      await new Promise((r) => setTimeout(r, 1100));
      const online = await engine.usersGet('t1', [users[0]!, users[5]!, users[7]!, users[n - 1]!]);
      expect(online.map((u) => u.online)).to.deep.equal([true, false, true, true]);
      // user 3's slot was released before the renewal and stays free; user 0's is held
      expect(await engine.acquireSlots([{ name: `user:t1:${users[3]}`, limit: 1 }], 'new-3', 60_000)).to.equal(-1);
      expect(await engine.acquireSlots([{ name: `user:t1:${users[0]}`, limit: 1 }], 'new-0', 60_000)).to.equal(0);
      expect(await engine.acquireSlots([{ name: `user:t1:${users[7]}`, limit: 1 }], 'new-7', 60_000)).to.equal(0);
      expect(await engine.acquireSlots([{ name: `user:t1:${users[5]}`, limit: 1 }], 'new-5', 60_000)).to.equal(-1);
      // the IP slot holds the n - 2 renewed connections (3 was released, 5 expired)
      expect(await engine.acquireSlots([{ name: ip.name, limit: n - 2 }], 'ip-probe', 60_000)).to.equal(0);
      expect(await engine.acquireSlots([{ name: ip.name, limit: n - 1 }], 'ip-probe', 60_000)).to.equal(-1);
    });

    it('answers many users at once: online from live connections, and their own settings', async () => {
      await engine.connectionsTouch([{ tenant: 't1', userId: 'ann', connectionId: 'c1' }], 60_000);
      await engine.connectionsTouch([{ tenant: 't1', userId: 'cy', connectionId: 'c9' }], 30);
      await engine.userSet('t1', 'ann', { status: 'busy', customStatus: 'in surgery', device: 'mobile', lastSeen: '2026-11-21T10:00:00.000Z' });
      await engine.userSet('t1', 'ann', { customStatus: undefined, status: 'away' });
      await new Promise((r) => setTimeout(r, 60));
      const users = await engine.usersGet('t1', ['ann', 'bo', 'cy']);
      expect(users[0]).to.deep.equal({ id: 'ann', online: true, status: 'away', customStatus: 'in surgery', device: 'mobile', lastSeen: '2026-11-21T10:00:00.000Z' });
      expect(users[1]).to.deep.equal({ id: 'bo', online: false });
      expect(users[2]).to.deep.equal({ id: 'cy', online: false });
      expect((await engine.usersGet('t2', ['ann']))[0]).to.deep.equal({ id: 'ann', online: false });
    });

    it('moves read cursors forward only; reading implies delivery', async () => {
      expect(await engine.receiptSet('t1', 'ann', 'dm:ann:bo', 'delivered', '100-0')).to.equal(true);
      expect(await engine.receiptSet('t1', 'ann', 'dm:ann:bo', 'delivered', '99-5')).to.equal(false);
      expect(await engine.receiptSet('t1', 'ann', 'dm:ann:bo', 'read', '100-2')).to.equal(true);
      expect(await engine.receiptSet('t1', 'ann', 'dm:ann:bo', 'read', '100-2')).to.equal(false);
      expect(await engine.receiptSet('t1', 'ann', 'room:9', 'delivered', '5-0')).to.equal(true);
      const cursors = (await engine.receiptsGet('t1', 'ann')).sort((x, y) => x.channel.localeCompare(y.channel));
      expect(cursors).to.deep.equal([
        { channel: 'dm:ann:bo', delivered: '100-2', read: '100-2' },
        { channel: 'room:9', delivered: '5-0', read: null },
      ]);
      expect(await engine.receiptsGet('t2', 'ann')).to.deep.equal([]);
    });

    it('blocks a group read until an event arrives, bounded by blockMs', async () => {
      await engine.ensureGroup('blockers', 'latest');
      const t0 = Date.now();
      expect(await engine.readGroup('blockers', 'c1', { count: 10, blockMs: 200 })).to.have.length(0);
      expect(Date.now() - t0).to.be.at.least(150);
      const pending = engine.readGroup('blockers', 'c1', { count: 10, blockMs: 5000 });
      setTimeout(() => void publish(engine, 't1', 'team:1', 1), 50);
      const got = await pending;
      expect(got).to.have.length(1);
    });
  });
}
