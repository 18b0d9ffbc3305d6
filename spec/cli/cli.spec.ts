import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';

const BIN = join(process.cwd(), 'bin', 'streamgate');

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('streamgate CLI', function () {
  this.timeout(40_000);
  let dataDir: string;
  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'sg-cli-'));
  });

  it('--help lists every command', () => {
    const r = run(['--help']);
    expect(r.code).to.equal(0);
    for (const cmd of ['serve', 'worker', 'migrate', 'keys create', 'token']) expect(r.stdout).to.include(cmd);
    expect(run(['bogus']).code).to.equal(2);
  });

  it('token prints a JWT alone on stdout, signed with JWT_SECRET, with the claims asked for', () => {
    const secret = 'cli-secret-'.repeat(4);
    const r = run(['token', '--sub', 'u1', '--tid', 't1', '--name', 'Ann', '--channels', 'team:*,goal:1', '--publish', 'team:*', '--ttl', '120'], {
      JWT_SECRET: secret,
      STREAMGATE_DATA_DIR: dataDir,
    });
    expect(r.code, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).to.have.length(1);
    const claims = jwt.verify(lines[0]!, secret) as Record<string, unknown>;
    expect(claims).to.include({ sub: 'u1', tid: 't1', name: 'Ann' });
    expect(claims.channels).to.deep.equal(['team:*', 'goal:1']);
    expect(claims.publish).to.deep.equal(['team:*']);
    expect((claims.exp as number) - (claims.iat as number)).to.equal(120);
    expect(run(['token', '--tid', 't1'], { STREAMGATE_DATA_DIR: dataDir }).code).to.equal(2);
  });

  it('migrate applies the migrations once; keys create prints the key alone on the last line', () => {
    const env = { STREAMGATE_DATA_DIR: dataDir };
    const m1 = run(['migrate'], env);
    expect(m1.code, m1.stderr).to.equal(0);
    expect(m1.stdout).to.match(/applied:/);
    expect(run(['migrate'], env).stdout).to.match(/already up to date/);
    const created = run(['keys', 'create', '--tenant', 'acme', '--label', 'backend'], env);
    expect(created.code, created.stderr).to.equal(0);
    const key = created.stdout.trim().split('\n').at(-1)!;
    expect(key).to.match(/^sgk_[A-Za-z0-9]+_[A-Za-z0-9_-]+$/);
    const id = key.split('_')[1]!;
    const listed = run(['keys', 'list', '--tenant', 'acme'], env);
    expect(listed.stdout).to.include(id).and.include('backend').and.include('active').and.not.include(key);
    expect(run(['keys', 'revoke', id], env).code).to.equal(0);
    expect(run(['keys', 'list', '--tenant', 'acme'], env).stdout).to.include('revoked');
    expect(run(['keys', 'create'], env).code).to.equal(2);
  });

  it('refuses to start on a bad configuration, naming the setting', () => {
    const file = join(dataDir, 'bad.json');
    writeFileSync(file, JSON.stringify({ limits: { heartbeat_msec: 5 } }));
    const r = run(['serve'], { STREAMGATE_CONFIG: file, STREAMGATE_DATA_DIR: dataDir, PORT: '0' });
    expect(r.code).to.equal(2);
    expect(r.stderr).to.include('limits.heartbeat_msec: unknown setting');
    const prod = run(['serve'], { NODE_ENV: 'production', STREAMGATE_DATA_DIR: dataDir, PORT: '0' });
    expect(prod.code).to.equal(2);
    expect(prod.stderr).to.match(/production needs JWT_SECRET or JWT_PUBLIC_KEY, REDIS_URL, DATABASE_URL/);
  });

  it('serve runs on the embedded defaults, prints the development secret and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'serve'], {
      env: { PATH: process.env.PATH ?? '', NODE_ENV: 'development', PORT: '0', HOST: '127.0.0.1', STREAMGATE_DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${stderr}`)), 20_000);
      child.stderr.on('data', () => {
        const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once('exit', () => reject(new Error(`exited early: ${stderr}`)));
    });
    expect(stderr).to.match(/JWT_SECRET=\S+/);
    expect(stderr).to.include('engine: memory');
    const secret = /JWT_SECRET=(\S+)/.exec(stderr)![1]!;
    const token = run(['token', '--sub', 'u1', '--tid', 't1', '--publish', 'team:*'], { STREAMGATE_DATA_DIR: dataDir }).stdout.trim();
    expect((jwt.verify(token, secret) as { sub: string }).sub).to.equal('u1');
    const res = await fetch(`http://127.0.0.1:${port}/v1/channels/team:1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'hello', data: 1 }),
    });
    expect(res.status).to.equal(201);
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(code).to.equal(0);
    expect(Date.now() - t0).to.be.below(10_000);
    expect(stderr).to.include('shutting down');
  });
});
