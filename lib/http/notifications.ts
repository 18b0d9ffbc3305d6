/**
 * The notifications API, mounted at `/v1/notifications`: the history and its read
 * state (badge), preferences, web push subscriptions and FCM device tokens, and the
 * VAPID public key browsers subscribe with.
 *
 * Users act for themselves; server keys name the user with `?user=<id>` on every
 * route. Read changes are announced on `user:<id>` (`notification.read`, with the
 * new unread count) so the user's other devices update their badge. Errors go to
 * `next(err)`, answered by the mounting router's `sendError`.
 */
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import type { Principal } from '../auth/principal.js';
import type { Engine } from '../engine/engine.js';
import { StreamgateError, badRequest, forbidden, notFound, unauthorized } from '../errors.js';
import { isValidChannel } from '../protocol/channel.js';
import { parsePreferencesPatch, preferencesJson, type PreferenceStore } from '../store/notification-preferences.js';
import { MAX_HISTORY_LIMIT, notificationJson, type HistoryQuery, type NotificationStore } from '../store/notifications.js';
import { parsePushTargetPatch, type DeviceToken, type PushTargetStore, type WebPushSubscription } from '../store/push-targets.js';

export interface NotificationsRouterDeps {
  notifications: NotificationStore;
  preferences: PreferenceStore;
  targets: PushTargetStore;
  /** The VAPID public key (`VAPID_PUBLIC_KEY`); null when web push is not configured. */
  vapidPublicKey: string | null;
  /** Announces read changes on `user:<id>`; without it nothing is announced. */
  engine?: Pick<Engine, 'publish'>;
  /** Sets `req.principal`; leave it out when the router is mounted after the authenticator. */
  authenticate?: RequestHandler;
}

/** The event announcing read changes on `user:<id>`. */
export const NOTIFICATION_READ = 'notification.read';
export const MAX_READ_IDS = 500;

function principalOf(req: Request): Principal {
  if (!req.principal) throw unauthorized('not authenticated');
  return req.principal;
}

function queryString(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw badRequest(`${name}: give it once`);
  return v;
}

/** Whose notifications: the user's own, or `?user=` for server keys. */
function subjectOf(req: Request): { tenant: string; userId: string } {
  const p = principalOf(req);
  const named = queryString(req, 'user');
  if (p.kind === 'server') {
    if (!named || named.length > 128) throw badRequest('user: required with a server key (whose notifications)');
    return { tenant: p.tenant, userId: named };
  }
  if (named !== undefined && named !== p.userId) throw forbidden('users act on their own notifications only');
  return { tenant: p.tenant, userId: p.userId };
}

/** The JSON body as an object with only `allowed` fields (an absent body is `{}`). */
function bodyOf(req: Request, allowed: readonly string[]): Record<string, unknown> {
  const body: unknown = req.body ?? {};
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('expected a JSON object body (Content-Type: application/json)');
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw badRequest(`unknown field: ${k}`);
  return body as Record<string, unknown>;
}

function encodeCursor(c: { createdAt: Date; id: string }): string {
  return Buffer.from(`${c.createdAt.getTime()}.${c.id}`).toString('base64url');
}

function decodeCursor(value: string): { createdAt: Date; id: string } {
  const m = /^(\d{1,15})\.([0-9a-f]{32})$/.exec(Buffer.from(value, 'base64url').toString());
  if (!m) throw badRequest('cursor: not a cursor from this API');
  return { createdAt: new Date(Number(m[1])), id: m[2]! };
}

function subscriptionJson(s: WebPushSubscription): Record<string, unknown> {
  return {
    id: s.id,
    endpoint: s.endpoint,
    device_type: s.deviceType,
    enabled: s.enabled,
    label: s.label,
    expires_at: s.expiresAt?.toISOString() ?? null,
    created_at: s.createdAt.toISOString(),
  };
}

function deviceJson(d: DeviceToken): Record<string, unknown> {
  return { id: d.id, token: d.token, platform: d.platform, enabled: d.enabled, label: d.label, created_at: d.createdAt.toISOString() };
}

