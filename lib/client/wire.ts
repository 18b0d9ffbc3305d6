/**
 * The two one-way wires of the HTTP stream transport: one SSE response or one
 * long-polling loop carrying every subscribed channel (PROTOCOL §5, §6).
 */
import { DELIVERED_TYPES, type InboundFrame, type TransportContext } from './transport.js';

export interface WireParams {
  channels: readonly string[];
  cursor: string | null;
  token: string;
}

export interface WireSink {
  /** The stream works: the SSE `welcome`, or the first poll answer. */
  welcome(): void;
  /** A frame, with the cursor that includes it (when the wire says). */
  frame(frame: InboundFrame, cursor: string | null): void;
  /** A new cursor, with no frame (an empty poll answer). */
  cursor(cursor: string): void;
  failed(info: WireFailure): void;
  /** A server `error` frame (the stream ends after it). */
  serverError(frame: unknown): void;
  /** The server warned that the token expires soon. */
  tokenExpiring(): void;
}

export interface WireFailure {
  reason: string;
  status?: number;
  /** The protocol close code an SSE `close` frame carried. */
  closeCode?: number;
}

export interface Wire {
  close(): void;
  /** Hand over what already arrived, then stop quietly (a channel left the set; a restart follows). */
  settle(): void;
}

export interface WireKind {
  name: 'sse' | 'poll';
  /** A new token needs a new stream (SSE); a poll loop takes it on its next request. */
  restartOnRefresh: boolean;
  open(ctx: TransportContext, params: WireParams, sink: WireSink): Wire;
}

function asFrame(f: unknown): InboundFrame | null {
  if (typeof f !== 'object' || f === null) return null;
  const { type, channel } = f as { type?: unknown; channel?: unknown };
  return typeof channel === 'string' && typeof type === 'string' && DELIVERED_TYPES.includes(type) ? (f as InboundFrame) : null;
}

function parseFrame(data: unknown): InboundFrame | null {
  if (typeof data !== 'string') return null;
  try {
    return asFrame(JSON.parse(data));
  } catch {
    return null;
  }
}

function channelsQuery(channels: readonly string[]): string {
  return channels.map(encodeURIComponent).join(',');
}

/** The part of an EventSource the SDK drives (browser, `eventsource`). */
interface EventSourceLike {
  addEventListener(type: string, listener: (ev: { data?: unknown; lastEventId?: string }) => void): void;
  onerror: ((ev: { code?: number; message?: string; data?: unknown }) => void) | null;
  close(): void;
}

export const sseWire: WireKind = {
  name: 'sse',
  restartOnRefresh: true,
  open(ctx, params, sink) {
    let closed = false;
    const fail = (info: WireFailure) => {
      if (closed) return;
      closed = true;
      es?.close();
      sink.failed(info);
    };
    let url = `${ctx.baseUrl}/v1/sse?channels=${channelsQuery(params.channels)}&token=${encodeURIComponent(params.token)}`;
    if (params.cursor) url += `&last_event_id=${encodeURIComponent(params.cursor)}`;
    if (ctx.device) url += `&device=${encodeURIComponent(ctx.device)}`;
    let es: EventSourceLike | null = null;
    try {
      if (!ctx.EventSource) throw new Error('no EventSource class available');
      es = new ctx.EventSource(url) as unknown as EventSourceLike;
    } catch (err) {
      setTimeout(() => fail({ reason: String(err) }), 0);
      return { close: () => void (closed = true), settle: () => undefined };
    }
    es.addEventListener('welcome', () => {
      if (!closed) sink.welcome();
    });
    for (const type of DELIVERED_TYPES) {
      es.addEventListener(type, (ev) => {
        const frame = closed ? null : parseFrame(ev.data);
        if (frame) sink.frame(frame, ev.lastEventId || null);
      });
    }
    es.addEventListener('token_expiring', () => {
      if (!closed) sink.tokenExpiring();
    });
    // SSE has no close codes: the server's last frame says why the stream ends.
    es.addEventListener('close', (ev) => {
      let f: { code?: unknown; reason?: unknown } = {};
      try {
        f = JSON.parse(String(ev.data)) as typeof f;
      } catch {
        // Not ours: a plain end of stream.
      }
      const info: WireFailure = { reason: typeof f.reason === 'string' && f.reason ? f.reason : 'the server ended the stream' };
      if (typeof f.code === 'number') info.closeCode = f.code;
      fail(info);
    });
    // The SDK reconnects itself (backoff, token, cursor), never the EventSource.
    es.onerror = (ev) => {
      // `event: error` from the server (a refused subscribe) arrives here too, with data.
      if (typeof ev?.data === 'string') {
        let frame: unknown = null;
        try {
          frame = JSON.parse(ev.data);
        } catch {
          // Not a frame; the stream's end or close frame follows anyway.
        }
        if (!closed) sink.serverError(frame);
        return;
      }
      const info: WireFailure = { reason: `SSE stream failed${ev?.message ? `: ${ev.message}` : ''}` };
      if (typeof ev?.code === 'number') info.status = ev.code;
      fail(info);
    };
    return {
      close() {
        closed = true;
        es?.close();
      },
      // Each SSE frame carries its own cursor: the restart may cut in anywhere.
      settle: () => undefined,
    };
  },
};

