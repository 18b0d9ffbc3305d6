/**
 * Publishing, whatever the way in (HTTP, WebSocket): validate the request, check the
 * publisher's rights, append to the log, count it and audit it. Validation happens
 * whole before anything is appended, so a refused batch changes nothing.
 */
import type { Principal } from '../auth/principal.js';
import { assertMayPublish } from '../auth/rules.js';
import { isReservedRoomEvent, roomIdOf } from '../auth/room-roles.js';
import { namespaceSettings, type Config } from '../config/config.js';
import type { Engine, PublishRequest } from '../engine/engine.js';
import { badRequest, forbidden, toStreamgateError } from '../errors.js';
import type { PublisherInfo } from '../protocol/frames.js';
import { assertChannel, parseEventInput } from './event-input.js';
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

const ALLOWED_FIELDS = new Set(['channel', 'event', 'data', 'priority', 'idempotency_key', 'publisher']);

/**
 * Validate one publish and turn it into an engine request. `channel` comes from the
 * URL for single publishes and from the body for batch items.
 */
export function preparePublish(config: Config, principal: Principal, channel: unknown, body: unknown): PublishRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the event must be a JSON object');
  const fields = body as Record<string, unknown>;
  for (const k of Object.keys(fields)) if (!ALLOWED_FIELDS.has(k)) throw badRequest(`unknown field: ${k}`);
  if (fields.channel !== undefined && fields.channel !== channel) throw badRequest('channel: the body names another channel than the URL');
  assertChannel(channel);
  const input = parseEventInput(fields, config.limits.max_message_bytes);
  assertMayPublish(principal, channel);
  if (principal.kind === 'user' && roomIdOf(channel) !== null && isReservedRoomEvent(input.event)) {
    throw forbidden('room.* and member.* events on room channels come from the rooms API');
  }
  let publisher: PublisherInfo | null = null;
  if (input.publisher) {
    if (principal.kind !== 'server') throw forbidden('publisher: only server keys may set it');
    publisher = input.publisher;
  } else if (principal.kind === 'user') {
    publisher = principal.name === undefined ? { id: principal.userId } : { id: principal.userId, name: principal.name };
  }
  if (namespaceSettings(config, channel).anonymous) publisher = null;

  const req: PublishRequest = {
    tenant: principal.tenant,
    channel,
    event: input.event,
    dataJson: input.dataJson,
    priority: input.priority,
    publisher,
  };
  if (input.idempotencyKey !== undefined) req.idempotencyKey = input.idempotencyKey;
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
  const settled = await Promise.allSettled(requests.map((r) => deps.engine.publish(r)));
  end();
  const publisherKind = principal.kind;
  const publisherId = principal.kind === 'user' ? principal.userId : principal.keyId;
  let appended = 0;
  let failure: unknown = null;
  const answers: PublishAnswer[] = [];
  // Audit and count every event the log took, also when another of the batch failed.
  settled.forEach((s, i) => {
    if (s.status === 'rejected') {
      failure ??= s.reason;
      return;
    }
    const req = requests[i]!;
    const r = s.value;
    if (!r.duplicate) {
      appended++;
      deps.audit?.published({ tenant: req.tenant, channel: req.channel, event: req.event, eventId: r.id, publisherKind, publisherId });
    }
    answers.push({ id: r.id, channel: req.channel, timestamp: r.timestamp });
  });
  if (appended) deps.metrics.eventsPublished.inc({ source }, appended);
  if (failure !== null) throw toStreamgateError(failure);
  return answers;
}
