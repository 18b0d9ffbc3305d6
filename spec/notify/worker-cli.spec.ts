/**
 * The notification commands of the CLI as an operator runs them: `vapid`, `worker`
 * (a real process: configured from the environment, sending a web push to the
 * loopback push service, stopping on SIGTERM) and `notifications failed|retry`.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RedisEngine } from '../../lib/engine/redis-engine.js';
import { migrateLatest, openDatabase } from '../../lib/store/database.js';
import { PushTargetStore } from '../../lib/store/push-targets.js';
import { eventually } from '../support/notify.js';
import { FakePushService } from '../support/push-service.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';
import { testPki } from '../support/test-ca.js';

const BIN = join(process.cwd(), 'bin', 'streamgate');

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', ...env }, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('notification commands', function () {
  this.timeout(40_000);

  it('vapid prints a key pair the configuration accepts', () => {
    const r = run(['vapid']);
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^VAPID_PUBLIC_KEY=[A-Za-z0-9_-]{87}$/);
    expect(lines[1]).to.match(/^VAPID_PRIVATE_KEY=[A-Za-z0-9_-]{43}$/);
  });

  it('worker needs Redis', () => {
    const r = run(['worker'], { STREAMGATE_DATA_DIR: mkdtempSync(join(tmpdir(), 'sg-cli-')) });
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(/REDIS_URL/);
  });

  it('worker sends web pushes from its environment; notifications failed lists a refused one and retry sends it; SIGTERM stops it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sg-cli-'));
    const prefix = uniquePrefix();
    const pki = testPki();
    const caFile = join(dataDir, 'ca.pem');
    writeFileSync(caFile, pki.ca);
    const configFile = join(dataDir, 'streamgate.json');
    // One attempt: a refused push goes straight to the dead-letter list.
    writeFileSync(configFile, JSON.stringify({ redis: { key_prefix: prefix, shards: 2 }, notifications: { retry: { attempts: 1, backoff_ms: 10 } } }));
    const keys = run(['vapid']).stdout.trim().split('\n').map((l) => l.split('='));
    const env: Record<string, string> = {
      STREAMGATE_DATA_DIR: dataDir,
      STREAMGATE_CONFIG: configFile,
      REDIS_URL: testRedisUrl(),
      NOTIFY_CA_FILE: caFile,
      // The push service is on loopback: only the test hook lets the worker connect there.
      NOTIFY_ALLOW_PRIVATE_ENDPOINTS: '1',
      VAPID_SUBJECT: 'mailto:ops@example.com',
      WORKER_METRICS_PORT: '0',
      HOST: '127.0.0.1',
      ...Object.fromEntries(keys),
    };
    const push = await FakePushService.start(pki);
    const knex = await openDatabase({ sqliteFile: join(dataDir, 'streamgate.sqlite') });
    await migrateLatest(knex);
    const sub = push.subscribe();
    await new PushTargetStore(knex, { allowPrivateEndpoints: true }).addWebPush('acme', 'ann', { endpoint: sub.endpoint, p256dh: sub.p256dh, auth: sub.auth });
    const engine = await RedisEngine.create({ url: testRedisUrl(), keyPrefix: prefix, shards: 2, logMaxLength: 1000, retention: () => ({ count: 100, seconds: 3600 }) });
    const child = spawn(process.execPath, [BIN, 'worker'], { env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', ...env } });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      await eventually(() => stderr.includes('running'), 'the worker to start', 20_000);
      expect(stderr).to.include('web push on');
      await engine.publish({ tenant: 'acme', channel: 'user:ann', event: 'hello', dataJson: '{"title":"from the CLI"}', priority: 'normal', publisher: null });
      await eventually(() => push.received.length === 1, 'the push', 10_000);
      expect(JSON.parse(push.received[0]!.payload)).to.include({ title: 'from the CLI' });
      const metricsUrl = /metrics on (http:\/\/\S+\/metrics)/.exec(stderr)?.[1];
      expect(metricsUrl, stderr).to.be.a('string');
      await eventually(async () => /streamgate_notifications_sent_total\{channel="webpush"\} 1/.test(await (await fetch(metricsUrl!)).text()), 'the sent counter', 5000);

      const failed = run(['notifications', 'failed'], env);
      expect(failed.code, failed.stderr).to.equal(0);
      expect(failed.stderr).to.include('0 failed deliveries');
      expect(run(['notifications', 'retry', 'webpush|nothing'], env).code).to.equal(1);
      expect(run(['notifications', 'retry'], env).code).to.equal(2);

      // A push the service refuses ends in the dead-letter list; `retry` sends it.
      push.respondWith(sub.id, 503);
      const failing = await engine.publish({ tenant: 'acme', channel: 'user:ann', event: 'hello', dataJson: '{"title":"second"}', priority: 'normal', publisher: null });
      const listed = await eventually(() => {
        const r = run(['notifications', 'failed'], env);
        return r.stderr.includes('1 failed delivery') ? r : undefined;
      }, 'the dead letter', 10_000);
      const [jobId, kind, tenant, user, attempts, , reason] = listed.stdout.trim().split('\t');
      expect(jobId).to.equal(`webpush|acme|user%3Aann|${failing.id}|ann`);
      expect([kind, tenant, user, attempts, reason]).to.deep.equal(['webpush', 'acme', 'ann', '1 attempts', 'the push service answered HTTP 503']);
      expect(push.received).to.have.length(1);
      push.respondWith(sub.id, 201);
      const retried = run(['notifications', 'retry', jobId!], env);
      expect(retried.code, retried.stderr).to.equal(0);
      expect(retried.stderr).to.include('queued 1 again');
      await eventually(() => push.received.length === 2, 'the retried push', 10_000);
      expect(JSON.parse(push.received[1]!.payload)).to.include({ title: 'second', event_id: failing.id });
      expect(run(['notifications', 'failed'], env).stderr).to.include('0 failed deliveries');

      const t0 = Date.now();
      child.kill('SIGTERM');
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      expect(code).to.equal(0);
      expect(Date.now() - t0).to.be.below(5000);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await engine.close();
      await knex.destroy();
      await push.close();
      await deleteKeysWithPrefix(prefix);
    }
  });
});
