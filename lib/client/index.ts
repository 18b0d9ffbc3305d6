/**
 * The Streamgate client SDK, for browsers and Node:
 *
 * ```ts
 * import { connect } from 'streamgate/client';
 * const client = connect({ url: 'https://rt.example.com', getToken: () => fetchToken() });
 * client.subscribe('team:1', (event) => render(event));
 * await client.publish('team:1', 'goal.updated', { goal: 7 });
 * const chat = client.subscribe('dm:ann:bo', render, { onMembers: showWhoIsHere, onTyping: showTyping });
 * await client.markRead('dm:ann:bo');
 * ```
 */
export { Client, connect, type ClientEvents } from './client.js';
export { StreamgateClientError, type ClientErrorCode } from './errors.js';
export type { Subscription } from './subscription.js';
export type { BackoffOptions } from './backoff.js';
export type {
  ActivitySource,
  ConnectOptions,
  ConnectionState,
  Device,
  EventFrame,
  EventSourceConstructor,
  FetchFunction,
  HistoryOptions,
  HistoryResult,
  IdleOptions,
  JsonValue,
  MembersResult,
  PresenceEvent,
  PresenceStatus,
  PresenceUpdate,
  PresenceUser,
  Priority,
  PublishOptions,
  PublishResult,
  ReceiptEvent,
  ResetInfo,
  SignalFrame,
  StateChange,
  StorageLike,
  SubscribeOptions,
  TimeoutOptions,
  TransportName,
  TypingEvent,
  TypingUser,
  UnreadCount,
  UnsubscribedInfo,
  UserPresence,
  WebSocketConstructor,
} from './types.js';
export { CloseCode } from '../protocol/codes.js';
export { compareIds } from '../protocol/event-id.js';
