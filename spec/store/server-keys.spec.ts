import { createHash } from 'node:crypto';
import { expect } from 'chai';
import type { Knex } from 'knex';
import { StreamgateError } from '../../lib/errors.js';
import { ServerKeyStore } from '../../lib/store/server-keys.js';
import { forEachDatabase, openMigrated } from '../support/databases.js';

const KEY_FORMAT = /^sgk_[0-9A-Za-z]{12}_[A-Za-z0-9_-]{43}$/;

describe('ServerKeyStore', () => {
  forEachDatabase((target) => {
    let knex: Knex;
    let cleanup: () => Promise<void>;
    let keys: ServerKeyStore;

    before(async () => {
      ({ knex, cleanup } = await openMigrated(target));
    });

    after(async () => {
      await cleanup();
    });

    beforeEach(() => {
      keys = new ServerKeyStore(knex);
    });

    afterEach(async () => {
      await keys.flush();
    });

    it('creates a key shown once and verifies it', async () => {
      const before = Date.now();
      const created = await keys.create('acme', 'backend');
      expect(created.key).to.match(KEY_FORMAT);
      expect(created.key.slice(4, 16)).to.equal(created.id);
      expect(created.tenant).to.equal('acme');
      expect(created.createdAt).to.be.instanceOf(Date);
      expect(created.createdAt.getTime()).to.be.within(before, Date.now());
      expect(await keys.verify(created.key)).to.deep.equal({ id: created.id, tenant: 'acme' });
    });

    it('stores only the SHA-256 of the secret', async () => {
      const { id, key } = await keys.create('acme');
      const row: { secret_hash: string } = await knex('server_keys').first('secret_hash').where({ id });
      const secret = key.slice(17);
      expect(row.secret_hash).to.equal(createHash('sha256').update(secret).digest('hex'));
      expect(JSON.stringify(await knex('server_keys').where({ id }))).not.to.include(secret);
    });

    it('refuses a wrong secret for a real id', async () => {
      const { key } = await keys.create('acme');
      const last = key.at(-1) === 'A' ? 'B' : 'A';
      expect(await keys.verify(key.slice(0, -1) + last)).to.equal(null);
      // The right key still works after a wrong attempt was seen.
      expect(await keys.verify(key)).to.not.equal(null);
    });

    it('refuses malformed and unknown keys', async () => {
      const { key } = await keys.create('acme');
      for (const bad of ['', 'sgk_', key.slice(0, -1), key + 'x', key.replace('sgk_', 'sgx_'), `Bearer ${key}`, key.replace(/_/, '-')]) {
        expect(await keys.verify(bad), bad).to.equal(null);
      }
      expect(await keys.verify(`sgk_000000000000_${'A'.repeat(43)}`)).to.equal(null);
    });

    it('revokes a key: refused at once on this instance, listed with revokedAt', async () => {
      const { id, key } = await keys.create('acme');
      expect(await keys.verify(key)).to.not.equal(null); // now cached
      expect(await keys.revoke(id)).to.equal(true);
      expect(await keys.verify(key)).to.equal(null);
      expect(await keys.revoke(id)).to.equal(false);
      const listed = (await keys.list('acme')).find((k) => k.id === id);
      expect(listed?.revokedAt).to.be.instanceOf(Date);
    });

    it('revokes only within the given tenant', async () => {
      const { id, key } = await keys.create('acme');
      expect(await keys.revoke(id, 'globex')).to.equal(false);
      expect(await keys.verify(key)).to.not.equal(null);
      expect(await keys.revoke(id, 'acme')).to.equal(true);
      expect(await keys.verify(key)).to.equal(null);
    });

    it('lists only the tenant’s keys, without hashes', async () => {
      const a = await keys.create('tenant-a', 'first');
      const b = await keys.create('tenant-a');
      const other = await keys.create('tenant-b');
      const listA = await keys.list('tenant-a');
      expect(listA.map((k) => k.id)).to.have.members([a.id, b.id]);
      expect(listA.find((k) => k.id === a.id)).to.deep.include({ tenant: 'tenant-a', label: 'first', revokedAt: null, lastUsedAt: null });
      expect(listA.find((k) => k.id === b.id)?.label).to.equal(null);
      for (const k of listA) {
        expect(k.createdAt).to.be.instanceOf(Date);
        expect(Object.keys(k)).to.have.members(['id', 'tenant', 'label', 'createdAt', 'revokedAt', 'lastUsedAt']);
      }
      expect((await keys.list('tenant-b')).map((k) => k.id)).to.deep.equal([other.id]);
      expect(await keys.list('nobody')).to.deep.equal([]);
    });

    it('records when a key was last used', async () => {
      const { id, key } = await keys.create('used');
      const before = Date.now();
      await keys.verify(key);
      await keys.flush();
      const [listed] = await keys.list('used');
      expect(listed?.id).to.equal(id);
      expect(listed?.lastUsedAt).to.be.instanceOf(Date);
      expect(listed!.lastUsedAt!.getTime()).to.be.within(before, Date.now());
    });

    it('refuses an invalid tenant id', async () => {
      const err = await keys.create('no spaces').then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(StreamgateError);
      expect((err as StreamgateError).code).to.equal('bad_request');
    });

    it('answers from its cache without the database until the entry expires', async () => {
      const { id, key } = await keys.create('cached');
      expect(await keys.verify(key)).to.not.equal(null);
      await knex('server_keys').where({ id }).delete();
      expect(await keys.verify(key), 'cached positive').to.not.equal(null);

      // Negative results are cached too: a key that appears later is seen after the TTL.
      const secret = 'S'.repeat(43);
      const lateId = 'late00000000';
      const lateKey = `sgk_${lateId}_${secret}`;
      const short = new ServerKeyStore(knex, { cacheTtlMs: 40 });
      expect(await short.verify(lateKey)).to.equal(null);
      await knex('server_keys').insert({
        id: lateId,
        tenant: 'cached',
        secret_hash: createHash('sha256').update(secret).digest('hex'),
        created_at: new Date(),
      });
      expect(await short.verify(lateKey), 'cached negative').to.equal(null);
      await new Promise((r) => setTimeout(r, 50));
      expect(await short.verify(lateKey)).to.deep.equal({ id: lateId, tenant: 'cached' });
      await short.flush();
    });

    it('is refused by another node once its cache TTL passes after a revocation', async () => {
      const { id, key } = await keys.create('cluster');
      const otherNode = new ServerKeyStore(knex, { cacheTtlMs: 40 });
      expect(await otherNode.verify(key)).to.not.equal(null);
      expect(await keys.revoke(id)).to.equal(true);
      expect(await keys.verify(key)).to.equal(null);
      await new Promise((r) => setTimeout(r, 50));
      expect(await otherNode.verify(key)).to.equal(null);
      await otherNode.flush();
    });

    it('keeps its cache bounded', async () => {
      const small = new ServerKeyStore(knex, { cacheSize: 2 });
      const created = await Promise.all([small.create('lru'), small.create('lru'), small.create('lru')]);
      for (const c of created) expect(await small.verify(c.key)).to.not.equal(null);
      await small.flush();
      // The first key fell out of the cache, so its deletion is seen; the last two are still cached.
      await knex('server_keys').whereIn('id', created.map((c) => c.id)).delete();
      expect(await small.verify(created[0]!.key)).to.equal(null);
      expect(await small.verify(created[2]!.key)).to.not.equal(null);
    });
  });
});
