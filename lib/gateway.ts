/**
 * `createGateway`: the composition of configuration, engine, storage, hub and HTTP
 * routes, for embedding in an existing Express app and HTTP server or standing alone.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Router } from 'express';
import { loadConfig, type Config, type LoadOptions } from './config/config.js';
import type { Engine, LogFeed } from './engine/engine.js';
import { createEngine } from './engines.js';
import { notFound } from './errors.js';
import { Hub } from './gateway/hub.js';
import { Metrics } from './gateway/metrics.js';
import { createRouter, sendError } from './http/app.js';
import { FastLane } from './http/fast-lane.js';
import { Store } from './store/store.js';
import { TokenVerifier } from './auth/tokens.js';
import { CloseCode } from './protocol/codes.js';
import { ConnectionRegistry } from './gateway/connections.js';
import type { Session, SessionContext } from './gateway/session.js';
import { WebSocketGateway } from './transports/websocket.js';
import { TenantQuota } from './gateway/tenant-quota.js';
import { Presence } from './gateway/presence.js';
import { createRoomsRouter } from './http/rooms.js';
import { createNotificationsRouter } from './http/notifications.js';
import { isReservedRoomEvent, roomChannelAccess } from './auth/room-roles.js';
import { createAuthenticator } from './auth/authenticate.js';
import { TypingReceipts } from './gateway/typing-receipts.js';
import { serveSse, type StreamDeps } from './transports/sse.js';
import { PollGateway } from './transports/poll.js';
import { Announcements } from './transports/announcements.js';

/** How long shutdown waits for clients to finish the close handshake. */
const SHUTDOWN_GRACE_MS = 2000;
/** How long shutdown waits for publishes and replays in flight. */
const INFLIGHT_WAIT_MS = 5000;

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
  /**
   * Serve the upgrade route (`<path>/v1/ws`) of `server`; give the router's mount path
   * (`'/realtime'`) when it is mounted under one.
   */
  attach(server: Server, options?: { path?: string }): void;
  /** Open client sessions on this node. */
  readonly connections: ConnectionRegistry;
  /** Stand alone: an HTTP server with the router at `/`. Resolves to the bound port. */
  listen(port?: number, host?: string): Promise<number>;
  /** Stop accepting, close the live feed, the engine and the database. */
  close(): Promise<void>;
}

/** Who a session is, as the connection audit records it. */
function auditOf(session: Session) {
  return {
    tenant: session.tenant,
    userId: session.principal.userId,
    connectionId: session.id,
    transport: session.transport.name,
    ip: session.info.ip,
    userAgent: session.info.userAgent,
    device: session.info.device,
  };
}

