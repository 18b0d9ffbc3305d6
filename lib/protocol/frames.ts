/**
 * Frames of the WebSocket protocol and the shapes shared by SSE, long-polling and
 * the HTTP API (PROTOCOL §4–§7).
 */
import type { ErrorCode } from './codes.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export const PRIORITIES = ['emergency', 'high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

export function isPriority(value: unknown): value is Priority {
  return typeof value === 'string' && (PRIORITIES as readonly string[]).includes(value);
}

export interface PublisherInfo {
  id: string;
  name?: string;
}

export interface EventFrame {
  type: 'event';
  id: string;
  channel: string;
  event: string;
  data: JsonValue;
  timestamp: string;
  priority: Priority;
  publisher?: PublisherInfo;
}

export interface ErrorFrame {
  type: 'error';
  id?: string;
  code: ErrorCode;
  message: string;
}

export interface ReplyFrame {
  type: 'reply';
  id: string;
  ok: true;
  [key: string]: unknown;
}

export interface WelcomeFrame {
  type: 'welcome';
  connection_id: string;
  server_time: string;
  heartbeat_ms: number;
  user: { id: string; name?: string };
  limits: { max_message_bytes: number; messages_per_second: number };
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/** Event names: dotted words, what applications use (`goal.updated`). */
const EVENT_NAME_RE = /^[A-Za-z0-9_\-:.@/]{1,128}$/;

export function isValidEventName(value: unknown): value is string {
  return typeof value === 'string' && EVENT_NAME_RE.test(value);
}

/**
 * The wire form of a stored event. `dataJson` is the event's data already encoded as
 * JSON, as it sits in the log, so an event is serialised once and never re-parsed on
 * the way from the log to a socket.
 */
export interface EncodableEvent {
  id: string;
  channel: string;
  event: string;
  dataJson: string;
  timestamp: string;
  priority: Priority;
  publisher: PublisherInfo | null;
}

/** Encode an event frame once; the same string goes to every subscriber. */
export function encodeEventFrame(e: EncodableEvent): string {
  let s =
    '{"type":"event","id":' + JSON.stringify(e.id) +
    ',"channel":' + JSON.stringify(e.channel) +
    ',"event":' + JSON.stringify(e.event) +
    ',"data":' + e.dataJson +
    ',"timestamp":' + JSON.stringify(e.timestamp) +
    ',"priority":' + JSON.stringify(e.priority);
  if (e.publisher) s += ',"publisher":' + JSON.stringify(e.publisher);
  return s + '}';
}

/** The parsed event frame (for HTTP history answers). */
export function toEventFrame(e: EncodableEvent): EventFrame {
  return JSON.parse(encodeEventFrame(e)) as EventFrame;
}
