/**
 * The HTTP API (PROTOCOL §7) as the SDK uses it: publish, history, presence, typing
 * and receipts for clients without a WebSocket, and the routes that have no frame
 * (`GET /v1/presence`, `GET /v1/unread`), with the user token, renewed once on a 401.
 */
import { isEventId } from '../protocol/event-id.js';
import type { EventFrame } from '../protocol/frames.js';
import { StreamgateClientError, disconnected, fromErrorBody } from './errors.js';
import type { CommandRequest, PublishRequest, TransportContext } from './transport.js';
import type { HistoryOptions, HistoryResult, PublishResult } from './types.js';

export function channelPath(channel: string, what = 'events'): string {
  return `/v1/channels/${encodeURIComponent(channel)}/${what}`;
}

interface RequestInit_ {
  method?: string;
  body?: unknown;
  /** Abort after this many ms. */
  timeoutMs?: number;
}

/** One JSON request with the user token; a 401 renews the token (when possible) and retries once. */
export async function requestJson(ctx: TransportContext, path: string, init: RequestInit_ = {}): Promise<unknown> {
  const token = await ctx.tokens.fresh();
  try {
    return await attempt(ctx, path, init, token);
  } catch (err) {
    if (err instanceof StreamgateClientError && err.status === 401 && ctx.tokens.canRefresh) {
      return attempt(ctx, path, init, await ctx.tokens.refresh());
    }
    throw err;
  }
}

async function attempt(ctx: TransportContext, path: string, init: RequestInit_, token: string): Promise<unknown> {
  if (!ctx.fetch) throw new StreamgateClientError('unavailable', 'no fetch: pass options.fetch');
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
  let body: string | undefined;
  if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers['content-type'] = 'application/json';
  }
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), init.timeoutMs ?? ctx.timeouts.requestMs);
  let res: Response;
  let text: string;
  try {
    res = await ctx.fetch(ctx.baseUrl + path, { method: init.method ?? 'GET', headers, body, signal: abort.signal });
    text = await res.text();
  } catch {
    throw disconnected(abort.signal.aborted ? 'the request timed out' : 'the request failed (network)');
  } finally {
    clearTimeout(timer);
  }
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // A proxy's HTML error page: the status says enough.
  }
  if (!res.ok) {
    // 502/504 from a proxy: the way to the gateway failed, not the request.
    if (res.status === 502 || res.status === 504) throw disconnected(`HTTP ${res.status} on the way to the gateway`);
    const err = fromErrorBody(parsed, res.status);
    const retry = Number(res.headers.get('retry-after'));
    if (err.retryAfter === undefined && retry > 0) {
      throw new StreamgateClientError(err.code, err.message, { status: res.status, retryAfter: retry });
    }
    throw err;
  }
  return parsed;
}

export async function publishOverHttp(ctx: TransportContext, request: PublishRequest): Promise<PublishResult> {
  const { channel, ...body } = request;
  const answer = (await requestJson(ctx, channelPath(channel), { method: 'POST', body })) as Partial<PublishResult> | null;
  if (!answer || !isEventId(answer.id)) throw new StreamgateClientError('internal', 'publish: the answer carries no event id');
  return { id: answer.id, channel: answer.channel ?? channel, timestamp: answer.timestamp ?? '' };
}

export async function historyOverHttp(ctx: TransportContext, channel: string, options: HistoryOptions): Promise<HistoryResult> {
  const query: string[] = [];
  if (options.since !== undefined) query.push(`since=${encodeURIComponent(options.since)}`);
  if (options.limit !== undefined) query.push(`limit=${options.limit}`);
  const path = channelPath(channel) + (query.length ? `?${query.join('&')}` : '');
  const answer = (await requestJson(ctx, path)) as { events?: EventFrame[]; recovered?: boolean } | null;
  return { events: Array.isArray(answer?.events) ? answer.events : [], recovered: answer?.recovered !== false };
}

/** A presence, typing or receipt request over HTTP; resolves the answer's fields (none for 204). */
export async function commandOverHttp(ctx: TransportContext, request: CommandRequest): Promise<Record<string, unknown>> {
  let answer: unknown;
  switch (request.type) {
    case 'presence': {
      const { type: _type, ...body } = request;
      answer = await requestJson(ctx, '/v1/presence', { method: 'PUT', body });
      break;
    }
    case 'members':
      answer = await requestJson(ctx, channelPath(request.channel, 'presence'));
      break;
    case 'typing':
      answer = await requestJson(ctx, channelPath(request.channel, 'typing'), { method: 'POST', body: { state: request.state } });
      break;
    case 'ack':
    case 'read':
      answer = await requestJson(ctx, channelPath(request.channel, request.type), { method: 'POST', body: { until: request.until } });
      break;
  }
  return answer && typeof answer === 'object' ? (answer as Record<string, unknown>) : {};
}

/** `GET /v1/presence?users=`: many users' presence in one request. */
export async function usersOverHttp(ctx: TransportContext, ids: readonly string[]): Promise<unknown[]> {
  const answer = (await requestJson(ctx, `/v1/presence?users=${ids.map(encodeURIComponent).join(',')}`)) as { users?: unknown } | null;
  return Array.isArray(answer?.users) ? answer.users : [];
}

/** `GET /v1/unread`. */
export async function unreadOverHttp(ctx: TransportContext): Promise<Array<{ channel: string; unread: number }>> {
  const answer = (await requestJson(ctx, '/v1/unread')) as { channels?: unknown } | null;
  if (!Array.isArray(answer?.channels)) return [];
  return answer.channels
    .filter((c): c is { channel: string; unread: number } => !!c && typeof c === 'object' && typeof c.channel === 'string' && typeof c.unread === 'number')
    .map((c) => ({ channel: c.channel, unread: c.unread }));
}
