/**
 * Publishing, whatever the way in (HTTP, WebSocket): validate the request, check the
 * publisher's rights, append to the log, count it and audit it. Validation happens
 * whole before anything is appended, so a refused batch changes nothing.
 */
import type { Principal } from '../auth/principal.js';
import { assertMayPublish } from '../auth/rules.js';
import { namespaceSettings, type Config } from '../config/config.js';
import type { Engine, PublishRequest } from '../engine/engine.js';
import { badRequest, forbidden, tooLarge, toStreamgateError } from '../errors.js';
import { isValidChannel } from '../protocol/channel.js';
import { isPriority, isValidEventName, type PublisherInfo } from '../protocol/frames.js';
import type { Metrics } from './metrics.js';
import type { TenantQuota } from './tenant-quota.js';

/** What the gateway needs of the audit log. */
export interface PublishAudit {
  published(row: {
    tenant: string;
    channel: string;
    event: string;
    eventId: string;
    publisherKind: 'user' | 'server';
    publisherId: string;
  }): void;
}

export interface PublishDeps {
  config: Config;
  engine: Engine;
  metrics: Metrics;
  audit?: PublishAudit;
  quota?: TenantQuota;
}

export interface PublishAnswer {
  id: string;
  channel: string;
  timestamp: string;
}

const MAX_IDEMPOTENCY_KEY = 128;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const ALLOWED_FIELDS = new Set(['channel', 'event', 'data', 'priority', 'idempotency_key', 'publisher']);

/**
 * Validate one publish and turn it into an engine request. `channel` comes from the
 * URL for single publishes and from the body for batch items.
 */
export function preparePublish(config: Config, principal: Principal, channel: unknown, body: unknown): PublishRequest {
  if (!isObject(body)) throw badRequest('the event must be a JSON object');
  for (const k of Object.keys(body)) if (!ALLOWED_FIELDS.has(k)) throw badRequest(`unknown field: ${k}`);
  if (!isValidChannel(channel)) throw badRequest('channel: 1 to 128 of A-Z a-z 0-9 _ - : . @');
  if (!isValidEventName(body.event)) throw badRequest('event: a name of 1 to 128 of A-Z a-z 0-9 _ - : . @ /');
  if (!('data' in body) || body.data === undefined) throw badRequest('data: required (any JSON value)');
  if (body.priority !== undefined && !isPriority(body.priority)) throw badRequest('priority: one of emergency, high, normal, low');
  const key = body.idempotency_key;
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY)) {
    throw badRequest(`idempotency_key: a string of 1 to ${MAX_IDEMPOTENCY_KEY} characters`);
  }
  assertMayPublish(principal, channel);

  const dataJson = JSON.stringify(body.data);
  if (Buffer.byteLength(dataJson) > config.limits.max_message_bytes) {
    throw tooLarge(`data is larger than ${config.limits.max_message_bytes} bytes`);
  }
  let publisher: PublisherInfo | null = null;
  if (body.publisher !== undefined) {
    if (principal.kind !== 'server') throw forbidden('publisher: only server keys may set it');
    const p = body.publisher;
    if (!isObject(p) || typeof p.id !== 'string' || !p.id || (p.name !== undefined && typeof p.name !== 'string')) {
      throw badRequest('publisher: {"id": string, "name"?: string}');
    }
    publisher = p.name === undefined ? { id: p.id } : { id: p.id, name: p.name as string };
  } else if (principal.kind === 'user') {
    publisher = principal.name === undefined ? { id: principal.userId } : { id: principal.userId, name: principal.name };
  }
  if (namespaceSettings(config, channel).anonymous) publisher = null;

  const req: PublishRequest = {
    tenant: principal.tenant,
    channel,
    event: body.event,
    dataJson,
    priority: body.priority ?? 'normal',
    publisher,
  };
  if (key !== undefined) req.idempotencyKey = key;
  return req;
}

/** Append prepared requests in order; each is acknowledged only once the log has it. */
export async function appendEvents(
  deps: PublishDeps,
  principal: Principal,
  requests: readonly PublishRequest[],
  source: string,
): Promise<PublishAnswer[]> {
  deps.quota?.charge(principal.tenant, requests.length);
  const end = deps.metrics.publishDuration.startTimer({ source });
  let results;
  try {
    results = await Promise.all(requests.map((r) => deps.engine.publish(r)));
  } catch (err) {
    throw toStreamgateError(err);
  }
  end();
  const publisherKind = principal.kind;
  const publisherId = principal.kind === 'user' ? principal.userId : principal.keyId;
  let appended = 0;
  const answers = results.map((r, i) => {
    const req = requests[i]!;
    if (!r.duplicate) {
      appended++;
      deps.audit?.published({ tenant: req.tenant, channel: req.channel, event: req.event, eventId: r.id, publisherKind, publisherId });
    }
    return { id: r.id, channel: req.channel, timestamp: r.timestamp };
  });
  if (appended) deps.metrics.eventsPublished.inc({ source }, appended);
  return answers;
}
