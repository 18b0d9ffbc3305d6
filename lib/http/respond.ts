/**
 * JSON answers and the error shape (PROTOCOL §7) on a plain `ServerResponse`, so the
 * Express routes and the fast lane write the same errors (Express adds an ETag to
 * the successes it sends with res.json; the lane does not).
 */
import type { ServerResponse } from 'node:http';
import { StreamgateError, badRequest, toStreamgateError } from '../errors.js';

export function writeJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/** Map body-parser's errors (size, syntax, encoding: all carry a 4xx status) onto the catalogue. */
function bodyParserError(err: unknown): StreamgateError | null {
  if (err instanceof StreamgateError) return null;
  const e = err as { type?: unknown; status?: unknown; message?: unknown } | null;
  if (e?.type === 'entity.too.large' || e?.status === 413) return new StreamgateError('too_large', 'request body is too large');
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
    return badRequest(`malformed request body: ${String(e.message)}`);
  }
  return null;
}

/** The error as `{"error": {code, message}}` with its status (and Retry-After when it has one). */
export function writeError(res: ServerResponse, err: unknown): void {
  const e = bodyParserError(err) ?? toStreamgateError(err);
  if (e.code === 'internal') process.emitWarning(`streamgate internal error: ${String((e.cause as Error)?.stack ?? e.cause)}`);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (e.retryAfter !== undefined) res.setHeader('Retry-After', String(Math.max(1, Math.ceil(e.retryAfter))));
  writeJson(res, e.status, e.toBody());
}
