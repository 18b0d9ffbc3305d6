/**
 * `GET /v1/ws` (PROTOCOL §4): authenticate and admit the upgrade (refusals are HTTP
 * answers with a JSON body, before the upgrade), then a thin adapter from a `ws`
 * socket to a Session.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { UserPrincipal } from '../auth/principal.js';
import type { TokenVerifier } from '../auth/tokens.js';
import { StreamgateError, badRequest, forbidden, toStreamgateError, unauthorized } from '../errors.js';
import { CloseCode } from '../protocol/codes.js';
import type { ConnectionRegistry } from '../gateway/connections.js';
import { Session, type SessionContext } from '../gateway/session.js';
import type { Transport } from '../gateway/transport.js';
import type { OutFrame } from '../gateway/shared-frame.js';
import { DEVICES } from '../gateway/event-input.js';


/**
 * ws keeps the TCP socket here (we need its 'drain' to resume a queued session) and
 * its frame writer: with nothing queued in the writer, a prebuilt frame may go
 * straight to the socket without overtaking anything.
 */
type SocketOf = { _socket?: Duplex & { writableLength?: number }; _sender?: { _state?: unknown; _queue?: unknown[] } };

class WebSocketTransport implements Transport {
  readonly name = 'websocket' as const;
  readonly keepalive = 'ping' as const;
  session: Session | null = null;

  constructor(private readonly ws: WebSocket) {}

  get pendingBytes(): number {
    return this.ws.bufferedAmount;
  }

  write(frame: OutFrame): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    if (typeof frame === 'string') return this.ws.send(frame);
    // A shared frame is the same bytes for every socket (perMessageDeflate is off):
    // one write of the prebuilt frame, unless ws's writer holds something back.
    const inner = this.ws as unknown as SocketOf;
    const sender = inner._sender;
    if (inner._socket && sender?._state === 0 && sender._queue?.length === 0) inner._socket.write(frame.wsFrame);
    else this.ws.send(frame.bytes, TEXT_FRAME);
  }

  close(code: number, reason: string): void {
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, reason.slice(0, 120));
  }

  watchDrain(): void {
    const socket = (this.ws as unknown as SocketOf)._socket;
    if (!socket) return;
    socket.once('drain', () => this.session?.drain());
  }

  heartbeat(): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.ping();
  }
}

export interface WebSocketDeps {
  ctx: SessionContext;
  verifier: TokenVerifier;
  registry: ConnectionRegistry;
  /** True once shutdown began: new connections are refused with 503. */
  isClosing(): boolean;
  /** A session was admitted (metrics, audit). */
  onOpen(session: Session): void;
}

function clientIp(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'unknown';
}

function refuse(socket: Duplex, err: StreamgateError): void {
  const body = JSON.stringify(err.toBody());
  const headers = [
    `HTTP/1.1 ${err.status} ${err.code}`,
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
  ];
  if (err.retryAfter !== undefined) headers.push(`Retry-After: ${Math.max(1, Math.ceil(err.retryAfter))}`);
  socket.end(headers.join('\r\n') + '\r\n\r\n' + body);
}

function tokenOf(req: IncomingMessage, url: URL): string | null {
  const q = url.searchParams.get('token');
  if (q) return q;
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(.+)$/i.exec(h) : null;
  return m ? m[1]!.trim() : null;
}

const TEXT_FRAME = { binary: false } as const;

function ignoreSocketError(): void {
  // the 'close' that follows ends the session
}

/*
 * Per-socket listeners are shared functions that find their session on the socket, so
 * an idle connection holds no closures (and through them no upgrade request).
 */
function onClose(this: WebSocket & { session?: Session }, code: number): void {
  this.session?.ended(code);
}

function onWsError(): void {
  // 'close' follows; a frame over maxPayload closes with 1009 by itself.
}

function onMessage(this: WebSocket & { session?: Session }, data: RawData, isBinary: boolean): void {
  const session = this.session;
  if (!session) return;
  if (isBinary) {
    session.receiveBinary();
    return;
  }
  session.receive(data.toString());
}

export class WebSocketGateway {
  private readonly wss: WebSocketServer;

  constructor(private readonly deps: WebSocketDeps) {
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: deps.ctx.config.limits.max_message_bytes,
    });
  }

  /** Handle an upgrade whose path is the WebSocket route. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node drops its own error handler once it emits 'upgrade', and ws adds one only in
    // handleUpgrade: a client that resets meanwhile must not crash the process.
    socket.on('error', ignoreSocketError);
    let principal: UserPrincipal;
    let device: string | null = null;
    const ip = clientIp(req);
    try {
      if (this.deps.isClosing()) throw new StreamgateError('unavailable', 'server is shutting down');
      const url = new URL(req.url ?? '/', 'http://localhost');
      const token = tokenOf(req, url);
      if (!token) throw unauthorized('missing token: ?token=<jwt> or Authorization: Bearer <jwt>');
      if (token.startsWith('sgk_')) throw forbidden('server keys cannot open client connections; use a user token');
      principal = this.deps.verifier.verify(token);
      const d = url.searchParams.get('device');
      if (d !== null) {
        if (!(DEVICES as readonly string[]).includes(d)) throw badRequest(`device: one of ${DEVICES.join(', ')}`);
        device = d;
      }
    } catch (err) {
      refuse(socket, toStreamgateError(err));
      return;
    }
    const connectionId = randomUUID();
    this.deps.registry.admit(principal.tenant, principal.userId, ip, connectionId).then(
      (admission) => this.upgrade(req, socket, head, { principal, device, ip, connectionId, ...admission }),
      (err: unknown) => refuse(socket, toStreamgateError(err)),
    );
  }

  private upgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    a: { principal: UserPrincipal; device: string | null; ip: string; connectionId: string; refusal: string | null; slots: string[] },
  ): void {
    if (socket.destroyed || this.deps.isClosing()) {
      this.deps.registry.release(a.slots, a.connectionId);
      socket.destroy();
      return;
    }
    // A socket that dies during the handshake never reaches the callback: give its slots back.
    const early = () => this.deps.registry.release(a.slots, a.connectionId);
    socket.once('close', early);
    const userAgent = String(req.headers['user-agent'] ?? '').slice(0, 512);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      socket.off('close', early);
      this.open(ws, a, userAgent);
    });
  }

  /** The upgraded socket: nothing of the upgrade request is kept past this point. */
  private open(ws: WebSocket, a: { principal: UserPrincipal; device: string | null; ip: string; connectionId: string; refusal: string | null; slots: string[] }, userAgent: string): void {
    // Over a connection limit: upgraded, then closed 4009 before any welcome, because a
    // browser can read a close code but never the status of a refused upgrade.
    if (a.refusal) {
      ws.on('error', onWsError);
      ws.close(CloseCode.ConnectionLimit, a.refusal);
      return;
    }
    const transport = new WebSocketTransport(ws);
    const session = new Session(this.deps.ctx, transport, a.principal, {
      connectionId: a.connectionId,
      device: a.device,
      ip: a.ip,
      userAgent,
    });
    transport.session = session;
    (ws as WebSocket & { session?: Session }).session = session;
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.on('error', onWsError);
    this.deps.registry.add(session, a.slots);
    this.deps.onOpen(session);
    session.welcome();
  }

  close(): void {
    this.wss.close();
  }
}
