/**
 * The Streamgate client SDK, for browsers and Node:
 *
 * ```ts
 * import { connect } from 'streamgate/client';
 * const client = connect({ url: 'https://rt.example.com', getToken: () => fetchToken() });
 * client.subscribe('team:1', (event) => render(event));
 * await client.publish('team:1', 'goal.updated', { goal: 7 });
 * ```
 */
export { Client, connect, type ClientEvents } from './client.js';
export { StreamgateClientError, type ClientErrorCode } from './errors.js';
export type { Subscription } from './subscription.js';
export type { BackoffOptions } from './backoff.js';
export type {
  ConnectOptions,
  ConnectionState,
  EventFrame,
  EventSourceConstructor,
  FetchFunction,
  HistoryOptions,
  HistoryResult,
  JsonValue,
  Priority,
  PublishOptions,
  PublishResult,
  ResetInfo,
  SignalFrame,
  StateChange,
  StorageLike,
  SubscribeOptions,
  TimeoutOptions,
  TransportName,
  WebSocketConstructor,
} from './types.js';
export { CloseCode } from '../protocol/codes.js';
export { compareIds } from '../protocol/event-id.js';
