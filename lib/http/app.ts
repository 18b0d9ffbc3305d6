/**
 * The HTTP API (PROTOCOL §7) as an Express router, so it mounts into an existing app
 * (`app.use('/realtime', gateway.router)`) as well as standing alone.
 */
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { Principal } from '../auth/principal.js';
import { assertMaySubscribe } from '../auth/rules.js';
import { createAuthenticator, type ServerKeyVerifier } from '../auth/authenticate.js';
import type { Config } from '../config/config.js';
import type { Engine } from '../engine/engine.js';
import { StreamgateError, badRequest, forbidden, notFound, toStreamgateError, unauthorized } from '../errors.js';
import type { Metrics } from '../gateway/metrics.js';
import { appendEvents, preparePublish, type PublishAudit } from '../gateway/publish.js';
import type { TenantQuota } from '../gateway/tenant-quota.js';
import { isValidChannel } from '../protocol/channel.js';
import { isEventId } from '../protocol/event-id.js';
import { toEventFrame } from '../protocol/frames.js';

export interface HttpDeps {
  config: Config;
  engine: Engine;
  metrics: Metrics;
  keys: ServerKeyVerifier;
  audit?: PublishAudit;
  quota?: TenantQuota;
  /** Readiness of the database (rejects when unreachable). */
  pingDatabase(): Promise<void>;
}

/** Most events one batch may carry. */
export const MAX_BATCH_EVENTS = 1000;

function principal(req: Request): Principal {
  if (!req.principal) throw unauthorized('not authenticated');
  return req.principal;
}

function channelParam(req: Request): string {
  const channel = req.params.channel;
  if (!isValidChannel(channel)) throw badRequest('channel: 1 to 128 of A-Z a-z 0-9 _ - : . @');
  return channel;
}

/** Map body-parser's errors (size, syntax) onto the catalogue. */
function bodyParserError(err: unknown): StreamgateError | null {
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'entity.too.large') return new StreamgateError('too_large', 'request body is too large');
  if (typeof type === 'string' && (type.startsWith('entity.') || type.endsWith('.unsupported') || type === 'request.aborted')) {
    return badRequest(`malformed request body: ${(err as Error).message}`);
  }
  return null;
}

export function sendError(res: Response, err: unknown): void {
  const e = bodyParserError(err) ?? toStreamgateError(err);
  if (e.code === 'internal') process.emitWarning(`streamgate internal error: ${String((e.cause as Error)?.stack ?? e.cause)}`);
  if (e.retryAfter !== undefined) res.setHeader('Retry-After', String(Math.max(1, Math.ceil(e.retryAfter))));
  res.status(e.status).json(e.toBody());
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

  router.use((req, res, next) => {
    res.on('finish', () => {
      const route = req.route ? String(req.route.path) : 'unmatched';
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  });

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const checks: Record<string, string> = {};
    const probe = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
        checks[name] = 'ok';
      } catch (err) {
        checks[name] = `unavailable: ${(err as Error).message}`;
      }
    };
    await Promise.all([probe(engine.kind === 'redis' ? 'redis' : 'engine', () => engine.ping()), probe('database', deps.pingDatabase)]);
    const ready = Object.values(checks).every((v) => v === 'ok');
    if (ready) res.json({ status: 'ready', checks });
    else res.status(503).json({ error: { code: 'unavailable', message: 'not ready' }, checks });
  });

  router.get('/metrics', async (_req, res, next) => {
    try {
      res.setHeader('Content-Type', metrics.registry.contentType);
      res.send(await metrics.registry.metrics());
    } catch (err) {
      next(err);
    }
  });

  router.get('/v1/transports', (_req, res) => {
    res.json({
      transports: ['websocket', 'sse', 'poll'],
      heartbeat_ms: config.limits.heartbeat_ms,
      max_message_bytes: config.limits.max_message_bytes,
    });
  });

  router.post('/v1/channels/:channel/events', authenticate, jsonOne, async (req, res, next) => {
    try {
      const p = principal(req);
      const request = preparePublish(config, p, channelParam(req), requireBody(req));
      const [answer] = await appendEvents(deps, p, [request], 'http');
      res.status(201).json(answer);
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
      const answers = await appendEvents(deps, p, requests, 'http');
      res.status(201).json({ events: answers });
    } catch (err) {
      next(err);
    }
  });

  router.get('/v1/channels/:channel/events', authenticate, async (req, res, next) => {
    try {
      const p = principal(req);
      const channel = channelParam(req);
      const { since, limit: rawLimit } = req.query;
      if (since !== undefined && !isEventId(since)) throw badRequest('since: an event id (<ms>-<seq>)');
      let limit = 100;
      if (rawLimit !== undefined) {
        limit = typeof rawLimit === 'string' && /^\d+$/.test(rawLimit) ? Number(rawLimit) : NaN;
        if (!(limit >= 1 && limit <= 1000)) throw badRequest('limit: an integer from 1 to 1000');
      }
      assertMaySubscribe(p, channel);
      const query = since === undefined ? { limit } : { since, limit };
      const result = await engine.history(p.tenant, channel, query);
      res.json({ events: result.events.map(toEventFrame), recovered: result.recovered });
    } catch (err) {
      next(err);
    }
  });

  router.all('/v1/{*rest}', (req, _res, next) => {
    next(notFound(`no route ${req.method} ${req.originalUrl.split('?')[0]}`));
  });

  router.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    sendError(res, err);
  });

  return router;
}
