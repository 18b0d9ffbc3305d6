/**
 * `streamgate`: the one command line (PROTOCOL §9). The composition root for the
 * standalone processes of the Procfile.
 */
import { createServer, type Server } from 'node:http';
import { parseArgs } from 'node:util';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { signUserToken } from '../auth/tokens.js';
import { isValidTenant } from '../protocol/channel.js';
import { createGateway } from '../gateway.js';
import { migrateLatest } from '../store/database.js';
import { Store } from '../store/store.js';
import { openDeadLetters } from '../notify/dead-letters.js';
import { bullPrefix } from '../notify/queue.js';
import { generateVapidKeys } from '../notify/vapid.js';
import { runWorker } from '../notify/worker.js';

const HELP = `streamgate: a realtime gateway on Redis Streams

Usage: streamgate <command> [options]

Commands:
  serve                         run the gateway (HTTP API, WebSocket, SSE, long-poll) on PORT
  worker                        run the notification pipeline (notifier consumer group, BullMQ senders, daily digest)
  vapid                         print a new VAPID key pair for web push
  notifications failed [--limit 100]
                                list deliveries that failed their last attempt (the dead-letter list)
  notifications retry <id> | --all
                                queue failed deliveries again, with all their attempts
  migrate                       apply the database migrations
  keys create --tenant T [--label L]
                                create a server key; it is printed once, alone on the last line
  keys list --tenant T          list a tenant's server keys (never the secret)
  keys revoke <id>              revoke a server key
  token --sub U --tid T [--name N] [--channels a,b] [--publish a,b] [--roles r1,r2] [--ttl 3600]
                                print a user token signed with JWT_SECRET (development and tests)

Environment: PORT, HOST, REDIS_URL, DATABASE_URL, JWT_SECRET, JWT_PUBLIC_KEY, JWT_ISSUER,
JWT_AUDIENCE, NODE_ENV, STREAMGATE_CONFIG, VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY, VAPID_SUBJECT,
FCM_SERVICE_ACCOUNT, SMTP_URL (see README.md).
`;

const out = (line: string) => process.stdout.write(line + '\n');
const err = (line: string) => process.stderr.write(line + '\n');

function list(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}

async function serve(config: Config): Promise<number> {
  if (config.jwt.generated) {
    err(`streamgate: no JWT_SECRET set; using the development secret kept in ./data/dev-secret:`);
    err(`  JWT_SECRET=${config.jwt.secret}`);
    err(`  make a token with: node bin/streamgate token --sub u1 --tid t1 --channels 'team:*' --publish 'team:*'`);
  }
  const gateway = await createGateway({ settings: {}, migrate: config.nodeEnv !== 'production' });
  const port = await gateway.listen();
  const engine = config.redisUrl ? 'redis' : 'memory (single node)';
  const database = config.databaseUrl ? 'postgresql' : `sqlite ${config.sqliteFile}`;
  err(`streamgate: listening on http://${config.host}:${port} (engine: ${engine}, database: ${database})`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      err(`streamgate: ${signal}, shutting down`);
      const force = setTimeout(() => {
        err('streamgate: shutdown took longer than 10 s, exiting');
        process.exit(1);
      }, 10_000);
      force.unref();
      gateway.close().then(
        () => {
          clearTimeout(force);
          resolve(0);
        },
        (e: unknown) => {
          err(`streamgate: error during shutdown: ${(e as Error).message}`);
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

async function migrate(config: Config): Promise<number> {
  const store = await Store.open(config, { migrate: false });
  try {
    const applied = await migrateLatest(store.knex);
    out(applied.length ? `applied: ${applied.join(', ')}` : 'already up to date');
    return 0;
  } finally {
    await store.close();
  }
}

async function keys(config: Config, args: string[]): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    options: { tenant: { type: 'string' }, label: { type: 'string' } },
    allowPositionals: true,
  });
  const store = await Store.open(config, { migrate: config.nodeEnv !== 'production' });
  try {
    switch (action) {
      case 'create': {
        if (!isValidTenant(values.tenant)) throw new ConfigError('keys create: --tenant T is required (letters, digits, _ - . @)');
        const created = await store.keys.create(values.tenant, values.label);
        err(`server key ${created.id} for tenant ${created.tenant}; it is shown once, store it now:`);
        out(created.key);
        return 0;
      }
      case 'list': {
        if (!isValidTenant(values.tenant)) throw new ConfigError('keys list: --tenant T is required');
        for (const k of await store.keys.list(values.tenant)) {
          out(`${k.id}\t${k.label ?? ''}\tcreated ${k.createdAt.toISOString()}\t${k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : 'active'}`);
        }
        return 0;
      }
      case 'revoke': {
        const id = positionals[0];
        if (!id) throw new ConfigError('keys revoke: give the key id');
        const done = await store.keys.revoke(id);
        err(done ? `revoked ${id}` : `no active key ${id}`);
        return done ? 0 : 1;
      }
      default:
        throw new ConfigError('keys: create, list or revoke');
    }
  } finally {
    await store.close();
  }
}

async function worker(config: Config): Promise<number> {
  if (!config.redisUrl) throw new ConfigError('worker: needs REDIS_URL (BullMQ and the consumer groups live in Redis)');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'streamgate_worker_' });
  const running = await runWorker({ config, registry });
  const metricsServer = await serveWorkerMetrics(registry, config);
  const c = config.notifications.credentials;
  err(`streamgate worker: running (web push ${c.vapid ? 'on' : 'off'}, FCM ${c.fcm ? 'on' : 'off'}, email ${c.smtpUrl ? 'on' : 'off'})`);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      err(`streamgate worker: ${signal}, stopping`);
      const force = setTimeout(() => {
        err('streamgate worker: stopping took longer than 10 s, exiting');
        process.exit(1);
      }, 10_000);
      force.unref();
      metricsServer?.close();
      running.close().then(
        () => {
          clearTimeout(force);
          resolve(0);
        },
        (e: unknown) => {
          err(`streamgate worker: error while stopping: ${(e as Error).message}`);
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

/**
 * The worker's metrics (queued, sent, failed per channel) on `WORKER_METRICS_PORT`, for
 * Prometheus; behind `METRICS_TOKEN` like the gateway's. Off when the variable is unset.
 */
async function serveWorkerMetrics(registry: Registry, config: Config): Promise<Server | null> {
  const raw = process.env.WORKER_METRICS_PORT;
  if (!raw) return null;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`WORKER_METRICS_PORT: not a port number: ${raw}`);
  const server = createServer((req, res) => {
    if (req.url === '/healthz') return void res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
    if (req.url !== '/metrics') return void res.writeHead(404).end();
    if (config.metricsToken && req.headers.authorization !== `Bearer ${config.metricsToken}`) return void res.writeHead(401).end();
    registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, config.host, () => resolve());
  });
  const address = server.address();
  err(`streamgate worker: metrics on http://${config.host}:${typeof address === 'object' && address ? address.port : port}/metrics`);
  return server;
}

