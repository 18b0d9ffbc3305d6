/**
 * The seam between the client and its three wires (WebSocket, SSE, long-polling):
 * the client never asks which one it has.
 */
import type { EventFrame, JsonValue, Priority } from '../protocol/frames.js';
import type { StreamgateClientError } from './errors.js';
import type { TokenSource } from './token.js';
import type {
  EventSourceConstructor,
  FetchFunction,
  HistoryOptions,
  HistoryResult,
  PublishResult,
  TimeoutOptions,
  TransportName,
  WebSocketConstructor,
} from './types.js';

/** Frames a transport hands to the client. */
export type InboundFrame =
  | EventFrame
  | { type: 'reset'; channel: string }
  | { type: 'presence' | 'typing' | 'receipt'; channel: string; [key: string]: unknown }
  | { type: 'unsubscribed'; channel: string; reason?: unknown };

/** Frame types a transport passes to its client. */
export const DELIVERED_TYPES: readonly string[] = ['event', 'reset', 'presence', 'typing', 'receipt', 'unsubscribed'];

/**
 * Presence, typing and receipt requests (PROTOCOL §4 client frames, §7 routes), with
 * the WebSocket frame's field names.
 */
export type CommandRequest =
  | { type: 'presence'; status?: string; custom_status?: string | null; device?: string | null }
  | { type: 'members'; channel: string }
  | { type: 'typing'; channel: string; state: 'start' | 'stop' }
  | { type: 'ack' | 'read'; channel: string; until: string };

export interface CloseInfo {
  /** Nothing ever came through (no welcome, no poll answer): a capability failure. */
  neverWorked: boolean;
  reason: string;
  closeCode?: number;
  status?: number;
}

export interface PublishRequest {
  channel: string;
  event: string;
  data: JsonValue;
  priority?: Priority;
  idempotency_key: string;
}

export interface SubscribeAnswer {
  recovered: boolean;
  /** The channel's latest event id when the subscription began (null: none). */
  position: string | null;
}

/** What a transport reports to its client. Calls from a transport that is no longer current are ignored. */
export interface TransportHost {
  /** Usable: subscribe and publish may go through it. */
  opened(t: ClientTransport): void;
  /** Frames came through the wire itself (the capability works). */
  confirmed(t: ClientTransport): void;
  closed(t: ClientTransport, info: CloseInfo): void;
  frame(t: ClientTransport, frame: InboundFrame): void;
  /** The server warned that the token expires soon (WebSocket `token_expiring`). */
  tokenExpiring(t: ClientTransport): void;
  /** A server error that answers no request. */
  error(t: ClientTransport, error: Error): void;
  /** The last event id kept for a channel, or null. */
  lastId(channel: string): string | null;
  /** The server no longer allows a channel it accepted (found when a stream was refused); it is dropped. */
  channelRefused(t: ClientTransport, channel: string, error: StreamgateClientError): void;
  /** A stream that carries these channels went live (SSE, poll): their signals flow from now. */
  channelsLive(t: ClientTransport, channels: readonly string[]): void;
}

export interface TransportContext {
  /** Base URL without a trailing slash, `http:` or `https:`. */
  baseUrl: string;
  tokens: TokenSource;
  fetch: FetchFunction | undefined;
  WebSocket: WebSocketConstructor | undefined;
  EventSource: EventSourceConstructor | undefined;
  timeouts: Required<TimeoutOptions>;
  device: string | undefined;
}

export interface ClientTransport {
  readonly name: TransportName;
  /** Publishes may be sent without waiting for the previous answer (one ordered socket). */
  readonly pipelined: boolean;
  /** Resumes from the stream cursor (SSE, poll); otherwise from the ids the client kept. */
  readonly usesCursor: boolean;
  /** A channel's signals flow once its subscribe resolved (WebSocket); else from `channelsLive`. */
  readonly signalsOnSubscribe: boolean;
  open(): void;
  /** Close on the client's initiative; no more host calls. */
  close(): void;
  /**
   * Deliver the channel's events after `since` (null: from now). `known`: the server
   * already accepted this channel for this client, no need to check again.
   */
  subscribe(channel: string, since: string | null, known: boolean): Promise<SubscribeAnswer>;
  /** `ended`: the server ended it already (`unsubscribed`); only forget it. */
  unsubscribe(channel: string, ended?: boolean): void;
  /** Presence, typing and receipts: a WebSocket frame, or the HTTP route. Resolves the reply's fields. */
  command(request: CommandRequest): Promise<Record<string, unknown>>;
  publish(request: PublishRequest): Promise<PublishResult>;
  history(channel: string, options: HistoryOptions): Promise<HistoryResult>;
  /** Give the connection a renewed token. */
  refresh(token: string): Promise<void>;
}
