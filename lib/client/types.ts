/**
 * The SDK's public types. Constructors and storage are described by the little the
 * SDK uses, so the browser's globals, `ws` and `eventsource` in Node all fit without
 * DOM types.
 */
import type { EventFrame, JsonValue, Priority } from '../protocol/frames.js';
import type { BackoffOptions } from './backoff.js';

export type { EventFrame, JsonValue, Priority };

export type TransportName = 'websocket' | 'sse' | 'poll';

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'reconnecting';

/** A WebSocket class: the browser's, or `ws` in Node. */
export type WebSocketConstructor = new (url: string) => { readonly readyState: number; close(code?: number, reason?: string): void };

/** An EventSource class: the browser's, or the `eventsource` package in Node. */
export type EventSourceConstructor = new (url: string) => { readonly readyState: number; close(): void };

/** `sessionStorage`, or anything with the same two methods. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export type FetchFunction = typeof fetch;

export interface TimeoutOptions {
  /** No `welcome` (WebSocket, SSE) or first poll answer within this: the transport is broken. @default 10000 */
  connectMs?: number;
  /** A WebSocket request without its reply within this: the connection is dead. @default 15000 */
  requestMs?: number;
  /** Added to the server's `heartbeat_ms`: silence longer than the sum means dead. @default 5000 */
  pongMs?: number;
  /** Long-poll hold, in seconds (1 to 30). @default 25 */
  pollSeconds?: number;
  /** A connection that lived this long was healthy: the backoff starts over. @default 10000 */
  stableMs?: number;
  /** A transport that failed where a later one worked is not tried first for this long (doubling on each failure, up to 30 min). @default 60000 */
  retryBetterMs?: number;
}

export interface ConnectOptions {
  /** The gateway's base URL (`https://rt.example.com`, or with the path it is mounted under). */
  url: string;
  /** A fixed user token. */
  token?: string;
  /** Called for a token at start, before the current one expires and after 401/4001. */
  getToken?: () => string | Promise<string>;
  /** Transports in order of preference. @default ['websocket', 'sse', 'poll'] */
  transports?: TransportName[];
  /** @default globalThis.WebSocket */
  WebSocket?: WebSocketConstructor;
  /** @default globalThis.EventSource */
  EventSource?: EventSourceConstructor;
  /** @default globalThis.fetch */
  fetch?: FetchFunction;
  backoff?: BackoffOptions;
  timeouts?: TimeoutOptions;
  /** Where failing transports are remembered; `null`: this client alone, in memory. @default sessionStorage when present, else one memory per process */
  storage?: StorageLike | null;
  /** Sent as `device` on WebSocket connections. */
  device?: 'web' | 'mobile' | 'tablet' | 'desktop';
  /** Most publishes held while offline; more are refused with `unavailable`. @default 1000 */
  maxQueuedPublishes?: number;
  /** Away after inactivity (browsers, or any `source`). */
  idle?: IdleOptions;
  /**
   * Acknowledge delivery by itself (delivered receipts): the latest event of each
   * channel received from others, at most one `ack` per channel per second.
   * @default false
   */
  autoAck?: boolean;
}

/** What counts as the user being active: DOM events in a browser, or anything else. */
export interface ActivitySource {
  /** Call `onActivity` whenever the user does something; returns a function that stops it. */
  listen(onActivity: () => void): () => void;
}

export interface IdleOptions {
  /**
   * Set `away` after this long without activity, and `online` again on the next
   * activity; 0 turns it off. @default 300000 in a browser (document and window present), else 0
   */
  awayAfterMs?: number;
  /** Where activity comes from. @default mouse, keyboard, touch, wheel and visibility events of the page */
  source?: ActivitySource;
}

export interface StateChange {
  state: ConnectionState;
  /** The transport in use (`connected`) or being tried (`connecting`). */
  transport: TransportName | null;
  /** `reconnecting`: milliseconds until the next attempt. */
  delay?: number;
  /** `reconnecting`: how many delays were taken since the last healthy connection. */
  attempt?: number;
  /** Why the connection went away, when known. */
  reason?: string;
  /** WebSocket close code, when the connection closed with one. */
  closeCode?: number;
}

