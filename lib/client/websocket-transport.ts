/**
 * The WebSocket wire (PROTOCOL §4): requests with ids and their one answer, the
 * server's `ping` answered, silence longer than `heartbeat_ms + pong` taken as a dead
 * connection, no `welcome` in time taken as a broken transport (a proxy that accepts
 * the upgrade and passes nothing).
 */
import { CloseCode } from '../protocol/codes.js';
import { isEventId } from '../protocol/event-id.js';
import type { EventFrame } from '../protocol/frames.js';
import { StreamgateClientError, disconnected, fromErrorBody } from './errors.js';
import { DELIVERED_TYPES, type ClientTransport, type CloseInfo, type CommandRequest, type InboundFrame, type PublishRequest, type SubscribeAnswer, type TransportContext, type TransportHost } from './transport.js';
import type { HistoryOptions, HistoryResult, PublishResult } from './types.js';

/** The part of a WebSocket the SDK drives (browser, `ws`). */
interface Socket {
  readonly readyState: number;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

const OPEN = 1;

interface Pending {
  resolve(frame: Record<string, unknown>): void;
  reject(err: Error): void;
  /** Armed when the frame is written: no answer in time means a dead connection. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

type Frame = Record<string, unknown>;

const DELIVERED = new Set(DELIVERED_TYPES);

/** `http://h/p` → `ws://h/p/v1/ws?token=…`. */
export function webSocketUrl(baseUrl: string, token: string, device: string | undefined): string {
  let url = `${baseUrl.replace(/^http/, 'ws')}/v1/ws?token=${encodeURIComponent(token)}`;
  if (device) url += `&device=${encodeURIComponent(device)}`;
  return url;
}

export class WebSocketTransport implements ClientTransport {
  readonly name = 'websocket' as const;
  readonly pipelined = true;
  readonly usesCursor = false;
  readonly signalsOnSubscribe = true;
  private socket: Socket | null = null;
  private welcomed = false;
  private done = false;
  private seq = 0;
  private readonly pending = new Map<string, Pending>();
  /** Frames requested before the `welcome`: written when it comes. */
  private readonly waiting: Array<{ id: string; text: string }> = [];
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private silenceTimer: ReturnType<typeof setTimeout> | undefined;
  private silenceMs = 0;
  private maxMessageBytes = Infinity;
  /** The last publish written: the one a 1009 close refers to. */
  private lastPublishId: string | null = null;

  constructor(
    private readonly host: TransportHost,
    private readonly ctx: TransportContext,
  ) {}

  open(): void {
    const Ctor = this.ctx.WebSocket;
    const token = this.ctx.tokens.current;
    if (!Ctor || !token) {
      setTimeout(() => this.finish({ neverWorked: true, reason: Ctor ? 'no token' : 'no WebSocket class available' }), 0);
      return;
    }
    let socket: Socket;
    try {
      socket = new Ctor(webSocketUrl(this.ctx.baseUrl, token, this.ctx.device)) as unknown as Socket;
    } catch (err) {
      setTimeout(() => this.finish({ neverWorked: true, reason: `WebSocket failed: ${String(err)}` }), 0);
      return;
    }
    this.socket = socket;
    socket.onmessage = (ev) => this.receive(ev.data);
    socket.onclose = (ev) => this.finish({ neverWorked: !this.welcomed, closeCode: ev.code, reason: ev.reason || `closed with ${ev.code}` });
    // The close that follows an error says what matters; `ws` throws on an unheard error.
    socket.onerror = () => undefined;
    this.connectTimer = setTimeout(() => this.abort(`no welcome within ${this.ctx.timeouts.connectMs} ms`), this.ctx.timeouts.connectMs);
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.teardown(() => disconnected('the connection was closed'));
    try {
      this.socket?.close(1000, 'client closed');
    } catch {
      // Closing a socket that never opened may throw in some implementations.
    }
  }

  subscribe(channel: string, since: string | null): Promise<SubscribeAnswer> {
    const frame: Frame = { type: 'subscribe', channel };
    if (since !== null) frame.since = since;
    return this.request(frame).then((r) => ({ recovered: r.recovered !== false, position: isEventId(r.position) ? r.position : null }));
  }

  unsubscribe(channel: string, ended = false): void {
    if (!ended) this.request({ type: 'unsubscribe', channel }).catch(() => undefined);
  }

  command(request: CommandRequest): Promise<Frame> {
    return this.request({ ...request });
  }

  publish(request: PublishRequest): Promise<PublishResult> {
    return this.request({ type: 'publish', ...request }, true).then((r) => {
      if (!isEventId(r.event_id)) throw new StreamgateClientError('internal', 'publish: the reply carries no event id');
      return { id: r.event_id, channel: typeof r.channel === 'string' ? r.channel : request.channel, timestamp: String(r.timestamp ?? '') };
    });
  }

