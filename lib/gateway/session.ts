/**
 * One client connection, whatever its wire (ARCHITECTURE §3): who it is, its
 * subscriptions and their replay/live seam, its token expiry, its frame budget and its
 * bounded outbound queue. Frames from the client are handled one at a time, in order.
 */
import type { UserPrincipal } from '../auth/principal.js';
import { assertMaySubscribe, maySubscribe } from '../auth/rules.js';
import type { TokenVerifier } from '../auth/tokens.js';
import type { Config } from '../config/config.js';
import type { Engine, LogEvent, Signal } from '../engine/engine.js';
import { StreamgateError, badRequest, forbidden, toStreamgateError } from '../errors.js';
import { CloseCode } from '../protocol/codes.js';
import { compareIds, isEventId } from '../protocol/event-id.js';
import { encodeEventFrame } from '../protocol/frames.js';
import type { Hub, Subscriber } from './hub.js';
import type { Presence } from './presence.js';
import type { TypingReceipts } from './typing-receipts.js';
import { parsePresencePatch } from './event-input.js';
import type { Metrics } from './metrics.js';
import { OutboundQueue, type Lane, type QueuedFrame } from './outbound-queue.js';
import { appendEvents, preparePublish, type PublishDeps } from './publish.js';
import { assertChannel, parseHistoryQuery } from './event-input.js';
import { TokenBucket } from './rate-limiter.js';
import type { FrameKind, Transport } from './transport.js';
import { SharedFrame, type OutFrame } from './shared-frame.js';

/** What every session of a gateway shares. */
export interface SessionContext {
  config: Config;
  engine: Engine;
  hub: Hub;
  metrics: Metrics;
  verifier: TokenVerifier;
  publish: PublishDeps;
  presence: Presence;
  collab: TypingReceipts;
  /** Extra subscribe/publish rules that need a lookup (room membership). */
  access?: ChannelAccess;
  /** Counts an operation that must finish before shutdown completes. */
  track<T>(work: Promise<T>): Promise<T>;
  /** Called once when the session has ended. */
  onClosed(session: Session, code: number): void;
}

export interface SessionInfo {
  connectionId: string;
  device: string | null;
  ip: string;
  userAgent: string;
  /** How long presence lasts without renewal (long-polling: until the next poll is late). */
  presenceTtlMs?: number;
}

/** Rules that need a lookup, such as room membership. Each resolves, or throws `forbidden`. */
export interface ChannelAccess {
  maySubscribe(principal: UserPrincipal, channel: string): Promise<void>;
  mayPublish(principal: UserPrincipal, channel: string): Promise<void>;
}

export interface SubscribeResult {
  recovered: boolean;
  position: string | null;
}

/** Sent this long before the token expires, once (`token_expiring`). */
export const EXPIRY_WARNING_MS = 60_000;
/** Largest history page read while replaying. */
const REPLAY_PAGE = 1000;
/** Keep writing straight to the wire while it holds less than this. */
const WIRE_HIGH_WATER = 256 * 1024;

/** One channel subscription: the seam between the replay and the live feed. */
class Subscription implements Subscriber {
  /** Live frames that arrived while the replay was being read. */
  buffer: Array<{ frame: SharedFrame; event: LogEvent }> | null = [];
  private bufferedBytes = 0;
  /** Live events with ids up to this one were replayed (or predate the subscription). */
  skipUntil: string | null = null;

  constructor(
    readonly session: Session,
    readonly channel: string,
  ) {}

  deliver(frame: SharedFrame, event: LogEvent): void {
    if (this.buffer) {
      // Held back while a long replay waits for a slow wire: bounded like the queue.
      this.bufferedBytes += frame.text.length;
      if (this.bufferedBytes > this.session.maxQueuedBytes) {
        this.session.close(CloseCode.SlowConsumer, 'slow consumer: too much undelivered output');
        return;
      }
      this.buffer.push({ frame, event });
      return;
    }
    if (this.skipUntil !== null && compareIds(event.id, this.skipUntil) <= 0) return;
    this.session.enqueueEvent(frame, event);
    this.checkRemoval(event);
  }

