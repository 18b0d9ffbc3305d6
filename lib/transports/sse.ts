/**
 * `GET /v1/sse` (PROTOCOL §5): our own small writer, because one response carries many
 * channels and ids are cursors compared by the server, never as strings by a library.
 * Every frame is `event: <type>`, for durable events `id: <cursor>`, and `data: <the
 * WebSocket frame>`.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TokenVerifier } from '../auth/tokens.js';
import { rateLimited, StreamgateError } from '../errors.js';
import type { ConnectionRegistry } from '../gateway/connections.js';
import { Cursor } from '../gateway/cursor.js';
import { ZERO_ID } from '../protocol/event-id.js';
import { Session, type SessionContext } from '../gateway/session.js';
import { DEVICES } from '../gateway/event-input.js';
import type { EventMark, FrameKind, Transport } from '../gateway/transport.js';
import { frameText, type OutFrame } from '../gateway/shared-frame.js';
import { parseStreamRequest, refuseRequest, type StreamRequest } from './stream-request.js';

/** Browsers reconnect after this long (the `retry:` line). */
const RETRY_MS = 3000;
/** The opening comment: 2 KiB and more, so buffering proxies and old browsers start the stream. */
const PREAMBLE = ':' + ' '.repeat(2048) + '\n\n';

class SseTransport implements Transport {
  readonly name = 'sse' as const;
  readonly keepalive = 'comment' as const;
  session: Session | null = null;

  constructor(
    private readonly res: ServerResponse,
    readonly cursor: Cursor,
  ) {}

  get pendingBytes(): number {
    return this.res.writableLength;
  }

  write(out: OutFrame, kind: FrameKind, mark?: EventMark): void {
    if (this.res.writableEnded) return;
    const frame = frameText(out);
    if (mark) {
      this.cursor.set(mark.channel, mark.id);
      this.res.write(`event: ${kind}\nid: ${this.cursor.encode()}\ndata: ${frame}\n\n`);
    } else {
      this.res.write(`event: ${kind}\ndata: ${frame}\n\n`);
    }
  }

  /** SSE has no close codes: a last `close` frame says why, then the stream ends. */
  close(code: number, reason: string): void {
    if (this.res.writableEnded) return;
    this.res.end(`event: close\ndata: ${JSON.stringify({ type: 'close', code, reason })}\n\n`);
  }

  watchDrain(): void {
    this.res.once('drain', () => this.session?.drain());
  }

  heartbeat(): void {
    if (!this.res.writableEnded) this.res.write(': keepalive\n\n');
  }
}

export interface StreamDeps {
  ctx: SessionContext;
  verifier: TokenVerifier;
  registry: ConnectionRegistry;
  isClosing(): boolean;
  onOpen(session: Session): void;
}

/** Serve one SSE stream. */
export async function serveSse(deps: StreamDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let parsed: StreamRequest;
  let slots: string[] = [];
  const connectionId = randomUUID();
  // Listen for the client leaving before the first await: one that leaves during
  // admission must not leave a session (and its slots) behind.
  let gone = false;
  let session: Session | null = null;
  res.on('close', () => {
    gone = true;
    if (session) session.ended(1000);
    else deps.registry.release(slots, connectionId);
  });
  try {
    if (deps.isClosing()) throw new StreamgateError('unavailable', 'server is shutting down');
    const url = new URL(req.url ?? '/', 'http://localhost');
    const header = req.headers['last-event-id'];
    const lastEventId = (typeof header === 'string' && header) || url.searchParams.get('last_event_id');
    parsed = parseStreamRequest(req, deps.verifier, lastEventId);
    for (const c of parsed.channels) await deps.ctx.access?.maySubscribe(parsed.principal, c);
    const admission = await deps.registry.admit(parsed.principal.tenant, parsed.principal.userId, parsed.ip, connectionId);
    if (admission.refusal) throw rateLimited(admission.refusal, 5);
    slots = admission.slots;
    if (gone) {
      deps.registry.release(slots, connectionId);
      return;
    }
  } catch (err) {
    refuseRequest(res, err);
    return;
  }
  const { principal, channels } = parsed;
  const cursor = parsed.cursor ?? new Cursor();
  cursor.retain(channels);
  // Channels the cursor does not know start where they are now (or, with no event
  // yet, from their start): so nothing published after the welcome can be missed.
  try {
    const unknown = channels.filter((c) => cursor.get(c) === undefined);
    const positions = await Promise.all(unknown.map((c) => deps.ctx.engine.position(principal.tenant, c)));
    unknown.forEach((c, i) => cursor.set(c, positions[i] ?? ZERO_ID));
  } catch (err) {
    deps.registry.release(slots, connectionId);
    refuseRequest(res, err);
    return;
  }
  if (gone) {
    deps.registry.release(slots, connectionId);
    return;
  }

  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache, no-transform',
    'X-Accel-Buffering': 'no',
    Connection: 'keep-alive',
  });
  res.socket?.setNoDelay(true);
  res.socket?.setKeepAlive(true);
  res.write(PREAMBLE + `retry: ${RETRY_MS}\n\n`);

  const transport = new SseTransport(res, cursor);
  const device = parsed.url.searchParams.get('device');
  session = new Session(deps.ctx, transport, principal, {
    connectionId,
    device: device && (DEVICES as readonly string[]).includes(device) ? device : null,
    ip: parsed.ip,
    userAgent: parsed.userAgent,
  });
  transport.session = session;
  deps.registry.add(session, slots);
  deps.onOpen(session);
  session.welcome();

  const s = session;
  for (const channel of channels) {
    if (s.isClosed) return;
    try {
      await deps.ctx.track(
        s.subscribeChannel(channel, cursor.get(channel), (r) => {
          if (!r.recovered) s.send(JSON.stringify({ type: 'reset', channel }), 'reset');
        }),
      );
    } catch (err) {
      // The stream would silently miss this channel: say why and end it; the browser
      // reconnects with its cursor.
      s.sendError(undefined, err);
      s.close(1011, 'subscribe failed');
      return;
    }
  }
}
