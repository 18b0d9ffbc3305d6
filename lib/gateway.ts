/**
 * `createGateway`: the composition of configuration, engine, storage, hub and HTTP
 * routes, for embedding in an existing Express app and HTTP server or standing alone.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Router } from 'express';
import { loadConfig, namespaceSettings, type Config, type LoadOptions } from './config/config.js';
import type { Engine, LogFeed } from './engine/engine.js';
import { MemoryEngine } from './engine/memory-engine.js';
import { RedisEngine } from './engine/redis-engine.js';
import { notFound } from './errors.js';
import { Hub } from './gateway/hub.js';
import { Metrics } from './gateway/metrics.js';
import { createRouter, sendError } from './http/app.js';
import { Store } from './store/store.js';

export interface GatewayOptions extends LoadOptions {
  /** Run pending migrations at start. @default true unless NODE_ENV=production */
  migrate?: boolean;
  /** Also collect Node process metrics. @default true */
  defaultMetrics?: boolean;
}

export interface Gateway {
  readonly config: Config;
  readonly engine: Engine;
  readonly store: Store;
  readonly hub: Hub;
  readonly metrics: Metrics;
  /** The HTTP API; mount it where you like: `app.use('/realtime', gateway.router)`. */
  readonly router: Router;
  /** Serve the upgrade routes (WebSocket) of `server`, under the router's mount path. */
  attach(server: Server, options?: { path?: string }): void;
  /** Stand alone: an HTTP server with the router at `/`. Resolves to the bound port. */
  listen(port?: number, host?: string): Promise<number>;
  /** Stop accepting, close the live feed, the engine and the database. */
  close(): Promise<void>;
}

export function createEngine(config: Config): Promise<Engine> | Engine {
  const retention = (channel: string) => namespaceSettings(config, channel).retention;
  if (!config.redisUrl) return new MemoryEngine({ retention, logMaxLength: config.redis.log_max_length });
  return RedisEngine.create({
    url: config.redisUrl,
    keyPrefix: config.redis.key_prefix,
    shards: config.redis.shards,
    logMaxLength: config.redis.log_max_length,
    retention,
  });
}

/** Build a gateway: connects to the engine and the database, runs migrations, starts the live feed. */
export async function createGateway(options: GatewayOptions = {}): Promise<Gateway> {
  const config = loadConfig(options);
  const store = await Store.open(config, { migrate: options.migrate ?? config.nodeEnv !== 'production' });
  let engine: Engine;
  try {
    engine = await createEngine(config);
  } catch (err) {
    await store.close();
    throw err;
  }
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });
  const hub = new Hub();
  const feed: LogFeed = await engine.subscribeLog('latest', (events) => hub.dispatch(events));
  const router = createRouter({
    config,
    engine,
    metrics,
    keys: store.keys,
    audit: store.audit,
    pingDatabase: () => store.ping(),
  });
  const servers = new Set<Server>();
  let closing: Promise<void> | null = null;

  const gateway: Gateway = {
    config,
    engine,
    store,
    hub,
    metrics,
    router,
    attach(server: Server) {
      servers.add(server);
    },
    async listen(port = config.port, host = config.host) {
      const app = express();
      app.disable('x-powered-by');
      app.set('trust proxy', 'loopback');
      app.use(router);
      app.use((req, res) => sendError(res, notFound(`no route ${req.method} ${req.path}`)));
      const server = createServer(app);
      gateway.attach(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      return (server.address() as AddressInfo).port;
    },
    close() {
      closing ??= (async () => {
        await Promise.all(
          [...servers].map(
            (s) =>
              new Promise<void>((resolve) => {
                if (!s.listening) return resolve();
                s.close(() => resolve());
                s.closeIdleConnections();
              }),
          ),
        );
        await feed.close();
        await engine.close();
        await store.close();
      })();
      return closing;
    },
  };
  return gateway;
}