  history(channel: string, options: HistoryOptions): Promise<HistoryResult> {
    const frame: Frame = { type: 'history', channel };
    if (options.since !== undefined) frame.since = options.since;
    if (options.limit !== undefined) frame.limit = options.limit;
    return this.request(frame).then((r) => ({ events: Array.isArray(r.events) ? (r.events as EventFrame[]) : [], recovered: r.recovered !== false }));
  }

  refresh(token: string): Promise<void> {
    return this.request({ type: 'refresh', token }).then(() => undefined);
  }

  private request(frame: Frame, publish = false): Promise<Frame> {
    if (this.done) return Promise.reject(disconnected());
    const id = `c${++this.seq}`;
    const text = JSON.stringify({ ...frame, id });
    // Only a frame that may be too big pays for the byte count.
    if (text.length * 3 > this.maxMessageBytes && new TextEncoder().encode(text).length > this.maxMessageBytes) {
      return Promise.reject(new StreamgateClientError('too_large', `the frame is larger than max_message_bytes (${this.maxMessageBytes})`));
    }
    return new Promise<Frame>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, timer: undefined });
      if (publish) this.lastPublishId = id;
      if (this.welcomed) this.writeRequest(id, text);
      else this.waiting.push({ id, text });
    });
  }

  private writeRequest(id: string, text: string): void {
    const p = this.pending.get(id);
    if (!p) return;
    // No answer in time on an ordered connection: it is dead, whatever it says.
    p.timer = setTimeout(() => this.abort(`no reply within ${this.ctx.timeouts.requestMs} ms`), this.ctx.timeouts.requestMs);
    this.write(text);
  }

  private write(text: string): void {
    if (this.socket && this.socket.readyState === OPEN) this.socket.send(text);
  }

  private receive(data: unknown): void {
    if (this.done || typeof data !== 'string') return;
    let f: Frame;
    try {
      const parsed: unknown = JSON.parse(data);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return;
      f = parsed as Frame;
    } catch {
      return;
    }
    this.armSilence();
    const id = typeof f.id === 'string' ? f.id : undefined;
    switch (f.type) {
      case 'welcome':
        return this.welcome(f);
      case 'ping':
        this.write('{"type":"pong"}');
        return;
      case 'reply':
      case 'pong':
        if (id !== undefined) this.settle(id, (p) => p.resolve(f));
        return;
      case 'error':
        if (id !== undefined) this.settle(id, (p) => p.reject(fromErrorBody(f)));
        else this.host.error(this, fromErrorBody(f));
        return;
      case 'token_expiring':
        this.host.tokenExpiring(this);
        return;
      default:
        if (typeof f.type === 'string' && DELIVERED.has(f.type) && typeof f.channel === 'string') this.host.frame(this, f as InboundFrame);
    }
  }

  private welcome(f: Frame): void {
    if (this.welcomed) return;
    this.welcomed = true;
    clearTimeout(this.connectTimer);
    const heartbeatMs = typeof f.heartbeat_ms === 'number' && f.heartbeat_ms > 0 ? f.heartbeat_ms : 0;
    const limits = f.limits as { max_message_bytes?: unknown } | undefined;
    if (typeof limits?.max_message_bytes === 'number') this.maxMessageBytes = limits.max_message_bytes;
    this.silenceMs = heartbeatMs ? heartbeatMs + this.ctx.timeouts.pongMs : 0;
    this.armSilence();
    // Subscribes asked for before the welcome go first, ahead of the publishes the client writes when told.
    for (const { id, text } of this.waiting.splice(0)) this.writeRequest(id, text);
    this.host.opened(this);
    this.host.confirmed(this);
  }

  private settle(id: string, fn: (p: Pending) => void): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    fn(p);
  }

  private armSilence(): void {
    if (!this.silenceMs || this.done) return;
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.abort(`nothing heard for ${this.silenceMs} ms`), this.silenceMs);
  }

  /** Give up on a connection that does not answer; do not wait for its close handshake. */
  private abort(reason: string): void {
    if (this.done) return;
    try {
      this.socket?.close(4000, 'client gave up on the connection');
    } catch {
      // Already closing.
    }
    this.finish({ neverWorked: !this.welcomed, reason });
  }

  private finish(info: CloseInfo): void {
    if (this.done) return;
    this.done = true;
    const tooBig = info.closeCode === CloseCode.MessageTooBig ? this.lastPublishId : null;
    this.teardown((id) =>
      id === tooBig
        ? new StreamgateClientError('too_large', 'the server closed the connection: the frame was too large (1009)', { closeCode: CloseCode.MessageTooBig })
        : disconnected(info.reason),
    );
    this.host.closed(this, info);
  }

  private teardown(errorFor: (id: string) => Error): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.silenceTimer);
    if (this.socket) {
      this.socket.onmessage = null;
      this.socket.onclose = null;
    }
    this.waiting.length = 0;
    const pending = [...this.pending];
    this.pending.clear();
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(errorFor(id));
    }
  }
}
