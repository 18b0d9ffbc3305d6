/**
 * What SSE and long-polling requests share: the user token (query or header), the
 * channel list (each allowed, else 403 before anything is streamed) and the cursor.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { UserPrincipal } from '../auth/principal.js';
import { assertMaySubscribe } from '../auth/rules.js';
import type { TokenVerifier } from '../auth/tokens.js';
import { StreamgateError, badRequest, forbidden, toStreamgateError, unauthorized } from '../errors.js';
import { Cursor, MAX_CURSOR_CHANNELS } from '../gateway/cursor.js';
import { assertChannel } from '../gateway/event-input.js';

export interface StreamRequest {
  principal: UserPrincipal;
  channels: string[];
  cursor: Cursor | null;
  ip: string;
  userAgent: string;
  url: URL;
}

export function tokenOf(req: IncomingMessage, url: URL): string | null {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(.+)$/i.exec(h) : null;
  if (m) return m[1]!.trim();
  return url.searchParams.get('token');
}

/** Authenticate and validate a stream request; throws the error to answer with. */
export function parseStreamRequest(req: IncomingMessage, verifier: TokenVerifier, cursorText: string | null | undefined): StreamRequest {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const token = tokenOf(req, url);
  if (!token) throw unauthorized('missing token: ?token=<jwt> or Authorization: Bearer <jwt>');
  if (token.startsWith('sgk_')) throw forbidden('server keys cannot open client streams; use a user token');
  const principal = verifier.verify(token);
  const raw = url.searchParams.get('channels');
  if (!raw) throw badRequest('channels: a comma-separated list of 1 to 100 channels');
  const channels = [...new Set(raw.split(',').map((c) => c.trim()).filter(Boolean))];
  if (channels.length === 0 || channels.length > MAX_CURSOR_CHANNELS) {
    throw badRequest(`channels: 1 to ${MAX_CURSOR_CHANNELS} channels`);
  }
  for (const c of channels) assertChannel(c);
  for (const c of channels) assertMaySubscribe(principal, c);
  const cursor = cursorText ? Cursor.decode(cursorText) : null;
  return {
    principal,
    channels,
    cursor,
    ip: req.socket.remoteAddress ?? 'unknown',
    userAgent: String(req.headers['user-agent'] ?? '').slice(0, 512),
    url,
  };
}

/** Answer a refused stream request with the JSON error shape. */
export function refuseRequest(res: ServerResponse, err: unknown): void {
  const e = toStreamgateError(err);
  if (res.headersSent) {
    res.end();
    return;
  }
  const headers: Record<string, string> = { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' };
  if (e.retryAfter !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(e.retryAfter)));
  res.writeHead(e.status, headers);
  res.end(JSON.stringify(e.toBody()));
}

export { StreamgateError };
