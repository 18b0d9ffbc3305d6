/**
 * The HTTP API (PROTOCOL §7) as an Express router, so it mounts into an existing app
 * (`app.use('/realtime', gateway.router)`) as well as standing alone.
 */
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { DEMO_HTML } from '../client/demo-page.js';
import type { Principal, UserPrincipal } from '../auth/principal.js';
import type { Presence } from '../gateway/presence.js';
import type { TypingReceipts } from '../gateway/typing-receipts.js';
import type { ChannelAccess } from '../gateway/session.js';
import { assertMaySubscribe } from '../auth/rules.js';
import { createAuthenticator, type ServerKeyVerifier } from '../auth/authenticate.js';
import type { Config } from '../config/config.js';
import type { Engine } from '../engine/engine.js';
import { StreamgateError, badRequest, forbidden, notFound, unauthorized } from '../errors.js';
import type { Metrics } from '../gateway/metrics.js';
import { appendEvents, preparePublish, type PublishAudit } from '../gateway/publish.js';
import type { TenantQuota } from '../gateway/tenant-quota.js';
import { encodeEventFrame } from '../protocol/frames.js';
import { writeError } from './respond.js';
import { publishOne } from './fast-lane.js';
import { assertChannel, parseHistoryQuery, parsePresencePatch } from '../gateway/event-input.js';

export interface HttpDeps {
  config: Config;
  engine: Engine;
  metrics: Metrics;
  keys: ServerKeyVerifier;
  audit?: PublishAudit;
  quota?: TenantQuota;
  /** Readiness of the database (rejects when unreachable). */
  pingDatabase(): Promise<void>;
  /** When set, `/metrics` needs `Authorization: Bearer <metricsToken>`. */
  metricsToken?: string;
  /** Presence, typing and receipts for HTTP clients (SSE and long-poll users). */
  collaboration?: {
    presence: Presence;
    collab: TypingReceipts;
    access?: ChannelAccess;
    /** Channels a user belongs to (room membership), for unread counts. */
    memberChannels?(principal: UserPrincipal): Promise<string[]>;
  };
  /** Serve the SDK demo page at `/demo` (development only). */
  demo?: boolean;
  /** The rooms API (createRoomsRouter), mounted at /v1/rooms. */
  rooms?: Router;
  /** The notifications API (createNotificationsRouter), mounted at /v1/notifications after authentication. */
  notifications?: Router;
  /** The streaming routes (SSE, long-polling, announcements), served by the transports. */
  streams?: {
    sse(req: Request, res: Response): void;
    poll(req: Request, res: Response): void;
    announcements(req: Request, res: Response): void;
  };
  /** Shutdown: new requests are refused, publishes in flight are waited for. */
  lifecycle?: { isClosing(): boolean; track<T>(work: Promise<T>): Promise<T> };
}

/** The browser bundle of the SDK, built by `npm run build` (scripts/build-client.mjs). */
const CLIENT_BUNDLE = fileURLToPath(new URL(import.meta.url.includes('/dist/lib/') ? '../../client/streamgate.js' : '../../dist/client/streamgate.js', import.meta.url));

/** A readiness probe that takes longer than this counts as down. */
const READY_TIMEOUT_MS = 2000;

/** Most events one batch may carry. */
export const MAX_BATCH_EVENTS = 1000;

function principal(req: Request): Principal {
  if (!req.principal) throw unauthorized('not authenticated');
  return req.principal;
}

function userPrincipal(req: Request): UserPrincipal {
  const p = principal(req);
  if (p.kind !== 'user') throw forbidden('this route acts for a user: use a user token');
  return p;
}

/** Most users one `GET /v1/presence?users=` may ask for. */
const MAX_PRESENCE_USERS = 100;

function channelParam(req: Request): string {
  const channel = req.params.channel;
  assertChannel(channel);
  return channel;
}

/** The JSON error answer (lib/http/respond.ts), under the name the routers know. */
export const sendError = writeError;

/**
 * CORS for pages on other origins (`CORS_ORIGINS`): the SDK sends `Authorization`
 * and, for SSE, `Last-Event-ID`. Credentials are tokens, never cookies.
 */
function cors(origins: readonly string[]): express.RequestHandler {
  const any = origins.includes('*');
  return (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && (any || origins.includes(origin))) {
      res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
      if (!any) res.setHeader('Vary', 'Origin');
      res.setHeader('Access-Control-Expose-Headers', 'Retry-After');
      if (req.method === 'OPTIONS') {
        res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, PATCH, DELETE, OPTIONS');
        res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type, Last-Event-ID');
        res.setHeader('Access-Control-Max-Age', '600');
        res.status(204).end();
        return;
      }
    }
    next();
  };
}