/** `reset`: events of the channel were lost to retention; reload its state. */
export interface ResetInfo {
  channel: string;
}

export type PresenceStatus = 'online' | 'away' | 'busy' | 'offline';
export type Device = 'web' | 'mobile' | 'tablet' | 'desktop';

/** A user's presence (the server's `user` object of presence frames and `members`). */
export interface PresenceUser {
  id: string;
  name: string | null;
  status: PresenceStatus;
  device: string | null;
  customStatus: string | null;
  lastSeen: string | null;
}

/** `client.presence(ids)`: one user's presence, channel or not. */
export type UserPresence = Omit<PresenceUser, 'name'>;

/** What `setPresence` changes; at least one of them. */
export interface PresenceUpdate {
  status?: 'online' | 'away' | 'busy';
  /** Free text, or null to clear it. */
  customStatus?: string | null;
  device?: Device | null;
}

/** A presence frame of a subscribed channel: someone joined, left or changed, or (anonymous namespaces) the count. */
export type PresenceEvent =
  | { channel: string; action: 'join' | 'leave' | 'update'; user: PresenceUser }
  | { channel: string; action: 'count'; count: number };

/** A channel's present users (anonymous namespaces: no members, only the count). */
export interface MembersResult {
  members: PresenceUser[];
  count: number;
}

export interface TypingUser {
  id: string;
  name: string | null;
}

/**
 * Someone started or stopped typing. `expired`: no `stop` came within 3 s of their
 * last `start`, so the SDK stopped it.
 */
export interface TypingEvent {
  channel: string;
  user: TypingUser;
  state: 'start' | 'stop';
  expired?: boolean;
}

/** Another user received (`delivered`) or read the channel's events up to `until`. */
export interface ReceiptEvent {
  channel: string;
  user: { id: string };
  kind: 'delivered' | 'read';
  until: string;
}

/** The server ended a subscription (removed from the room, room deleted). */
export interface UnsubscribedInfo {
  channel: string;
  reason: string;
}

export interface UnreadCount {
  channel: string;
  unread: number;
}

/** Presence, typing and receipt signals (PROTOCOL §4), as the server sent them. */
export interface SignalFrame {
  type: 'presence' | 'typing' | 'receipt';
  channel: string;
  [key: string]: unknown;
}

export interface SubscribeOptions {
  /** Deliver the events after this id first (`0-0`: from the start of the retained log). */
  since?: string;
  /** The channel lost events to retention: reload its state from your backend. */
  onReset?: (info: ResetInfo) => void;
  /**
   * The server refused the subscription (`forbidden`, `bad_request`), or ended it
   * (code `unsubscribed`: removed from the room, room deleted); it is removed.
   */
  onError?: (error: Error) => void;
  /** Presence frames of the channel: join, leave, update, count. */
  onPresence?: (event: PresenceEvent) => void;
  /** The channel's member list changed (after the first answer, a reconnect, a join, leave or update). */
  onMembers?: (members: PresenceUser[], count: number) => void;
  /** Typing starts and stops of others on the channel. */
  onTyping?: (event: TypingEvent) => void;
  /** Delivered and read receipts of others on the channel. */
  onReceipt?: (event: ReceiptEvent) => void;
  /** Keep the channel's member list (`subscription.members()`): asks for it after each (re)connection. @default true */
  members?: boolean;
}

export interface PublishOptions {
  priority?: Priority;
  /** Makes a retried publish append once. The SDK sets a random one when absent, so resending after a lost connection is safe. */
  idempotencyKey?: string;
}

export interface PublishResult {
  id: string;
  channel: string;
  timestamp: string;
}

export interface HistoryOptions {
  since?: string;
  /** 1 to 1000. @default 100 */
  limit?: number;
}

export interface HistoryResult {
  events: EventFrame[];
  recovered: boolean;
}
