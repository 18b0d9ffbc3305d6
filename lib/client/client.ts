/**
 * The Streamgate client: one logical connection over the best transport that works
 * (WebSocket, then SSE, then long-polling), reconnected with exponential backoff and
 * full jitter, resuming every channel from the last event id it kept, dropping
 * repeats, holding publishes while offline and renewing its token before it expires.
 */
import { isValidChannel } from '../protocol/channel.js';
import { ZERO_ID } from '../protocol/event-id.js';
import { isValidEventName, type EventFrame, type JsonValue } from '../protocol/frames.js';
import { Backoff } from './backoff.js';
import { decideOnClose } from './close-policy.js';
import { Collaboration } from './collaboration.js';
import { Emitter } from './emitter.js';
import { StreamgateClientError, isConnectionLoss } from './errors.js';
import { historyOverHttp } from './http.js';
import { resolveOptions } from './options.js';
import { Outbox } from './outbox.js';
import { StreamTransport, type StreamCursor } from './stream-transport.js';
import { ChannelFeed, ChannelSubscription, type Subscription } from './subscription.js';
import { TokenSource } from './token.js';
import type { ClientTransport, CloseInfo, InboundFrame, TransportContext, TransportHost } from './transport.js';
import { TransportMemory, defaultStorage, privateStorage } from './transport-memory.js';
import type {
  ConnectOptions,
  ConnectionState,
  HistoryOptions,
  HistoryResult,
  MembersResult,
  PresenceEvent,
  PresenceUpdate,
  PublishOptions,
  PublishResult,
  ReceiptEvent,
  ResetInfo,
  SignalFrame,
  StateChange,
  SubscribeOptions,
  TransportName,
  TypingEvent,
  UnreadCount,
  UnsubscribedInfo,
  UserPresence,
} from './types.js';
import { WebSocketTransport } from './websocket-transport.js';
import { pollWire, sseWire } from './wire.js';

export interface ClientEvents {
  state: StateChange;
  error: Error;
  /** Events of a channel were lost to retention: reload its state. */
  reset: ResetInfo;
  /** Presence, typing and receipt signals of subscribed channels, as the server sent them. */
  signal: SignalFrame;
  /** Presence of subscribed channels: join, leave, update, count. */
  presence: PresenceEvent;
  /** Others starting and stopping typing on subscribed channels (a `stop` with `expired` when none came in time). */
  typing: TypingEvent;
  /** Delivered and read receipts of others on subscribed channels. */
  receipt: ReceiptEvent;
  /** The server ended a subscription (removed from the room, room deleted): it is over, not retried. */
  unsubscribed: UnsubscribedInfo;
}

/** A `token_expiring` this soon after a renewal is the server warning about a short-lived token: the timer handles it. */
const RENEWED_RECENTLY_MS = 2_000;
/** Temporary refusals of a subscribe (`rate_limited`, `unavailable`) retried this many times. */
const SUBSCRIBE_RETRIES = 5;
const TEMPORARY = new Set(['rate_limited', 'unavailable', 'internal', 'unauthorized']);

function randomKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