  /** A member removed from a room loses the stream at once (on every node). */
  checkRemoval(event: LogEvent): void {
    if ((event.event === 'member.removed' || event.event === 'room.deleted') && this.channel.startsWith('room:')) {
      this.session.removedFromRoom(this.channel, event.event, event.dataJson);
    }
  }

  signal(signal: Signal, frame: SharedFrame): void {
    if (signal.exceptUser !== undefined && signal.exceptUser === this.session.principal.userId) return;
    this.session.send(frame, signal.kind);
  }
}

type Frame = Record<string, unknown>;

function str(frame: Frame, key: string, required: true): string;
function str(frame: Frame, key: string, required: false): string | undefined;
function str(frame: Frame, key: string, required: boolean): string | undefined {
  const v = frame[key];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw badRequest(`${key}: ${required ? 'required ' : ''}string`);
  return v;
}

function channelOf(frame: Frame): string {
  const channel = frame.channel;
  assertChannel(channel);
  return channel;
}

function replyJson(id: string, fields: string): string {
  return `{"type":"reply","id":${JSON.stringify(id)},"ok":true${fields ? ',' + fields : ''}}`;
}

export class Session {
  readonly openedAt = Date.now();
  principal: UserPrincipal;
  private readonly subscriptions = new Map<string, Subscription>();
  /** Created on first congestion: most connections never need one (memory per idle connection). */
  private queue: OutboundQueue | null = null;
  private readonly bucket: TokenBucket;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  private drainWatched = false;
  private reading = true;
  private writableWaiters: Array<() => void> | null = null;
  private warnedExpiry = false;
  /** Heartbeat state, driven by the gateway's one sweeper. */
  nextPingAt: number;
  pongDeadline = 0;

  constructor(
    private readonly ctx: SessionContext,
    readonly transport: Transport,
    principal: UserPrincipal,
    readonly info: SessionInfo,
  ) {
    this.principal = principal;
    const { limits } = ctx.config;
    this.bucket = new TokenBucket(limits.messages_per_second, limits.messages_per_second);
    this.nextPingAt = this.openedAt + (transport.keepalive === 'comment' ? limits.sse_comment_ms : limits.heartbeat_ms);
  }

  get id(): string {
    return this.info.connectionId;
  }

