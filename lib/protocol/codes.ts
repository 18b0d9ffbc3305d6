/**
 * Error and close codes of the Streamgate protocol (PROTOCOL.md §4, §7).
 * Shared verbatim by the server and the client SDK.
 */

/** The error codes a `reply`/`error` frame or an HTTP error body can carry. */
export const ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'rate_limited',
  'too_large',
  'conflict',
  'unavailable',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** HTTP status for each error code; the pairs are fixed by PROTOCOL §7. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = Object.freeze({
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
});

/** WebSocket close codes (PROTOCOL §4). */
export const CloseCode = Object.freeze({
  GoingAway: 1001,
  MessageTooBig: 1009,
  Unauthorized: 4001,
  Forbidden: 4003,
  HeartbeatTimeout: 4008,
  ConnectionLimit: 4009,
  SlowConsumer: 4010,
  RateLimited: 4029,
});

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}