export class Client {
  private readonly emitter = new Emitter<ClientEvents>();
  private readonly feeds = new Map<string, ChannelFeed>();
  private readonly outbox: Outbox;
  private readonly backoff: Backoff;
  private readonly memory: TransportMemory;
  private readonly tokens: TokenSource;
  private readonly ctx: TransportContext;
  private readonly preferred: readonly TransportName[];
  private readonly cursor: StreamCursor = { value: null, covered: new Set() };
  private readonly host: TransportHost;
  private readonly collab: Collaboration;
  private current: ClientTransport | null = null;
  private usable = false;
  private openedAt = 0;
  private stateValue: ConnectionState = 'connecting';
  private stopped = false;
  /** Transports left to try before waiting (one round of capability detection). */
  private cycle: TransportName[] = [];
  private failedInCycle: TransportName[] = [];
  /** Bumped whenever an attempt is abandoned, so its late async steps do nothing. */
  private generation = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private tokenTimer: ReturnType<typeof setTimeout> | undefined;
  private upgradeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ConnectOptions) {
    const resolved = resolveOptions(options);
    this.ctx = resolved.ctx;
    this.tokens = resolved.ctx.tokens;
    this.preferred = resolved.preferred;
    this.backoff = new Backoff(resolved.backoff);
    const storage = resolved.storage === undefined ? defaultStorage() : resolved.storage ?? privateStorage();
    this.memory = new TransportMemory(storage, `streamgate.transports ${this.ctx.baseUrl}`, this.ctx.timeouts.retryBetterMs);
    this.outbox = new Outbox(resolved.maxQueuedPublishes);
    this.host = this.makeHost();
    this.collab = new Collaboration(this.ctx, resolved, {
      transport: () => (this.usable ? this.current : null),
      feed: (channel) => this.feeds.get(channel),
      userId: () => this.tokens.subject(),
    }, this.emitter);
    // Listeners added right after connect() see the first state.
    setTimeout(() => this.beginCycle(), 0);
  }

  /** `connecting`, `connected`, `reconnecting` or `disconnected`. */
  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The transport in use, or null when not connected. */
  get transport(): TransportName | null {
    return this.usable && this.current ? this.current.name : null;
  }

  on<K extends keyof ClientEvents>(name: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.emitter.on(name, listener);
  }

  off<K extends keyof ClientEvents>(name: K, listener: (value: ClientEvents[K]) => void): void {
    this.emitter.off(name, listener);
  }

  /**
   * Receive the channel's events, each once and in order, from now or after `since`,
   * across reconnections and transport changes.
   */
  subscribe(channel: string, handler: (event: EventFrame) => void, options: SubscribeOptions = {}): Subscription {
    if (!isValidChannel(channel)) throw new StreamgateClientError('bad_request', `not a channel name: ${JSON.stringify(channel)}`);
    if (typeof handler !== 'function') throw new TypeError('subscribe: handler must be a function');
    let feed = this.feeds.get(channel);
    const isNew = !feed;
    if (!feed) {
      const created: ChannelFeed = new ChannelFeed(channel, options.since ?? null, (e) => this.collab.typingEvent(created, e));
      this.feeds.set(channel, (feed = created));
    }
    const sub = new ChannelSubscription(feed, handler, options, (s) => this.leave(s));
    feed.subscriptions.add(sub);
    if (this.stopped) sub.refused(new StreamgateClientError('closed', 'the client is closed'));
    else if (isNew && this.current) this.subscribeOn(this.current, feed);
    else if (feed.known) {
      sub.accepted();
      // A handler that wants the member list where the others did not.
      if (this.usable && this.current) this.collab.refreshMembers(feed, this.current);
    }
    return sub;
  }

  /** Stop a subscription, or every handler of a channel. */
  unsubscribe(target: Subscription | string): void {
    if (typeof target !== 'string') return target.unsubscribe();
    const feed = this.feeds.get(target);
    if (!feed) return;
    for (const sub of [...feed.subscriptions]) sub.unsubscribe();
  }

  /**
   * Append an event to a channel. While offline it waits and is sent, in order with
   * the others, on the next connection.
   */
  publish(channel: string, event: string, data: JsonValue, options: PublishOptions = {}): Promise<PublishResult> {
    if (this.stopped) return Promise.reject(new StreamgateClientError('closed', 'the client is closed'));
    if (!isValidChannel(channel)) return Promise.reject(new StreamgateClientError('bad_request', `not a channel name: ${JSON.stringify(channel)}`));
    if (!isValidEventName(event)) return Promise.reject(new StreamgateClientError('bad_request', `not an event name: ${JSON.stringify(event)}`));
    const request = { channel, event, data: data ?? null, idempotency_key: options.idempotencyKey ?? randomKey() } as Parameters<Outbox['add']>[0];
    if (options.priority) request.priority = options.priority;
    const result = this.outbox.add(request);
    this.pump();
    return result;
  }

  /** The channel's retained events: after `since`, or the latest `limit`. */
  async history(channel: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    if (!isValidChannel(channel)) throw new StreamgateClientError('bad_request', `not a channel name: ${JSON.stringify(channel)}`);
    const t = this.current;
    if (t && this.usable) {
      try {
        return await t.history(channel, options);
      } catch (err) {
        if (!isConnectionLoss(err)) throw err;
      }
    }
    return historyOverHttp(this.ctx, channel, options);
  }

  /**
   * Set the user's own status (`online`, `away`, `busy`), custom status text (null
   * clears it) or device; the channels where the user is present get an `update`.
   * Kept and sent again on the next connection when this one is lost. With idle
   * detection, `online` becomes `away` while the user is idle.
   */
  setPresence(update: PresenceUpdate): Promise<void> {
    const refused = this.refusal();
    return refused ? Promise.reject(refused) : this.collab.setPresence(update);
  }

  /** A channel's present users (subscribed or not; anonymous namespaces: only `count`). */
  members(channel: string): Promise<MembersResult> {
    const refused = this.refusal(channel, true);
    return refused ? Promise.reject(refused) : this.collab.members(channel);
  }

  /** Many users' presence at once (up to 100): `offline` with `lastSeen` when no connection of theirs is live. */
  presence(userIds: readonly string[]): Promise<UserPresence[]> {
    return this.collab.users(userIds);
  }

  /**
   * Say the user is typing on a channel (true) or stopped (false). Call it on every
   * keystroke: a `start` goes at most once every 2 s (others see it for 3 s), a `stop`
   * at once. Without a connection nothing is sent.
   */
  typing(channel: string, typing: boolean): Promise<void> {
    const refused = this.refusal(channel);
    return refused ? Promise.reject(refused) : this.collab.typing(channel, typing !== false);
  }

  /**
   * Mark the channel read up to `untilId` (default: the last event delivered on it, or
   * the channel's latest event when the subscription began): read receipts and unread
   * counts. Reading implies delivery.
   */
  markRead(channel: string, untilId?: string): Promise<void> {
    const refused = this.refusal(channel);
    return refused ? Promise.reject(refused) : this.collab.markRead(channel, untilId, this.feeds.get(channel));
  }

  /** Unread counts: for each channel with receipts the user read in or belongs to, the events of others after their read cursor. */
  unread(): Promise<UnreadCount[]> {
    return this.collab.unread();
  }

  /** Close for good: no more reconnection; waiting publishes are refused with `closed`. */
  close(): void {
    this.stop('closed by the application', null);
  }

  /** Why a request is refused before it is sent (the client is closed, a bad channel name), or null. */
  private refusal(channel?: string, readOnly = false): StreamgateClientError | null {
    if (this.stopped && !readOnly) return new StreamgateClientError('closed', 'the client is closed');
    if (channel !== undefined && !isValidChannel(channel)) return new StreamgateClientError('bad_request', `not a channel name: ${JSON.stringify(channel)}`);
    return null;
  }

  private pump(): void {
    const t = this.current;
    if (t && this.usable) this.outbox.pump(t, () => this.current === t && this.usable);
  }

  private leave(sub: ChannelSubscription): void {
    const feed = this.feeds.get(sub.channel);
    if (!feed || !feed.subscriptions.delete(sub) || feed.subscriptions.size > 0) return;
    this.feeds.delete(sub.channel);
    this.collab.forget(feed);
    this.current?.unsubscribe(sub.channel);
  }

  /**
   * The server ended the channel's subscription (`unsubscribed`, a removal it confirmed,
   * a refusal of a room it had accepted): it is over, without a retry. `serverDone`: the
   * server holds no subscription to it any more.
   */
  private ended(channel: string, reason: string, serverDone = true): void {
    const feed = this.feeds.get(channel);
    if (!feed) return;
    this.feeds.delete(channel);
    this.collab.forget(feed);
    this.current?.unsubscribe(channel, serverDone);
    feed.refused(new StreamgateClientError('unsubscribed', `the server ended the subscription to ${channel}: ${reason}`));
    this.emitter.emit('unsubscribed', { channel, reason });
  }

  /**
   * This user's `member.removed`, or `room.deleted`, on a room channel. The server sends
   * `unsubscribed` after it, but not always to a poll (a removal while the poll was
   * subscribing), and a replay may hold an old removal: so ask whether the channel is
   * still allowed. Meanwhile SSE and polling leave it out: a stream with a refused
   * channel is refused whole.
   */
  private removedFromRoom(feed: ChannelFeed, reason: string): void {
    const t = this.current;
    const suspended = t !== null && !t.signalsOnSubscribe;
    if (suspended) {
      feed.known = false;
      t.unsubscribe(feed.channel, true);
    }
    const resume = () => {
      if (suspended && this.current === t && this.feeds.get(feed.channel) === feed) this.subscribeOn(t, feed);
    };
    historyOverHttp(this.ctx, feed.channel, { limit: 1 }).then(resume, (err: unknown) => {
      if (this.feeds.get(feed.channel) !== feed) return;
      if (err instanceof StreamgateClientError && (err.code === 'forbidden' || err.code === 'not_found')) this.ended(feed.channel, reason, false);
      // Not known (offline): subscribing again checks the channel.
      else resume();
    });
  }

  private subscribeOn(t: ClientTransport, feed: ChannelFeed): void {
    t.subscribe(feed.channel, feed.lastId, feed.known).then(
      (answer) => {
        if (this.feeds.get(feed.channel) !== feed) return;
        if (feed.lastId === null) feed.lastId = answer.position ?? ZERO_ID;
        feed.accepted();
        if (!answer.recovered) this.reset(feed);
        if (t.signalsOnSubscribe && this.current === t) this.collab.refreshMembers(feed, t);
      },
      (err: unknown) => {
        if (this.feeds.get(feed.channel) !== feed || this.stopped) return;
        const e = err instanceof StreamgateClientError ? err : new StreamgateClientError('internal', String(err));
        // The next connection subscribes again.
        if (isConnectionLoss(e) || e.code === 'closed') return;
        // The token, not the channel, was refused (HTTP check): the connection's business.
        if (e.code === 'unauthorized' && !this.tokens.canRefresh) {
          this.stop('the token was refused', e);
          return;
        }
        if (TEMPORARY.has(e.code) && feed.retries++ < SUBSCRIBE_RETRIES) {
          setTimeout(() => {
            if (this.current === t && this.feeds.get(feed.channel) === feed) this.subscribeOn(t, feed);
          }, Math.max(1000, (e.retryAfter ?? 0) * 1000) * feed.retries);
          return;
        }
        this.refuse(feed, e);
      },
    );
  }

  /**
   * The server refuses a channel: its subscriptions end. A room channel it had accepted
   * ends as `unsubscribed`: the user left the room (or it went) while the `unsubscribed`
   * frame could not reach them (offline, between two polls).
   */
  private refuse(feed: ChannelFeed, e: StreamgateClientError): void {
    if (feed.wasAccepted && feed.channel.startsWith('room:') && (e.code === 'forbidden' || e.code === 'not_found')) {
      return this.ended(feed.channel, 'no longer a member');
    }
    this.feeds.delete(feed.channel);
    this.collab.forget(feed);
    feed.refused(e);
    this.emitter.emit('error', e);
  }

  private reset(feed: ChannelFeed): void {
    this.emitter.emit('reset', { channel: feed.channel });
    feed.reset();
  }

  private setState(state: ConnectionState, change: Omit<StateChange, 'state'>): void {
    this.stateValue = state;
    this.emitter.emit('state', { state, ...change });
  }

  /** The transports this environment has, in the order of preference. */
  private available(): TransportName[] {
    return this.preferred.filter((n) => (n === 'websocket' ? !!this.ctx.WebSocket : n === 'sse' ? !!this.ctx.EventSource && !!this.ctx.fetch : !!this.ctx.fetch));
  }

  private beginCycle(): void {
    if (this.stopped) return;
    const available = this.available();
    if (available.length === 0) {
      this.stop('no transport is available here (pass WebSocket, EventSource or fetch)', new StreamgateClientError('unavailable', 'no transport available'));
      return;
    }
    this.cycle = this.memory.order(available);
    this.failedInCycle = [];
    void this.tryNext();
  }

  private async tryNext(): Promise<void> {
    const name = this.cycle.shift();
    if (!name) return this.scheduleReconnect({ reason: 'no transport worked' });
    const generation = ++this.generation;
    this.setState('connecting', { transport: name });
    try {
      await this.tokens.fresh();
    } catch (err) {
      if (generation !== this.generation) return;
      this.emitter.emit('error', err instanceof Error ? err : new Error(String(err)));
      return this.scheduleReconnect({ reason: 'no token' });
    }
    if (generation !== this.generation || this.stopped) return;
    const t: ClientTransport =
      name === 'websocket' ? new WebSocketTransport(this.host, this.ctx) : new StreamTransport(name === 'sse' ? sseWire : pollWire, this.host, this.ctx, this.cursor);
    this.current = t;
    this.usable = false;
    for (const feed of this.feeds.values()) this.subscribeOn(t, feed);
    t.open();
  }

  private makeHost(): TransportHost {
    return {
      opened: (t) => t === this.current && this.opened(t),
      confirmed: (t) => t === this.current && this.confirmed(t),
      closed: (t, info) => t === this.current && this.closed(info),
      frame: (t, frame) => t === this.current && this.receive(frame),
      tokenExpiring: (t) => {
        if (t === this.current && Date.now() - this.tokens.obtainedAt > RENEWED_RECENTLY_MS) this.renewToken();
      },
      error: (t, err) => t === this.current && this.emitter.emit('error', err),
      lastId: (channel) => this.feeds.get(channel)?.lastId ?? null,
      channelRefused: (t, channel, error) => {
        const feed = this.feeds.get(channel);
        if (t === this.current && feed) this.refuse(feed, error);
      },
      channelsLive: (t, channels) => {
        if (t !== this.current || !this.usable) return;
        for (const channel of channels) {
          const feed = this.feeds.get(channel);
          if (feed) this.collab.refreshMembers(feed, t);
        }
      },
    };
  }

  private opened(t: ClientTransport): void {
    this.usable = true;
    this.openedAt = Date.now();
    clearTimeout(this.reconnectTimer);
    // Resuming from the ids kept makes an older stream cursor useless: it could only replay repeats or a needless reset.
    if (!t.usesCursor) {
      this.cursor.value = null;
      this.cursor.covered.clear();
    }
    this.setState('connected', { transport: t.name });
    this.scheduleTokenRenewal();
    this.pump();
    this.collab.opened();
  }

  private confirmed(t: ClientTransport): void {
    this.memory.succeeded(t.name);
    for (const name of this.failedInCycle) this.memory.failed(name);
    this.failedInCycle = [];
    this.cycle = [];
    this.scheduleUpgrade(t.name);
  }

  private receive(frame: InboundFrame): void {
    const feed = this.feeds.get(frame.channel);
    if (!feed) return;
    if (frame.type === 'event') {
      if (!feed.deliver(frame)) return;
      this.collab.delivered(frame);
      const removal = roomRemoval(frame, this.tokens.subject());
      if (removal && this.feeds.get(frame.channel) === feed) this.removedFromRoom(feed, removal);
    } else if (frame.type === 'reset') {
      this.reset(feed);
    } else if (frame.type === 'unsubscribed') {
      this.ended(frame.channel, typeof frame.reason === 'string' ? frame.reason : 'ended by the server');
    } else {
      this.emitter.emit('signal', frame as SignalFrame);
      this.collab.signal(feed, frame as SignalFrame);
    }
  }

  private closed(info: CloseInfo): void {
    const name = this.current!.name;
    const wasUsable = this.usable;
    this.current = null;
    this.usable = false;
    this.generation++;
    clearTimeout(this.tokenTimer);
    clearTimeout(this.upgradeTimer);
    if (wasUsable && Date.now() - this.openedAt >= this.ctx.timeouts.stableMs) this.backoff.reset();
    // A stream refused whole (a room left while offline): check each channel again on the next one.
    if (info.status === 403) for (const feed of this.feeds.values()) feed.known = false;
    const decision = decideOnClose(info, this.tokens.canRefresh);
    switch (decision.action) {
      case 'stop':
        return this.stop(decision.error.message, decision.error);
      case 'renew-token':
        // The next attempt waits for the new token (TokenSource.fresh shares the refresh).
        this.tokens.refresh().catch((err: unknown) => this.emitter.emit('error', err instanceof Error ? err : new Error(String(err))));
        return this.scheduleReconnect(info);
      case 'back-off':
        this.backoff.atLeast(decision.attempt);
        return this.scheduleReconnect(info);
      case 'next-transport':
        this.failedInCycle.push(name);
        if (this.cycle.length > 0) return void this.tryNext();
        return this.scheduleReconnect(info);
      case 'reconnect':
        return this.scheduleReconnect(info);
    }
  }

  private scheduleReconnect(info: { reason: string; closeCode?: number }): void {
    if (this.stopped) return;
    this.generation++;
    clearTimeout(this.reconnectTimer);
    const delay = this.backoff.next();
    const change: Omit<StateChange, 'state'> = { transport: null, delay, attempt: this.backoff.attempt, reason: info.reason };
    if (info.closeCode !== undefined) change.closeCode = info.closeCode;
    this.setState('reconnecting', change);
    this.reconnectTimer = setTimeout(() => this.beginCycle(), delay);
  }

  private scheduleTokenRenewal(): void {
    clearTimeout(this.tokenTimer);
    const at = this.tokens.refreshAt();
    if (at === null) return;
    // At least a second apart, whatever the token says.
    this.tokenTimer = setTimeout(() => this.renewToken(), Math.max(1000, at - Date.now()));
  }

  private renewToken(): void {
    clearTimeout(this.tokenTimer);
    this.tokens.refresh().then(
      (token) => {
        const t = this.current;
        if (t && this.usable) t.refresh(token).catch((err: unknown) => !isConnectionLoss(err) && this.emitter.emit('error', err as Error));
        this.scheduleTokenRenewal();
      },
      (err: unknown) => {
        this.emitter.emit('error', err instanceof Error ? err : new Error(String(err)));
        // Try again a little later; the server closes with 4001 at expiry and the reconnect asks again.
        clearTimeout(this.tokenTimer);
        this.tokenTimer = setTimeout(() => this.renewToken(), 5000);
      },
    );
  }

  /**
   * On a fallback, go back to a better transport that failed once its time is up, even
   * if this connection never drops (the round starts from the best one again).
   */
  private scheduleUpgrade(name: TransportName): void {
    clearTimeout(this.upgradeTimer);
    const available = this.available();
    const times = available
      .slice(0, available.indexOf(name))
      .map((n) => this.memory.retryAt(n))
      .filter((t): t is number => t !== null);
    if (times.length === 0) return;
    const delay = Math.max(1000, Math.min(...times) - Date.now()) * (1 + Math.random() * 0.1);
    this.upgradeTimer = setTimeout(() => {
      const t = this.current;
      if (!t || this.stopped) return;
      this.current = null;
      this.usable = false;
      t.close();
      this.beginCycle();
    }, delay);
  }

  private stop(reason: string, error: StreamgateClientError | null): void {
    if (this.stopped) return;
    this.stopped = true;
    this.generation++;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.tokenTimer);
    clearTimeout(this.upgradeTimer);
    const t = this.current;
    this.current = null;
    this.usable = false;
    t?.close();
    const closed = error ?? new StreamgateClientError('closed', 'the client is closed');
    this.collab.close();
    for (const feed of this.feeds.values()) feed.dispose();
    this.outbox.rejectAll(closed);
    for (const feed of this.feeds.values()) for (const sub of feed.subscriptions) if (!feed.known) sub.refused(closed);
    this.setState('disconnected', { transport: null, reason });
    if (error) this.emitter.emit('error', error);
  }
}

/** Why a room event ends this user's subscription, or null. */
function roomRemoval(event: EventFrame, userId: string | null): string | null {
  if (!event.channel.startsWith('room:')) return null;
  if (event.event === 'room.deleted') return 'the room was deleted';
  const data = event.data as { user_id?: unknown } | null;
  if (event.event === 'member.removed' && userId !== null && data && typeof data === 'object' && data.user_id === userId) return 'removed from the room';
  return null;
}

/** Connect to a Streamgate gateway. The client starts connecting at once and reconnects by itself until `close()`. */
export function connect(options: ConnectOptions): Client {
  return new Client(options);
}