function requireBody(req: Request): unknown {
  if (req.body === undefined) throw badRequest('expected a JSON body (Content-Type: application/json)');
  return req.body;
}

export function createRouter(deps: HttpDeps): Router {
  const { config, engine, metrics } = deps;
  const router = express.Router();
  const authenticate = createAuthenticator(config.jwt, deps.keys);
  const jsonOne = express.json({ limit: config.limits.max_message_bytes, strict: false });
  const jsonBatch = express.json({ limit: config.limits.max_batch_bytes, strict: false });

  if (config.corsOrigins.length) router.use(cors(config.corsOrigins));

  router.use((req, res, next) => {
    res.on('finish', () => {
      const route = req.route ? String(req.route.path) : 'unmatched';
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  });

  const track = <T>(work: Promise<T>): Promise<T> => (deps.lifecycle ? deps.lifecycle.track(work) : work);
  router.use((_req, res, next) => {
    if (!deps.lifecycle?.isClosing()) return next();
    res.setHeader('Connection', 'close');
    next(new StreamgateError('unavailable', 'server is shutting down'));
  });

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const checks: Record<string, string> = {};
    const probe = async (name: string, fn: () => Promise<void>) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          fn(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no answer within 2 s')), READY_TIMEOUT_MS);
          }),
        ]);
        checks[name] = 'ok';
      } catch (err) {
        checks[name] = `unavailable: ${(err as Error).message}`;
      } finally {
        clearTimeout(timer);
      }
    };
    await Promise.all([probe(engine.kind === 'redis' ? 'redis' : 'engine', () => engine.ping()), probe('database', deps.pingDatabase)]);
    const ready = Object.values(checks).every((v) => v === 'ok');
    if (ready) res.json({ status: 'ready', checks });
    else res.status(503).json({ error: { code: 'unavailable', message: 'not ready' }, checks });
  });

  router.get('/metrics', async (req, res, next) => {
    try {
      if (deps.metricsToken && req.headers.authorization !== `Bearer ${deps.metricsToken}`) {
        throw unauthorized('metrics need Authorization: Bearer <METRICS_TOKEN>');
      }
      res.setHeader('Content-Type', metrics.registry.contentType);
      res.send(await metrics.registry.metrics());
    } catch (err) {
      next(err);
    }
  });

  if (deps.demo) {
    // The page loads `<mount>/demo/streamgate.js` and talks to `<mount>`.
    router.get('/demo', (_req, res) => {
      res.type('html').send(DEMO_HTML);
    });
    router.get('/demo/streamgate.js', (_req, res, next) => {
      res.type('text/javascript').sendFile(CLIENT_BUNDLE, (err) => {
        if (err) next(notFound('the SDK bundle is not built: run npm run build'));
      });
    });
  }

  router.get('/v1/transports', (_req, res) => {
    res.json({
      transports: ['websocket', 'sse', 'poll'],
      heartbeat_ms: config.limits.heartbeat_ms,
      max_message_bytes: config.limits.max_message_bytes,
    });
  });

  if (deps.streams) {
    const streams = deps.streams;
    router.get('/v1/sse', (req, res) => streams.sse(req, res));
    router.get('/v1/poll', (req, res) => streams.poll(req, res));
    router.get('/v1/announcements', (req, res) => streams.announcements(req, res));
  }

  // The same answer as the fast lane of `gateway.listen` (lib/http/fast-lane.ts).
  const publishEndpoint = { publish: deps, track, ...(deps.collaboration?.access ? { access: deps.collaboration.access } : {}) };
  router.post('/v1/channels/:channel/events', authenticate, jsonOne, async (req, res, next) => {
    try {
      res.status(201).json(await publishOne(publishEndpoint, principal(req), channelParam(req), requireBody(req)));
    } catch (err) {
      next(err);
    }
  });

  router.post('/v1/events', authenticate, jsonBatch, async (req, res, next) => {
    try {
      const p = principal(req);
      if (p.kind !== 'server') throw forbidden('batch publishing needs a server key');
      const body = requireBody(req) as { events?: unknown };
      if (typeof body !== 'object' || body === null || !Array.isArray(body.events)) {
        throw badRequest('expected {"events": [ ... ]}');
      }
      if (body.events.length === 0 || body.events.length > MAX_BATCH_EVENTS) {
        throw badRequest(`events: 1 to ${MAX_BATCH_EVENTS} per batch`);
      }
      const requests = body.events.map((item: unknown, i: number) => {
        try {
          return preparePublish(config, p, (item as { channel?: unknown } | null)?.channel, item);
        } catch (err) {
          if (err instanceof StreamgateError) throw new StreamgateError(err.code, `events[${i}]: ${err.message}`);
          throw err;
        }
      });
      const answers = await track(appendEvents(deps, p, requests, 'http'));
      res.status(201).json({ events: answers });
    } catch (err) {
      next(err);
    }
  });

  router.get('/v1/channels/:channel/events', authenticate, async (req, res, next) => {
    try {
      const p = principal(req);
      const channel = channelParam(req);
      const query = parseHistoryQuery(req.query.since, req.query.limit);
      assertMaySubscribe(p, channel);
      if (p.kind === 'user') await deps.collaboration?.access?.maySubscribe(p, channel);
      const result = await engine.history(p.tenant, channel, query);
      // The stored frames are spliced in as they are: no parse and re-encode per event.
      res.type('application/json').send(`{"events":[${result.events.map(encodeEventFrame).join(',')}],"recovered":${result.recovered}}`);
    } catch (err) {
      next(err);
    }
  });

  if (deps.collaboration) {
    const { presence, collab, access } = deps.collaboration;
    const memberChannels = deps.collaboration.memberChannels;
    const mayRead = async (p: Principal, channel: string) => {
      assertMaySubscribe(p, channel);
      if (p.kind === 'user') await access?.maySubscribe(p, channel);
    };

    router.get('/v1/channels/:channel/presence', authenticate, async (req, res, next) => {
      try {
        const p = principal(req);
        const channel = channelParam(req);
        await mayRead(p, channel);
        if (!presence.enabled(channel)) throw forbidden(`presence is off for ${channel}`);
        res.json(await presence.members(p.tenant, channel));
      } catch (err) {
        next(err);
      }
    });

    router.put('/v1/presence', authenticate, jsonOne, async (req, res, next) => {
      try {
        const p = userPrincipal(req);
        await presence.setStatus(p, parsePresencePatch((requireBody(req) ?? {}) as Record<string, unknown>));
        const [me] = await presence.users(p.tenant, [p.userId]);
        res.json(me);
      } catch (err) {
        next(err);
      }
    });

    router.get('/v1/presence', authenticate, async (req, res, next) => {
      try {
        const p = principal(req);
        const raw = req.query.users;
        if (typeof raw !== 'string' || !raw) throw badRequest('users: a comma-separated list of user ids');
        const ids = [...new Set(raw.split(',').map((u) => u.trim()).filter(Boolean))];
        if (ids.length > MAX_PRESENCE_USERS) throw badRequest(`users: at most ${MAX_PRESENCE_USERS}`);
        res.json({ users: await presence.users(p.tenant, ids) });
      } catch (err) {
        next(err);
      }
    });

    router.post('/v1/channels/:channel/typing', authenticate, jsonOne, async (req, res, next) => {
      try {
        const p = userPrincipal(req);
        await collab.typingSignal(p, channelParam(req), (requireBody(req) as { state?: unknown } | null)?.state);
        res.status(204).end();
      } catch (err) {
        next(err);
      }
    });

    for (const [path, kind] of [['read', 'read'], ['ack', 'delivered']] as const) {
      router.post(`/v1/channels/:channel/${path}`, authenticate, jsonOne, async (req, res, next) => {
        try {
          const p = userPrincipal(req);
          await collab.receipt(p, channelParam(req), kind, (requireBody(req) as { until?: unknown } | null)?.until);
          res.status(204).end();
        } catch (err) {
          next(err);
        }
      });
    }

    router.get('/v1/unread', authenticate, async (req, res, next) => {
      try {
        const p = userPrincipal(req);
        const extra = memberChannels ? await memberChannels(p) : [];
        res.json({ channels: await collab.unread(p, extra) });
      } catch (err) {
        next(err);
      }
    });
  }

  if (deps.rooms) router.use('/v1/rooms', deps.rooms);
  if (deps.notifications) router.use('/v1/notifications', authenticate, deps.notifications);

  router.all('/v1/{*rest}', (req, _res, next) => {
    next(notFound(`no route ${req.method} ${req.originalUrl.split('?')[0]}`));
  });

  router.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    sendError(res, err);
  });

  return router;
}