/** Build a gateway: connects to the engine and the database, runs migrations, starts the live feed. */
export async function createGateway(options: GatewayOptions = {}): Promise<Gateway> {
  const config = loadConfig(options);
  const store = await Store.open(config, {
    migrate: options.migrate ?? config.nodeEnv !== 'production',
    pushTargets: { allowPrivateEndpoints: config.notifications.credentials.allowPrivateEndpoints },
  });
  let engine: Engine;
  try {
    engine = await createEngine(config);
  } catch (err) {
    await store.close();
    throw err;
  }
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });
  const hub = new Hub();
  let feed: LogFeed;
  let signals: { close(): Promise<void> };
  try {
    feed = await engine.subscribeLog('latest', (events) => {
      // Room changes reach every node through the log: forget cached roles at once.
      for (const e of events) if (e.channel.startsWith('room:') && isReservedRoomEvent(e.event)) store.rooms.invalidate(e.tenant, e.channel.slice(5));
      hub.dispatch(events);
    });
    signals = await engine.subscribeSignals((signal) => hub.dispatchSignal(signal));
  } catch (err) {
    await engine.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw err;
  }
  const quota = new TenantQuota(config);
  const servers = new Set<Server>();
  let closing: Promise<void> | null = null;
  const inflight = new Set<Promise<unknown>>();
  /** Count work that shutdown must let finish (publishes, replays). */
  function track<T>(work: Promise<T>): Promise<T> {
    inflight.add(work);
    const done = () => inflight.delete(work);
    work.then(done, done);
    return work;
  }
  const connections = new ConnectionRegistry(config, engine);
  const publishDeps = { config, engine, metrics, audit: store.audit, quota };
  const access = roomChannelAccess(store.rooms);
  const presence = new Presence({ config, engine, history: store.audit });
  const collab = new TypingReceipts({ config, engine, mirror: store.readCursors, mayRead: access.maySubscribe, stored: store.readCursors });
  const ctx: SessionContext = {
    config,
    engine,
    hub,
    metrics,
    presence,
    collab,
    access,
    verifier: new TokenVerifier(config.jwt),
    publish: publishDeps,
    track,
    onClosed(session: Session, code: number) {
      if (!connections.remove(session)) return;
      metrics.connections.dec({ transport: session.transport.name, tenant: session.tenant });
      store.audit.connectionClosed({ ...auditOf(session), closeCode: code, durationMs: Date.now() - session.openedAt });
    },
  };
  const streamDeps: StreamDeps = {
    ctx,
    verifier: ctx.verifier,
    registry: connections,
    isClosing: () => closing !== null,
    onOpen(session) {
      void presence.connected(session).catch(() => undefined);
      metrics.connections.inc({ transport: session.transport.name, tenant: session.tenant });
      store.audit.connectionOpened(auditOf(session));
    },
  };
  const websocket = new WebSocketGateway(streamDeps);
  const polls = new PollGateway(streamDeps);
  const announcements = new Announcements(hub, ctx.verifier, metrics, () => closing !== null, connections);
  const router = createRouter({
    config,
    engine,
    metrics,
    quota,
    keys: store.keys,
    audit: store.audit,
    pingDatabase: () => store.ping(),
    ...(config.metricsToken ? { metricsToken: config.metricsToken } : {}),
    lifecycle: { isClosing: () => closing !== null, track },
    demo: config.nodeEnv !== 'production',
    collaboration: {
      presence,
      collab,
      access,
      memberChannels: async (p) => (await store.rooms.roomIdsForUser(p.tenant, p.userId)).map((id) => `room:${id}`),
    },
    rooms: createRoomsRouter({ rooms: store.rooms, publish: publishDeps, authenticate: createAuthenticator(config.jwt, store.keys) }),
    notifications: createNotificationsRouter({
      notifications: store.notifications,
      preferences: store.notificationPreferences,
      targets: store.pushTargets,
      vapidPublicKey: config.notifications.credentials.vapid?.publicKey ?? null,
      engine,
    }),
    streams: {
      sse: (req, res) => void serveSse(streamDeps, req, res),
      poll: (req, res) => void polls.serve(req, res),
      announcements: (req, res) => void announcements.serve(req, res),
    },
  });

  const gateway: Gateway = {
    config,
    engine,
    store,
    hub,
    metrics,
    router,
    connections,
    attach(server: Server, options: { path?: string } = {}) {
      servers.add(server);
      const wsPath = `${(options.path ?? '').replace(/\/+$/, '')}/v1/ws`;
      server.on('upgrade', (req, socket, head) => {
        const path = (req.url ?? '').split('?')[0];
        if (path === wsPath) websocket.handleUpgrade(req, socket, head);
        else if (server.listenerCount('upgrade') === 1) socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      });
    },
    async listen(port = config.port, host = config.host) {
      const app = express();
      app.disable('x-powered-by');
      app.set('trust proxy', 'loopback');
      app.use(router);
      app.use((req, res) => sendError(res, notFound(`no route ${req.method} ${req.path}`)));
      // Single publishes and long-polls skip Express when they can (lib/http/fast-lane.ts).
      const lane = new FastLane({
        publish: publishDeps,
        access,
        track,
        keys: store.keys,
        verifier: ctx.verifier,
        metrics,
        corsOrigins: config.corsOrigins,
        isClosing: () => closing !== null,
        poll: (req, res) => void polls.serve(req, res),
      });
      const server = createServer((req, res) => {
        if (!lane.take(req, res)) app(req, res);
      });
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
        const stopped = Promise.all(
          [...servers].map(
            (s) =>
              new Promise<void>((resolve) => {
                if (!s.listening) return resolve();
                s.close(() => resolve());
                s.closeIdleConnections();
              }),
          ),
        );
        // Stop reading frames, let the publishes in flight be acknowledged, then close
        // every session with 1001 after writing their replies.
        connections.stopReading();
        polls.releaseAll();
        // Bounded: a replay waiting on a stalled client must not hold the shutdown.
        await Promise.race([Promise.allSettled([...inflight]), new Promise((r) => setTimeout(r, INFLIGHT_WAIT_MS).unref())]);
        connections.closeAll(CloseCode.GoingAway, 'server going away');
        websocket.close();
        announcements.close();
        for (const s of servers) s.closeIdleConnections();
        // Clients get a moment to answer the close handshake; then the sockets go.
        const grace = new Promise<void>((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS).unref());
        await Promise.race([stopped, grace]);
        for (const s of servers) s.closeAllConnections();
        await stopped;
        presence.close();
        collab.close();
        await signals.close();
        await feed.close();
        await engine.close();
        await store.close();
      })();
      return closing;
    },
  };
  return gateway;
}
