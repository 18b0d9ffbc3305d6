import { expect } from 'chai';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, namespaceSettings } from '../../lib/config/config.js';

function configFile(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'sg-config-'));
  const file = join(dir, 'streamgate.json');
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

const baseEnv = () => ({ NODE_ENV: 'test', STREAMGATE_DATA_DIR: mkdtempSync(join(tmpdir(), 'sg-data-')), JWT_SECRET: 's'.repeat(40) });

describe('configuration', () => {
  it('has the defaults of PROTOCOL §9', () => {
    const c = loadConfig({ env: baseEnv() });
    expect(c.port).to.equal(8080);
    expect(c.host).to.equal('0.0.0.0');
    expect(c.redisUrl).to.equal(undefined);
    expect(c.limits).to.include({ max_message_bytes: 65536, messages_per_second: 100, connections_per_user: 5, connections_per_ip: 100, heartbeat_ms: 30000, pong_timeout_ms: 5000 });
    expect(namespaceSettings(c, 'dm:a:b')).to.include({ presence: true, typing: true, receipts: true, anonymous: false });
    expect(namespaceSettings(c, 'room:1')).to.include({ presence: true, typing: true, receipts: true });
    expect(namespaceSettings(c, 'user:1')).to.include({ presence: false, typing: false, receipts: false });
    expect(namespaceSettings(c, 'tenant')).to.include({ presence: false, typing: false, receipts: false });
    expect(namespaceSettings(c, 'goal:1')).to.include({ presence: true, typing: true, receipts: false });
    expect(namespaceSettings(c, 'goal:1').retention).to.deep.equal({ count: 1000, seconds: 86400 });
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it('reads PORT, HOST, REDIS_URL, DATABASE_URL and the JWT variables', () => {
    const c = loadConfig({
      env: { ...baseEnv(), PORT: '9000', HOST: '127.0.0.1', REDIS_URL: 'redis://r:6379', DATABASE_URL: 'postgres://db/x', JWT_ISSUER: 'iss', JWT_AUDIENCE: 'aud' },
    });
    expect(c).to.include({ port: 9000, host: '127.0.0.1', redisUrl: 'redis://r:6379', databaseUrl: 'postgres://db/x' });
    expect(c.jwt).to.include({ issuer: 'iss', audience: 'aud', generated: false });
    expect(() => loadConfig({ env: { ...baseEnv(), PORT: 'eighty' } })).to.throw(ConfigError, /PORT/);
  });

  it('merges STREAMGATE_CONFIG over the defaults; a namespace takes defaults for what it leaves out', () => {
    const file = configFile({
      namespaces: { eval: { presence: true, anonymous: true, retention: { count: 50 } } },
      defaults: { receipts: true },
      limits: { messages_per_second: 10 },
    });
    const c = loadConfig({ env: { ...baseEnv(), STREAMGATE_CONFIG: file } });
    expect(namespaceSettings(c, 'eval:9')).to.deep.include({ anonymous: true, typing: true, receipts: true });
    expect(namespaceSettings(c, 'eval:9').retention).to.deep.equal({ count: 50, seconds: 86400 });
    expect(namespaceSettings(c, 'other:1').receipts).to.equal(true);
    expect(c.limits.messages_per_second).to.equal(10);
    expect(c.limits.max_message_bytes).to.equal(65536);
  });

  it('stops on an unknown key or a bad value, naming the setting', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ limitz: {} }, /limitz: unknown setting/],
      [{ limits: { messages_per_sec: 5 } }, /limits\.messages_per_sec: unknown setting/],
      [{ limits: { messages_per_second: -1 } }, /limits\.messages_per_second/],
      [{ namespaces: { dm: { presense: true } } }, /namespaces\.dm\.presense: unknown setting/],
      [{ namespaces: { dm: { retention: { count: 'many' } } } }, /namespaces\.dm\.retention\.count/],
      [{ defaults: { typing: 'yes' } }, /defaults\.typing/],
      ['{ not json', /not valid JSON/],
    ];
    for (const [content, message] of cases) {
      const file = configFile(content);
      expect(() => loadConfig({ env: { ...baseEnv(), STREAMGATE_CONFIG: file } }), String(message)).to.throw(ConfigError, message);
    }
    expect(() => loadConfig({ env: { ...baseEnv(), STREAMGATE_CONFIG: '/nonexistent/sg.json' } })).to.throw(ConfigError, /cannot read/);
  });

  it('refuses conflicting or malformed settings', () => {
    expect(() => loadConfig({ env: { ...baseEnv(), JWT_PUBLIC_KEY: '-----BEGIN PUBLIC KEY-----' } })).to.throw(ConfigError, /both set/);
    expect(() => loadConfig({ env: { ...baseEnv(), REDIS_URL: 'localhost:6379' } })).to.throw(ConfigError, /REDIS_URL/);
    expect(() => loadConfig({ env: { ...baseEnv(), DATABASE_URL: 'mysql://x/y' } })).to.throw(ConfigError, /DATABASE_URL/);
    expect(loadConfig({ env: { ...baseEnv(), REDIS_URL: 'rediss://h:6380/0', DATABASE_URL: 'postgresql://u@h/db' } }).redisUrl).to.equal('rediss://h:6380/0');
  });

  it('refuses to start in production without real secrets, Redis and PostgreSQL', () => {
    const env = { NODE_ENV: 'production', STREAMGATE_DATA_DIR: mkdtempSync(join(tmpdir(), 'sg-data-')) };
    expect(() => loadConfig({ env })).to.throw(ConfigError, /JWT_SECRET or JWT_PUBLIC_KEY, REDIS_URL, DATABASE_URL/);
    expect(() => loadConfig({ env: { ...env, JWT_SECRET: 'short', REDIS_URL: 'redis://x', DATABASE_URL: 'postgres://x' } })).to.throw(ConfigError, /JWT_SECRET/);
    const ok = loadConfig({ env: { ...env, JWT_SECRET: 'x'.repeat(32), REDIS_URL: 'redis://x', DATABASE_URL: 'postgres://x' } });
    expect(ok.jwt.generated).to.equal(false);
  });

  it('generates a development secret once and keeps it for the token command', () => {
    const env = { NODE_ENV: 'development', STREAMGATE_DATA_DIR: mkdtempSync(join(tmpdir(), 'sg-data-')) };
    const a = loadConfig({ env });
    const b = loadConfig({ env });
    expect(a.jwt.generated).to.equal(true);
    expect(a.jwt.secret).to.be.a('string').with.length.greaterThan(30);
    expect(b.jwt.secret).to.equal(a.jwt.secret);
  });
});