export function createNotificationsRouter(deps: NotificationsRouterDeps): Router {
  const { notifications, preferences, targets } = deps;
  const router = express.Router();
  if (deps.authenticate) router.use(deps.authenticate);
  router.use(express.json({ limit: '64kb' }));

  /** Tell the user's devices the new unread count. The change is saved already, so a failure says so. */
  async function announceRead(tenant: string, userId: string, ids: string[] | null): Promise<number> {
    const unread = await notifications.unreadCount(tenant, userId);
    const channel = `user:${userId}`;
    if (deps.engine && isValidChannel(channel)) {
      try {
        await deps.engine.publish({ tenant, channel, event: NOTIFICATION_READ, dataJson: JSON.stringify({ ids, unread }), priority: 'normal', publisher: null });
      } catch (err) {
        const e = err instanceof StreamgateError ? err : null;
        throw new StreamgateError(e?.code ?? 'unavailable', `marked read, but ${NOTIFICATION_READ} could not be published: ${e?.message ?? String(err)}`, { cause: err });
      }
    }
    return unread;
  }

  router.get('/vapid-public-key', (_req: Request, res: Response) => {
    if (!deps.vapidPublicKey) throw notFound('web push is not configured on this server (VAPID keys)');
    res.json({ public_key: deps.vapidPublicKey });
  });

  router.get('/', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const query: HistoryQuery = {};
    const limit = queryString(req, 'limit');
    if (limit !== undefined && limit !== '') {
      if (!/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > MAX_HISTORY_LIMIT) throw badRequest(`limit: 1 to ${MAX_HISTORY_LIMIT}`);
      query.limit = Number(limit);
    }
    const cursor = queryString(req, 'cursor');
    if (cursor) query.before = decodeCursor(cursor);
    const unread = queryString(req, 'unread');
    if (unread !== undefined && !['', 'true', 'false', '1', '0'].includes(unread)) throw badRequest('unread: true or false');
    query.unreadOnly = unread === 'true' || unread === '1';
    const page = await notifications.list(tenant, userId, query);
    res.json({ notifications: page.notifications.map(notificationJson), next_cursor: page.next ? encodeCursor(page.next) : null });
  });

  router.get('/unread-count', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    res.json({ unread: await notifications.unreadCount(tenant, userId) });
  });

  router.post('/read', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const { ids } = bodyOf(req, ['ids']);
    if (!Array.isArray(ids) || ids.length < 1 || ids.length > MAX_READ_IDS || !ids.every((id) => typeof id === 'string')) {
      throw badRequest(`ids: 1 to ${MAX_READ_IDS} notification ids`);
    }
    const marked = await notifications.markRead(tenant, userId, ids as string[]);
    const unread = marked > 0 ? await announceRead(tenant, userId, ids as string[]) : await notifications.unreadCount(tenant, userId);
    res.json({ marked, unread });
  });

  router.post('/read-all', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const { until } = bodyOf(req, ['until']);
    let upTo: Date | undefined;
    if (until !== undefined) {
      upTo = typeof until === 'string' ? new Date(until) : new Date(NaN);
      if (Number.isNaN(upTo.getTime())) throw badRequest('until: an ISO 8601 time');
    }
    const marked = await notifications.markAllRead(tenant, userId, upTo);
    const unread = marked > 0 ? await announceRead(tenant, userId, null) : await notifications.unreadCount(tenant, userId);
    res.json({ marked, unread });
  });

  router.get('/preferences', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    res.json(preferencesJson(await preferences.get(tenant, userId)));
  });

  router.put('/preferences', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const patch = parsePreferencesPatch(req.body ?? {}, { allowEmail: principalOf(req).kind === 'server' });
    res.json(preferencesJson(await preferences.update(tenant, userId, patch)));
  });

  router.get('/push-subscriptions', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    res.json({ subscriptions: (await targets.webPushFor(tenant, [userId])).map(subscriptionJson) });
  });

  router.post('/push-subscriptions', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    // The browser's PushSubscription.toJSON(), plus an optional device_type.
    const body = bodyOf(req, ['endpoint', 'expirationTime', 'keys', 'device_type']);
    const keys = (typeof body.keys === 'object' && body.keys !== null ? body.keys : {}) as Record<string, unknown>;
    if (body.expirationTime !== undefined && body.expirationTime !== null && typeof body.expirationTime !== 'number') {
      throw badRequest('expirationTime: epoch milliseconds or null');
    }
    if (body.device_type !== undefined && typeof body.device_type !== 'string') throw badRequest('device_type: a string');
    const agent = req.headers['user-agent'];
    const sub = await targets.addWebPush(tenant, userId, {
      endpoint: body.endpoint as string,
      p256dh: keys.p256dh as string,
      auth: keys.auth as string,
      ...(body.device_type !== undefined ? { deviceType: body.device_type as string } : {}),
      userAgent: typeof agent === 'string' ? agent.slice(0, 256) : null,
      expiresAt: typeof body.expirationTime === 'number' ? new Date(body.expirationTime) : null,
    });
    res.status(201).json(subscriptionJson(sub));
  });

  router.delete('/push-subscriptions', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const { endpoint } = bodyOf(req, ['endpoint']);
    if (typeof endpoint !== 'string') throw badRequest('endpoint: the subscription\'s endpoint (or DELETE …/push-subscriptions/<id>)');
    if (!(await targets.removeWebPush(tenant, userId, { endpoint }))) throw notFound('no such push subscription');
    res.status(204).end();
  });

  // Turn one subscription on or off, or name it: {enabled?, label?}.
  router.patch('/push-subscriptions/:id', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const sub = await targets.updateWebPush(tenant, userId, String(req.params.id), parsePushTargetPatch(req.body ?? {}));
    if (!sub) throw notFound('no such push subscription');
    res.json(subscriptionJson(sub));
  });

  router.delete('/push-subscriptions/:id', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    if (!(await targets.removeWebPush(tenant, userId, { id: String(req.params.id) }))) throw notFound('no such push subscription');
    res.status(204).end();
  });

  router.get('/devices', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    res.json({ devices: (await targets.devicesFor(tenant, [userId])).map(deviceJson) });
  });

  router.post('/devices', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const { token, platform } = bodyOf(req, ['token', 'platform']);
    const device = targets.checkDevice(token, platform);
    res.status(201).json(deviceJson(await targets.addDevice(tenant, userId, device.token, device.platform)));
  });

  router.delete('/devices', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const { token } = bodyOf(req, ['token']);
    if (typeof token !== 'string') throw badRequest('token: the registration token (or DELETE …/devices/<id>)');
    if (!(await targets.removeDevice(tenant, userId, { token }))) throw notFound('no such device');
    res.status(204).end();
  });

  // Turn one device on or off, or name it: {enabled?, label?}.
  router.patch('/devices/:id', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const device = await targets.updateDevice(tenant, userId, String(req.params.id), parsePushTargetPatch(req.body ?? {}));
    if (!device) throw notFound('no such device');
    res.json(deviceJson(device));
  });

  router.delete('/devices/:id', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    if (!(await targets.removeDevice(tenant, userId, { id: String(req.params.id) }))) throw notFound('no such device');
    res.status(204).end();
  });

  router.get('/:id', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const n = await notifications.get(tenant, String(req.params.id), userId);
    if (!n) throw notFound(`no notification ${String(req.params.id)}`);
    res.json(notificationJson(n));
  });

  router.post('/:id/read', async (req: Request, res: Response) => {
    const { tenant, userId } = subjectOf(req);
    const id = String(req.params.id);
    const marked = await notifications.markRead(tenant, userId, [id]);
    const n = await notifications.get(tenant, id, userId);
    if (!n) throw notFound(`no notification ${id}`);
    const unread = marked > 0 ? await announceRead(tenant, userId, [id]) : await notifications.unreadCount(tenant, userId);
    res.json({ ...notificationJson(n), unread });
  });

  return router;
}