/** An empty answer sooner than this after the request is not followed by another at once. */
const MIN_EMPTY_POLL_MS = 1000;

export const pollWire: WireKind = {
  name: 'poll',
  restartOnRefresh: false,
  open(ctx, params, sink) {
    let closed = false;
    /** One answer's frames share one cursor: they are all handed over before the loop stops. */
    let settling = false;
    let abort: AbortController | null = null;
    let cursor = params.cursor;
    const loop = async () => {
      let first = true;
      let unauthorizedInARow = 0;
      while (!closed) {
        // The first poll is held a second at most: it proves the way works, quickly.
        const hold = first ? 1 : ctx.timeouts.pollSeconds;
        let url = `${ctx.baseUrl}/v1/poll?channels=${channelsQuery(params.channels)}&timeout=${hold}`;
        const token = await ctx.tokens.fresh().catch(() => null);
        if (closed) return;
        if (!token) return sink.failed({ reason: 'no token', status: 401 });
        url += `&token=${encodeURIComponent(token)}`;
        if (ctx.device) url += `&device=${encodeURIComponent(ctx.device)}`;
        if (cursor) url += `&cursor=${encodeURIComponent(cursor)}`;
        const started = Date.now();
        abort = new AbortController();
        const timer = setTimeout(() => abort?.abort(), (hold + 10) * 1000);
        let status = 0;
        let body: { frames?: unknown; cursor?: unknown } | null = null;
        try {
          if (!ctx.fetch) throw new Error('no fetch');
          const res = await ctx.fetch(url, { headers: { accept: 'application/json' }, signal: abort.signal });
          status = res.status;
          const text = await res.text();
          if (res.ok) body = JSON.parse(text) as { frames?: unknown; cursor?: unknown };
        } catch (err) {
          if (closed) return;
          if (status === 0) return sink.failed({ reason: `poll failed: ${String(err)}` });
        } finally {
          clearTimeout(timer);
        }
        if (closed) return;
        if (status === 401 && unauthorizedInARow++ === 0 && ctx.tokens.canRefresh) {
          await ctx.tokens.refresh().catch(() => undefined);
          continue;
        }
        if (!body || !Array.isArray(body.frames)) return sink.failed({ reason: `poll answered HTTP ${status}`, status });
        unauthorizedInARow = 0;
        const next = typeof body.cursor === 'string' ? body.cursor : cursor;
        if (first) {
          first = false;
          sink.welcome();
          if (closed) return;
        }
        for (const raw of body.frames) {
          const frame = closed ? null : asFrame(raw);
          if (frame) sink.frame(frame, next);
        }
        if (closed) return;
        if (next && next !== cursor) {
          cursor = next;
          sink.cursor(next);
        }
        if (settling) {
          closed = true;
          return;
        }
        const elapsed = Date.now() - started;
        if (body.frames.length === 0 && hold > 1 && elapsed < MIN_EMPTY_POLL_MS) {
          await new Promise((resolve) => setTimeout(resolve, MIN_EMPTY_POLL_MS - elapsed));
        }
      }
    };
    void loop();
    return {
      close() {
        closed = true;
        abort?.abort();
      },
      settle() {
        settling = true;
      },
    };
  },
};
