/**
 * The one error catalogue. Every error Streamgate reports has a stable code from the
 * protocol; its HTTP status comes from the code (PROTOCOL §7), never chosen ad hoc.
 */
import { HTTP_STATUS, type ErrorCode } from './protocol/codes.js';

export class StreamgateError extends Error {
  readonly code: ErrorCode;
  /** Seconds to wait before retrying, for `rate_limited`. */
  readonly retryAfter?: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryAfter?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StreamgateError';
    this.code = code;
    if (options?.retryAfter !== undefined) this.retryAfter = options.retryAfter;
  }

  get status(): number {
    return HTTP_STATUS[this.code];
  }

  toBody(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

export const badRequest = (message: string): StreamgateError => new StreamgateError('bad_request', message);
export const unauthorized = (message: string): StreamgateError => new StreamgateError('unauthorized', message);
export const forbidden = (message: string): StreamgateError => new StreamgateError('forbidden', message);
export const notFound = (message: string): StreamgateError => new StreamgateError('not_found', message);
export const tooLarge = (message: string): StreamgateError => new StreamgateError('too_large', message);
export const conflict = (message: string): StreamgateError => new StreamgateError('conflict', message);
export const unavailable = (message: string, cause?: unknown): StreamgateError =>
  new StreamgateError('unavailable', message, { cause });
export const rateLimited = (message: string, retryAfter: number): StreamgateError =>
  new StreamgateError('rate_limited', message, { retryAfter });

/** Anything thrown that is not a StreamgateError is `internal`; its details stay in the log. */
export function toStreamgateError(err: unknown): StreamgateError {
  if (err instanceof StreamgateError) return err;
  return new StreamgateError('internal', 'internal error', { cause: err });
}
