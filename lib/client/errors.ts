/**
 * The SDK's one error type. It carries a protocol error code (PROTOCOL §4, §7) or one
 * of the client's own: `disconnected` (the connection went away with the request in
 * flight), `timeout`, `closed` (the client was closed), `unsubscribed` (the server
 * ended a subscription: removed from the room, room deleted).
 */
import { isErrorCode, type ErrorCode } from '../protocol/codes.js';

export type ClientErrorCode = ErrorCode | 'disconnected' | 'timeout' | 'closed' | 'unsubscribed';

export class StreamgateClientError extends Error {
  readonly code: ClientErrorCode;
  /** HTTP status, when the error came from an HTTP answer. */
  readonly status?: number;
  /** WebSocket close code, when the error came from a close. */
  readonly closeCode?: number;
  /** Seconds to wait before retrying (`rate_limited`). */
  readonly retryAfter?: number;

  constructor(code: ClientErrorCode, message: string, details: { status?: number; closeCode?: number; retryAfter?: number } = {}) {
    super(message);
    this.name = 'StreamgateClientError';
    this.code = code;
    if (details.status !== undefined) this.status = details.status;
    if (details.closeCode !== undefined) this.closeCode = details.closeCode;
    if (details.retryAfter !== undefined) this.retryAfter = details.retryAfter;
  }
}

/** The error a server `error` frame or an HTTP error body describes. */
export function fromErrorBody(body: unknown, status?: number): StreamgateClientError {
  const b = body as { code?: unknown; message?: unknown; retry_after?: unknown; error?: { code?: unknown; message?: unknown } } | null;
  const inner = b && typeof b === 'object' && b.error && typeof b.error === 'object' ? b.error : b;
  const code = isErrorCode(inner?.code) ? inner.code : codeForStatus(status);
  const message = typeof inner?.message === 'string' ? inner.message : `request failed${status ? ` with HTTP ${status}` : ''}`;
  const details: { status?: number; retryAfter?: number } = {};
  if (status !== undefined) details.status = status;
  if (typeof b?.retry_after === 'number') details.retryAfter = b.retry_after;
  return new StreamgateClientError(code, message, details);
}

function codeForStatus(status: number | undefined): ErrorCode {
  switch (status) {
    case 400: return 'bad_request';
    case 401: return 'unauthorized';
    case 403: return 'forbidden';
    case 404: return 'not_found';
    case 409: return 'conflict';
    case 413: return 'too_large';
    case 429: return 'rate_limited';
    case 503: return 'unavailable';
    default: return 'internal';
  }
}

/** Errors after which a request may be sent again on the next connection. */
export function isConnectionLoss(err: unknown): boolean {
  return err instanceof StreamgateClientError && (err.code === 'disconnected' || err.code === 'timeout');
}

export function disconnected(message = 'the connection was lost'): StreamgateClientError {
  return new StreamgateClientError('disconnected', message);
}