  get tenant(): string {
    return this.principal.tenant;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The first frame of every connection. */
  welcome(): void {
    const { limits } = this.ctx.config;
    const user: { id: string; name?: string } = { id: this.principal.userId };
    if (this.principal.name !== undefined) user.name = this.principal.name;
    this.send(
      JSON.stringify({
        type: 'welcome',
        connection_id: this.id,
        server_time: new Date().toISOString(),
        heartbeat_ms: limits.heartbeat_ms,
        user,
        limits: { max_message_bytes: limits.max_message_bytes, messages_per_second: limits.messages_per_second },
      }),
      'welcome',
    );
  }

  /** A text frame from the client. */
  receive(text: string): void {
    if (this.closed || !this.reading) return;
    const now = Date.now();
    // A heartbeat answer is never refused: a client over its frame budget must still be
    // able to prove it is alive (else a 4008 would hide the 4029).
    if (text.length <= 64 && text.includes('"pong"') && this.isPong(text)) {
      this.pongDeadline = 0;
      return;
    }
    if (!this.charge(now, () => this.peekId(text))) return;
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      this.sendError(undefined, badRequest('frame is not JSON'));
      return;
    }
    if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
      this.sendError(undefined, badRequest('frame is not a JSON object'));
      return;
    }
    const f = frame as Frame;
    if (f.id !== undefined && typeof f.id !== 'string') {
      this.sendError(undefined, badRequest('id: must be a string'));
      return;
    }
    this.chain = this.chain.then(() => this.handle(f)).catch((err: unknown) => this.sendError(f.id as string | undefined, err));
  }

  /** A binary frame: refused, but charged to the frame budget like any other. */
  receiveBinary(): void {
    if (this.closed || !this.charge(Date.now(), () => undefined)) return;
    this.sendError(undefined, badRequest('binary frames are not supported; send JSON text'));
  }

  /** Take a token for one frame; false (after an error or a 4029 close) when over the budget. */
  private charge(now: number, idOf: () => string | undefined): boolean {
    if (this.bucket.take(now)) return true;
    if (this.bucket.overFor(now) >= 5000) {
      this.close(CloseCode.RateLimited, 'rate limit exceeded for too long');
      return false;
    }
    this.sendError(idOf(), new StreamgateError('rate_limited', `more than ${this.ctx.config.limits.messages_per_second} frames per second`, { retryAfter: this.bucket.retryAfter() }));
    return false;
  }

  private isPong(text: string): boolean {
    try {
      const f = JSON.parse(text) as { type?: unknown };
      return typeof f === 'object' && f !== null && f.type === 'pong';
    } catch {
      return false;
    }
  }

  private peekId(text: string): string | undefined {
    const m = /"id"\s*:\s*"((?:[^"\\]|\\.){0,200})"/.exec(text);
    if (!m) return undefined;
    try {
      return JSON.parse(`"${m[1]}"`) as string;
    } catch {
      return undefined;
    }
  }

  private async handle(f: Frame): Promise<void> {
    if (this.closed) return;
    const id = f.id as string | undefined;
    switch (f.type) {
      case 'ping':
        this.send(id === undefined ? '{"type":"pong"}' : `{"type":"pong","id":${JSON.stringify(id)}}`, 'pong');
        return;
      case 'pong':
        this.pongDeadline = 0;
        return;
      case 'subscribe':
        return this.ctx.track(this.subscribe(id, f));
      case 'unsubscribe':
        return this.unsubscribe(id, f);
      case 'publish':
        return this.ctx.track(this.publish(id, f));
      case 'history':
        return this.ctx.track(this.history(id, f));
      case 'refresh':
        return this.refresh(id, f);
      case 'presence':
        await this.ctx.presence.setStatus(this.principal, parsePresencePatch(f));
        return this.reply(id);
      case 'members': {
        const channel = channelOf(f);
        await this.mayRead(channel);
        if (!this.ctx.presence.enabled(channel)) throw forbidden(`presence is off for ${channel}`);
        const m = await this.ctx.presence.members(this.tenant, channel);
        return this.reply(id, `"channel":${JSON.stringify(channel)},"members":${JSON.stringify(m.members)},"count":${m.count}`);
      }
      case 'typing':
        await this.ctx.collab.typingSignal(this.principal, channelOf(f), f.state);
        return this.reply(id);
      case 'ack':
      case 'read':
        await this.ctx.collab.receipt(this.principal, channelOf(f), f.type === 'ack' ? 'delivered' : 'read', f.until);
        return this.reply(id);
      default:
        throw badRequest(typeof f.type === 'string' ? `unknown frame type: ${f.type.slice(0, 64)}` : 'type: required string');
    }
  }

  private async mayRead(channel: string): Promise<void> {
    assertMaySubscribe(this.principal, channel);
    await this.ctx.access?.maySubscribe(this.principal, channel);
  }

  /** A `member.removed` event for this user ended their room subscription. */
  removedFromRoom(channel: string, event: string, dataJson: string, why?: string): void {
    if (event === 'member.removed') {
      let userId: unknown;
      try {
        userId = (JSON.parse(dataJson) as { user_id?: unknown }).user_id;
      } catch {
        return;
      }
      if (userId !== this.principal.userId) return;
    }
    if (!this.dropSubscription(channel)) return;
    void this.ctx.presence.leave(this, channel).catch(() => undefined);
    const reason = why ?? (event === 'room.deleted' ? 'the room was deleted' : 'removed from the room');
    this.send(JSON.stringify({ type: 'unsubscribed', channel, reason }), 'unsubscribed');
  }

  private reply(id: string | undefined, fields = ''): void {
    if (id !== undefined) this.send(replyJson(id, fields), 'reply');
  }

  private async subscribe(id: string | undefined, f: Frame): Promise<void> {
    const channel = channelOf(f);
    const since = str(f, 'since', false);
    if (since !== undefined && !isEventId(since)) throw badRequest('since: an event id (<ms>-<seq>)');
    assertMaySubscribe(this.principal, channel);
    await this.ctx.access?.maySubscribe(this.principal, channel);
    await this.subscribeChannel(channel, since, (r) =>
      this.reply(id, `"channel":${JSON.stringify(channel)},"recovered":${r.recovered},"position":${JSON.stringify(r.position)}`),
    );
  }

  /**
   * Subscribe to an allowed channel: register live delivery (held back), read the replay
   * after `since`, call `announce` (the reply, or a `reset` frame), send the replay, then
   * release the held live events, skipping those already replayed. Subscribing again
   * starts over.
   */
  async subscribeChannel(channel: string, since: string | undefined, announce: (r: SubscribeResult) => void): Promise<SubscribeResult> {
    this.dropSubscription(channel);
    const sub = new Subscription(this, channel);
    this.subscriptions.set(channel, sub);
    this.ctx.hub.subscribe(this.tenant, channel, sub);
    let result: SubscribeResult;
    try {
      result = await this.replayAndGoLive(sub, since, announce);
    } catch (err) {
      // A failed subscribe leaves nothing behind (no buffer filling with live events).
      if (this.subscriptions.get(channel) === sub) this.dropSubscription(channel);
      throw err;
    }
    if (this.subscriptions.get(channel) === sub && !this.closed) {
      await this.ctx.presence.join(this, channel, this.info.presenceTtlMs).catch(() => undefined);
    }
    return result;
  }

  private async replayAndGoLive(sub: Subscription, since: string | undefined, announce: (r: SubscribeResult) => void): Promise<SubscribeResult> {
    const { engine } = this.ctx;
    const channel = sub.channel;
    let recovered = true;
    let position: string | null;
    let replay: LogEvent[] = [];
    let more = false;
    if (since === undefined) {
      position = await engine.position(this.tenant, channel);
    } else {
      const page = await engine.history(this.tenant, channel, { since, limit: REPLAY_PAGE });
      ({ recovered, position } = page);
      replay = page.events;
      more = page.events.length === REPLAY_PAGE;
    }
    const result = { recovered, position };
    if (this.subscriptions.get(channel) !== sub) return result;
    announce(result);
    let last = since === undefined ? position : since;
    try {
      for (;;) {
        // A removal inside the replay is history (the member may be back since): the
        // access check after going live decides.
        for (const e of replay) this.enqueueEvent(encodeEventFrame(e), e);
        if (replay.length) last = replay[replay.length - 1]!.id;
        if (!more || !last) break;
        // A long replay waits for the wire between pages instead of filling the queue.
        await this.writable();
        if (this.closed || this.subscriptions.get(channel) !== sub) return result;
        const page = await engine.history(this.tenant, channel, { since: last, limit: REPLAY_PAGE });
        if (this.subscriptions.get(channel) !== sub) return result;
        replay = page.events;
        more = page.events.length === REPLAY_PAGE;
      }
    } catch (err) {
      // The subscription was already answered: a second answer would be wrong, and a
      // silent gap worse. End the connection; the client resumes from its last ids.
      this.close(1011, 'replay failed');
      return result;
    }
    if (this.subscriptions.get(channel) !== sub) return result;
    const buffered = sub.buffer ?? [];
    sub.buffer = null;
    sub.skipUntil = last;
    for (const { frame, event } of buffered) sub.deliver(frame, event);
    // Membership may have changed while the replay was read (room channels).
    if (this.ctx.access && this.subscriptions.get(channel) === sub) {
      await this.ctx.access.maySubscribe(this.principal, channel).catch(() => this.removedFromRoom(channel, 'room.deleted', '{}', 'no longer a member'));
    }
    return result;
  }

  private dropSubscription(channel: string): boolean {
    const sub = this.subscriptions.get(channel);
    if (!sub) return false;
    this.subscriptions.delete(channel);
    this.ctx.hub.unsubscribe(this.tenant, channel, sub);
    return true;
  }

  private unsubscribe(id: string | undefined, f: Frame): void {
    const channel = channelOf(f);
    if (this.dropSubscription(channel)) void this.ctx.presence.leave(this, channel).catch(() => undefined);
    this.reply(id, `"channel":${JSON.stringify(channel)}`);
  }

  private async publish(id: string | undefined, f: Frame): Promise<void> {
    const body: Record<string, unknown> = {};
    for (const k of ['event', 'data', 'priority', 'idempotency_key', 'publisher']) if (k in f) body[k] = f[k];
    const request = preparePublish(this.ctx.config, this.principal, f.channel, body);
    await this.ctx.access?.mayPublish(this.principal, request.channel);
    const [answer] = await appendEvents(this.ctx.publish, this.principal, [request], 'websocket');
    this.reply(id, `"event_id":${JSON.stringify(answer!.id)},"channel":${JSON.stringify(answer!.channel)},"timestamp":${JSON.stringify(answer!.timestamp)}`);
  }

  private async history(id: string | undefined, f: Frame): Promise<void> {
    const channel = channelOf(f);
    if (typeof f.limit === 'string') throw badRequest('limit: an integer from 1 to 1000');
    const query = parseHistoryQuery(f.since, f.limit);
    await this.mayRead(channel);
    const r = await this.ctx.engine.history(this.tenant, channel, query);
    this.reply(id, `"channel":${JSON.stringify(channel)},"events":[${r.events.map(encodeEventFrame).join(',')}],"recovered":${r.recovered}`);
  }

  private refresh(id: string | undefined, f: Frame): void {
    const token = str(f, 'token', true);
    const next = this.ctx.verifier.verify(token);
    if (next.userId !== this.principal.userId || next.tenant !== this.principal.tenant) {
      throw forbidden('refresh: the new token is for another user or tenant');
    }
    this.principal = next;
    this.warnedExpiry = false;
    this.reply(id, `"expires_at":${JSON.stringify(new Date(next.expiresAt).toISOString())}`);
    // The new claims may allow less: subscriptions they no longer cover end now.
    for (const channel of this.channels()) {
      if (maySubscribe(next, channel) || !this.dropSubscription(channel)) continue;
      void this.ctx.presence.leave(this, channel).catch(() => undefined);
      this.send(JSON.stringify({ type: 'unsubscribed', channel, reason: 'the new token does not allow this channel' }), 'unsubscribed');
    }
  }

  /** Called by the gateway's sweeper about once a second: heartbeat and token expiry. */
  tick(now: number): void {
    if (this.closed) return;
    const { limits } = this.ctx.config;
    if (now >= this.principal.expiresAt) {
      this.close(CloseCode.Unauthorized, 'token expired');
      return;
    }
    if (!this.warnedExpiry && this.principal.expiresAt - now <= EXPIRY_WARNING_MS) {
      this.warnedExpiry = true;
      this.send(`{"type":"token_expiring","expires_at":${JSON.stringify(new Date(this.principal.expiresAt).toISOString())}}`, 'token_expiring');
    }
    const keepalive = this.transport.keepalive;
    if (keepalive === 'ping') {
      if (this.pongDeadline && now > this.pongDeadline) {
        this.close(CloseCode.HeartbeatTimeout, 'no pong in time');
        return;
      }
      if (now >= this.nextPingAt) {
        this.nextPingAt = now + limits.heartbeat_ms;
        if (!this.pongDeadline) this.pongDeadline = now + limits.pong_timeout_ms;
        this.send('{"type":"ping"}', 'ping');
        this.transport.heartbeat?.();
      }
    } else if (keepalive === 'comment' && now >= this.nextPingAt) {
      this.nextPingAt = now + limits.sse_comment_ms;
      this.transport.heartbeat?.();
    }
  }

  sendError(id: string | undefined, err: unknown): void {
    const e = toStreamgateError(err);
    if (e.code === 'internal') process.emitWarning(`streamgate session error: ${String((e.cause as Error)?.stack ?? e.cause)}`);
    const body: Record<string, unknown> = { type: 'error' };
    if (id !== undefined) body.id = id;
    body.code = e.code;
    body.message = e.message;
    if (e.retryAfter !== undefined) body.retry_after = Math.round(e.retryAfter * 1000) / 1000;
    this.send(JSON.stringify(body), 'error');
  }

  /** Queue or write a control frame (replies, errors, pings, signals) of type `kind`. */
  send(frame: OutFrame, kind: FrameKind): void {
    this.enqueue({ frame, kind, mark: undefined }, 'control');
  }

  /** Queue or write a durable event frame. */
  enqueueEvent(frame: OutFrame, event: LogEvent): void {
    this.enqueue({ frame, kind: 'event', mark: { channel: event.channel, id: event.id } }, event.priority);
  }

  /** Write a frame now if the wire keeps up, else queue it; past the bound, close 4010. */
  private enqueue(item: QueuedFrame, lane: Lane): void {
    if (this.closed) return;
    if (!this.queue?.length && this.transport.pendingBytes < WIRE_HIGH_WATER) {
      this.transport.write(item.frame, item.kind, item.mark);
      return;
    }
    this.queue ??= new OutboundQueue();
    this.queue.push(item, lane);
    if (this.queue.bytes > this.ctx.config.limits.max_queued_bytes) {
      this.close(CloseCode.SlowConsumer, 'slow consumer: too much undelivered output');
      return;
    }
    if (!this.drainWatched) {
      this.drainWatched = true;
      this.transport.watchDrain();
    }
  }

  /** The wire flushed: write what waits, until it is busy again. */
  drain(): void {
    this.drainWatched = false;
    const queue = this.queue;
    while (!this.closed && queue?.length && this.transport.pendingBytes < WIRE_HIGH_WATER) {
      const item = queue.shift()!;
      this.transport.write(item.frame, item.kind, item.mark);
    }
    if (this.queue?.length && !this.closed) {
      this.drainWatched = true;
      this.transport.watchDrain();
    } else {
      this.wakeWritable();
    }
  }

  private wakeWritable(): void {
    const waiters = this.writableWaiters ?? [];
    this.writableWaiters = null;
    for (const w of waiters) w();
  }

  /** Resolves once the queue is empty and the wire keeps up (or the session closed). */
  private writable(): Promise<void> {
    if (this.closed || (!this.queue?.length && this.transport.pendingBytes < WIRE_HIGH_WATER)) return Promise.resolve();
    return new Promise((resolve) => {
      (this.writableWaiters ??= []).push(resolve);
      if (!this.drainWatched) {
        this.drainWatched = true;
        this.transport.watchDrain();
      }
    });
  }

  /** The bound on undelivered output (`limits.max_queued_bytes`). */
  get maxQueuedBytes(): number {
    return this.ctx.config.limits.max_queued_bytes;
  }

  /** Subscribed channels. */
  channels(): string[] {
    return [...this.subscriptions.keys()];
  }

  /** End the session: unsubscribe everything and close the wire with `code`. */
  close(code: number, reason: string): void {
    if (!this.closed) this.finish(code, () => this.transport.close(code, reason));
  }

  /** Shutdown: write what waits (replies to finished publishes), then close with `code`. */
  closeGracefully(code: number, reason: string): void {
    if (this.closed) return;
    for (let item = this.queue?.shift(); item; item = this.queue?.shift()) this.transport.write(item.frame, item.kind, item.mark);
    this.close(code, reason);
  }

  /** Shutdown has begun: frames from the client are no longer read. */
  stopReading(): void {
    this.reading = false;
  }

  /** The wire went away by itself (client closed, network lost). */
  ended(code: number): void {
    if (!this.closed) this.finish(code);
  }

  private finish(code: number, closeWire?: () => void): void {
    this.closed = true;
    for (const channel of [...this.subscriptions.keys()]) this.dropSubscription(channel);
    this.queue = null;
    this.wakeWritable();
    closeWire?.();
    this.ctx.onClosed(this, code);
    void this.ctx.presence.disconnected(this, this.info.presenceTtlMs).catch(() => undefined);
  }
}