function vapid(): number {
  const keys = generateVapidKeys();
  err('streamgate: a new VAPID key pair for web push; set both (keep the private key secret) and VAPID_SUBJECT=mailto:you@example.com:');
  out(`VAPID_PUBLIC_KEY=${keys.publicKey}`);
  out(`VAPID_PRIVATE_KEY=${keys.privateKey}`);
  return 0;
}

async function notifications(config: Config, args: string[]): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    options: { all: { type: 'boolean', default: false }, limit: { type: 'string', default: '100' } },
    allowPositionals: true,
  });
  if (action !== 'failed' && action !== 'retry') throw new ConfigError('notifications: failed or retry');
  if (!config.redisUrl) throw new ConfigError('notifications: needs REDIS_URL');
  const dead = openDeadLetters({ redisUrl: config.redisUrl, prefix: bullPrefix(config.redis.key_prefix) }, config.notifications.retry);
  try {
    if (action === 'failed') {
      const limit = Number(values.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ConfigError('notifications failed: --limit 1 to 1000');
      const { total, failed } = await dead.list({ limit });
      for (const f of failed) {
        out(`${f.id}\t${f.kind}\t${f.tenant ?? ''}\t${f.userId ?? ''}\t${f.attempts} attempts\t${f.failedAt?.toISOString() ?? ''}\t${f.reason}`);
      }
      err(`${total} failed deliver${total === 1 ? 'y' : 'ies'}${total > failed.length ? ` (${failed.length} shown)` : ''}`);
      return 0;
    }
    const id = positionals[0];
    if (values.all === (id !== undefined)) throw new ConfigError('notifications retry: give a job id (quoted: ids contain |) or --all');
    const queued = await dead.retry(values.all ? 'all' : id!);
    err(values.all || queued ? `queued ${queued} again` : `no failed delivery ${id}`);
    return values.all || queued ? 0 : 1;
  } finally {
    await dead.close();
  }
}

function token(config: Config, args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      sub: { type: 'string' },
      tid: { type: 'string' },
      name: { type: 'string' },
      channels: { type: 'string' },
      publish: { type: 'string' },
      roles: { type: 'string' },
      ttl: { type: 'string', default: '3600' },
    },
  });
  if (!values.sub) throw new ConfigError('token: --sub U is required');
  if (!isValidTenant(values.tid)) throw new ConfigError('token: --tid T is required (letters, digits, _ - . @)');
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl < 1) throw new ConfigError('token: --ttl must be a positive number of seconds');
  if (!config.jwt.secret) throw new ConfigError('token: signs with JWT_SECRET, which is not set (JWT_PUBLIC_KEY deployments sign tokens elsewhere)');
  const opts: Parameters<typeof signUserToken>[1] = { sub: values.sub, tid: values.tid, ttlSeconds: ttl };
  if (values.name) opts.name = values.name;
  const channels = list(values.channels);
  const publish = list(values.publish);
  const roles = list(values.roles);
  if (channels) opts.channels = channels;
  if (publish) opts.publish = publish;
  if (roles) opts.roles = roles;
  if (config.jwt.issuer) opts.issuer = config.jwt.issuer;
  if (config.jwt.audience) opts.audience = config.jwt.audience;
  out(signUserToken(config.jwt.secret, opts));
  return 0;
}

/** Run the CLI; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help' || args.includes('--help')) {
    out(HELP);
    return command ? 0 : 1;
  }
  try {
    switch (command) {
      case 'serve':
        return await serve(loadConfig());
      case 'worker':
        return await worker(loadConfig());
      case 'vapid':
        return vapid();
      case 'notifications':
        return await notifications(loadConfig(), args);
      case 'migrate':
        return await migrate(loadConfig());
      case 'keys':
        return await keys(loadConfig(), args);
      case 'token':
        return token(loadConfig(), args);
      default:
        err(`streamgate: unknown command ${command}\n`);
        err(HELP);
        return 2;
    }
  } catch (e) {
    if (e instanceof ConfigError || (e as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      err(`streamgate: ${(e as Error).message}`);
      return 2;
    }
    throw e;
  }
}
