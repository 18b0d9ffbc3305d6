/**
 * Validation of what clients send, shared by every way in (HTTP, WebSocket,
 * `Publisher`), so the rules cannot drift between them.
 */
import { badRequest, tooLarge } from '../errors.js';
import { isValidChannel } from '../protocol/channel.js';
import { isEventId } from '../protocol/event-id.js';
import { isPriority, isValidEventName, type Priority, type PublisherInfo } from '../protocol/frames.js';
import type { HistoryQuery } from '../engine/engine.js';

export const MAX_IDEMPOTENCY_KEY = 128;
export const MAX_HISTORY_LIMIT = 1000;
export const DEFAULT_HISTORY_LIMIT = 100;

export function assertChannel(channel: unknown): asserts channel is string {
  if (!isValidChannel(channel)) throw badRequest('channel: 1 to 128 of A-Z a-z 0-9 _ - : . @');
}

/** The fields of a publish, as any caller sends them. */
export interface RawEventInput {
  event?: unknown;
  data?: unknown;
  priority?: unknown;
  idempotency_key?: unknown;
  publisher?: unknown;
}

export interface EventInput {
  event: string;
  dataJson: string;
  priority: Priority;
  idempotencyKey?: string;
  /** As the caller gave it; only server keys may give one. */
  publisher?: PublisherInfo;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Check an event's fields and encode its data once; throws `bad_request`/`too_large`. */
export function parseEventInput(raw: RawEventInput, maxDataBytes: number): EventInput {
  if (!isValidEventName(raw.event)) throw badRequest('event: a name of 1 to 128 of A-Z a-z 0-9 _ - : . @ /');
  if (raw.data === undefined) throw badRequest('data: required (any JSON value)');
  if (raw.priority !== undefined && !isPriority(raw.priority)) throw badRequest('priority: one of emergency, high, normal, low');
  const key = raw.idempotency_key;
  if (key !== undefined && (typeof key !== 'string' || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY)) {
    throw badRequest(`idempotency_key: a string of 1 to ${MAX_IDEMPOTENCY_KEY} characters`);
  }
  let publisher: PublisherInfo | undefined;
  if (raw.publisher !== undefined) {
    const p = raw.publisher;
    if (!isObject(p) || typeof p.id !== 'string' || !p.id || p.id.length > 128 || (p.name !== undefined && typeof p.name !== 'string')) {
      throw badRequest('publisher: {"id": string, "name"?: string}');
    }
    publisher = p.name === undefined ? { id: p.id } : { id: p.id, name: p.name as string };
  }
  let dataJson: string;
  try {
    dataJson = JSON.stringify(raw.data);
  } catch {
    throw badRequest('data: not serialisable as JSON');
  }
  if (dataJson === undefined) throw badRequest('data: not a JSON value');
  if (Buffer.byteLength(dataJson) > maxDataBytes) throw tooLarge(`data is larger than ${maxDataBytes} bytes`);
  const input: EventInput = { event: raw.event, dataJson, priority: raw.priority ?? 'normal' };
  if (key !== undefined) input.idempotencyKey = key;
  if (publisher) input.publisher = publisher;
  return input;
}

/** `since` and `limit` of a history request (query strings or frame fields). */
export function parseHistoryQuery(since: unknown, limit: unknown): HistoryQuery {
  if (since !== undefined && !isEventId(since)) throw badRequest('since: an event id (<ms>-<seq>)');
  let n = DEFAULT_HISTORY_LIMIT;
  if (limit !== undefined) {
    n = typeof limit === 'number' ? limit : typeof limit === 'string' && /^\d{1,7}$/.test(limit) ? Number(limit) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > MAX_HISTORY_LIMIT) throw badRequest(`limit: an integer from 1 to ${MAX_HISTORY_LIMIT}`);
  }
  return since === undefined ? { limit: n } : { since, limit: n };
}

export const DEVICES = ['web', 'mobile', 'tablet', 'desktop'] as const;
export type Device = (typeof DEVICES)[number];
export const MAX_CUSTOM_STATUS = 140;

export interface PresencePatch {
  status?: 'online' | 'away' | 'busy';
  customStatus?: string | null;
  device?: Device | null;
}

/** `{status?, custom_status?, device?}` of a `presence` frame or `PUT /v1/presence`. */
export function parsePresencePatch(raw: { status?: unknown; custom_status?: unknown; device?: unknown }): PresencePatch {
  const patch: PresencePatch = {};
  if (raw.status !== undefined) {
    if (raw.status !== 'online' && raw.status !== 'away' && raw.status !== 'busy') throw badRequest('status: online, away or busy');
    patch.status = raw.status;
  }
  if (raw.custom_status !== undefined) {
    if (raw.custom_status !== null && (typeof raw.custom_status !== 'string' || raw.custom_status.length > MAX_CUSTOM_STATUS)) {
      throw badRequest(`custom_status: a string of at most ${MAX_CUSTOM_STATUS} characters, or null`);
    }
    patch.customStatus = raw.custom_status;
  }
  if (raw.device !== undefined) {
    if (raw.device !== null && !(DEVICES as readonly unknown[]).includes(raw.device)) throw badRequest(`device: one of ${DEVICES.join(', ')}, or null`);
    patch.device = raw.device as Device | null;
  }
  if (patch.status === undefined && patch.customStatus === undefined && patch.device === undefined) {
    throw badRequest('give at least one of status, custom_status, device');
  }
  return patch;
}
