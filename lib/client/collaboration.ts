/**
 * Presence, typing and receipts on the client (PROTOCOL §4, §7): requests go as
 * WebSocket frames when connected over WebSocket and over the HTTP routes otherwise
 * (SSE, polling, or no connection for the ones that need none), so the rules and
 * errors are the server's either way. Keeps each channel's member list and typing set
 * from the signals, the user's status (with idle detection) across reconnects, and
 * the automatic delivered acknowledgements.
 */
import { isEventId, ZERO_ID } from '../protocol/event-id.js';
import type { EventFrame } from '../protocol/frames.js';
import { DeliveryAcks } from './delivery-acks.js';
import { StreamgateClientError, disconnected, isConnectionLoss } from './errors.js';
import { commandOverHttp, unreadOverHttp, usersOverHttp } from './http.js';
import { IdleWatcher } from './idle.js';
import { toMembersResult, toPresenceEvent } from './member-list.js';
import type { ResolvedOptions } from './options.js';
import type { ChannelFeed } from './subscription.js';
import type { ClientTransport, CommandRequest, TransportContext } from './transport.js';
import { TypingThrottle } from './typing.js';
import type {
  MembersResult,
  PresenceEvent,
  PresenceUpdate,
  ReceiptEvent,
  SignalFrame,
  TypingEvent,
  UnreadCount,
  UnsubscribedInfo,
  UserPresence,
} from './types.js';

/** The events this part of the client emits (a subset of `ClientEvents`). */
export interface SignalEvents {
  error: Error;
  presence: PresenceEvent;
  typing: TypingEvent;
  receipt: ReceiptEvent;
  unsubscribed: UnsubscribedInfo;
}

/** Where those events go (the client's emitter). */
export interface SignalEmitter {
  emit<K extends keyof SignalEvents>(name: K, value: SignalEvents[K]): void;
}

/** What it needs of the client. */
export interface SignalHost {
  /** The transport in use when it is usable, else null. */
  transport(): ClientTransport | null;
  feed(channel: string): ChannelFeed | undefined;
  /** The signed-in user's id (the token's `sub`), when known. */
  userId(): string | null;
}

/** A stream transport may answer `members` before the server recorded this client's own join: ask again this often. */
const SELF_RETRY_MS = [250, 500, 1000, 2000];
const STATUSES = ['online', 'away', 'busy'];
const DEVICES = ['web', 'mobile', 'tablet', 'desktop'];

export class Collaboration {
  private readonly typingOut = new TypingThrottle();
  /** Typing requests of a channel go one after the other (two HTTP requests could cross). */
  private readonly typingChains = new Map<string, Promise<unknown>>();
  private readonly acks: DeliveryAcks | null;
  private readonly idle: IdleWatcher | null;
  /** The status, custom status and device the application set. */
  private readonly wanted: { status: 'online' | 'away' | 'busy'; customStatus?: string | null; device?: string | null } = { status: 'online' };
  /** The wanted presence did not reach the server yet: sent on the next connection. */
  private presenceDirty: boolean;
  private presenceSeq = 0;

  constructor(
    private readonly ctx: TransportContext,
    options: Pick<ResolvedOptions, 'idle' | 'autoAck'>,
    private readonly host: SignalHost,
    private readonly emitter: SignalEmitter,
  ) {
    this.acks = options.autoAck
      ? new DeliveryAcks(
          (channel, until) => this.send({ type: 'ack', channel, until }, false).then(() => undefined),
          (err) => this.emitter.emit('error', err),
        )
      : null;
    this.idle = options.idle ? new IdleWatcher(options.idle.awayAfterMs, options.idle.source, () => this.statusChanged()) : null;
    // With idle detection the SDK owns the status: it says `online` when it starts.
    this.presenceDirty = this.idle !== null;
    this.idle?.start();
  }

  /** The user is idle (idle detection on, and no activity for `awayAfterMs`). */
  get isIdle(): boolean {
    return this.idle?.idle ?? false;
  }

  /** A transport became usable. */
  opened(): void {
    if (this.presenceDirty) this.pushPresence().catch(() => undefined);
    this.acks?.resume();
  }

  close(): void {
    this.idle?.stop();
    this.acks?.clear();
  }

  // Presence

  async setPresence(update: PresenceUpdate): Promise<void> {
    if (!update || typeof update !== 'object') throw badRequest('setPresence: an object with status, customStatus or device');
    const { status, customStatus, device } = update;
    if (status === undefined && customStatus === undefined && device === undefined) throw badRequest('setPresence: give at least one of status, customStatus, device');
    if (status !== undefined && !STATUSES.includes(status)) throw badRequest('status: online, away or busy');
    if (customStatus !== undefined && customStatus !== null && typeof customStatus !== 'string') throw badRequest('customStatus: a string or null');
    if (device !== undefined && device !== null && !DEVICES.includes(device)) throw badRequest(`device: one of ${DEVICES.join(', ')}, or null`);
    if (status !== undefined) this.wanted.status = status;
    if (customStatus !== undefined) this.wanted.customStatus = customStatus;
    if (device !== undefined) this.wanted.device = device;
    // Saying `online` is activity: it ends idleness rather than being overruled by it.
    if (status === 'online') this.idle?.activity();
    await this.pushPresence();
  }

  private effectiveStatus(): 'online' | 'away' | 'busy' {
    return this.wanted.status === 'online' && this.isIdle ? 'away' : this.wanted.status;
  }

  private statusChanged(): void {
    if (this.wanted.status !== 'online') return;
    this.pushPresence().catch(() => undefined);
  }

  /** Send the whole wanted presence; a lost connection leaves it for the next one. */
  private async pushPresence(): Promise<void> {
    const request: CommandRequest = { type: 'presence', status: this.effectiveStatus() };
    if (this.wanted.customStatus !== undefined) request.custom_status = this.wanted.customStatus;
    if (this.wanted.device !== undefined) request.device = this.wanted.device;
    const seq = ++this.presenceSeq;
    this.presenceDirty = true;
    try {
      await this.send(request, true);
      if (seq === this.presenceSeq) this.presenceDirty = false;
    } catch (err) {
      if (!isConnectionLoss(err) && seq === this.presenceSeq) {
        // Refused (bad input, rate limit): not worth sending again by itself.
        this.presenceDirty = false;
      }
      throw err;
    }
  }

  async members(channel: string): Promise<MembersResult> {
    return toMembersResult(await this.send({ type: 'members', channel }, true));
  }

  async users(ids: readonly string[]): Promise<UserPresence[]> {
    if (!Array.isArray(ids) || ids.length === 0 || ids.some((id) => typeof id !== 'string' || id === '')) {
      throw badRequest('presence: a non-empty array of user ids');
    }
    const users = await usersOverHttp(this.ctx, ids);
    return users.flatMap((raw) => {
      const u = raw as Record<string, unknown>;
      if (!u || typeof u.id !== 'string') return [];
      const str = (v: unknown) => (typeof v === 'string' ? v : null);
      return [{ id: u.id, status: (STATUSES.includes(String(u.status)) ? u.status : 'offline') as UserPresence['status'], device: str(u.device), customStatus: str(u.custom_status), lastSeen: str(u.last_seen) }];
    });
  }

  /**
   * Ask for a channel's members on this transport, unless already asked on it. Over SSE
   * and polling the answer may come before the server recorded this client's own
   * join: then it is asked again a few times.
   */
  refreshMembers(feed: ChannelFeed, t: ClientTransport, attempt = 0): void {
    if (!feed.wantsMembers || feed.presenceOff) return;
    if (attempt === 0 && feed.membersAskedOn === t) return;
    feed.membersAskedOn = t;
    const seq = feed.memberList.begin();
    t.command({ type: 'members', channel: feed.channel }).then(
      (answer) => {
        if (this.host.feed(feed.channel) !== feed) return;
        const result = toMembersResult(answer);
        if (!feed.memberList.answer(seq, result)) return;
        feed.membersChanged();
        const me = this.host.userId();
        const missingMe = me !== null && (result.count === 0 || (result.members.length > 0 && !feed.memberList.has(me)));
        const delay = SELF_RETRY_MS[attempt];
        if (!t.signalsOnSubscribe && missingMe && delay !== undefined) {
          setTimeout(() => {
            if (this.host.transport() === t && this.host.feed(feed.channel) === feed && feed.membersAskedOn === t) this.refreshMembers(feed, t, attempt + 1);
          }, delay);
        }
      },
      (err: unknown) => {
        feed.memberList.failed(seq);
        if (this.host.feed(feed.channel) !== feed) return;
        if (isConnectionLoss(err)) {
          // The next connection asks again.
          if (feed.membersAskedOn === t) feed.membersAskedOn = null;
          return;
        }
        // Presence is off for the namespace (or not for this user): nothing to keep.
        if (err instanceof StreamgateClientError && (err.code === 'forbidden' || err.code === 'not_found')) feed.presenceOff = true;
        else this.emitter.emit('error', err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  // Typing

  async typing(channel: string, typing: boolean): Promise<void> {
    const state = this.typingOut.next(channel, typing);
    if (!state) return;
    const t = this.host.transport();
    // A typing signal is for now: without a connection there is nobody to tell.
    if (!t) {
      if (state === 'start') this.typingOut.forget(channel);
      return;
    }
    const previous = this.typingChains.get(channel) ?? Promise.resolve();
    const sent = previous.catch(() => undefined).then(() => t.command({ type: 'typing', channel, state }));
    this.typingChains.set(channel, sent);
    void sent.finally(() => this.typingChains.get(channel) === sent && this.typingChains.delete(channel)).catch(() => undefined);
    try {
      await sent;
    } catch (err) {
      if (state === 'start') this.typingOut.forget(channel);
      if (!isConnectionLoss(err)) throw err;
    }
  }

  // Receipts

  async markRead(channel: string, until: string | undefined, feed: ChannelFeed | undefined): Promise<void> {
    const id = until ?? feed?.lastDelivered ?? (feed?.lastId !== ZERO_ID ? feed?.lastId : null) ?? null;
    if (id === null) throw badRequest(`markRead: nothing was delivered on ${channel} yet; pass the event id`);
    if (!isEventId(id)) throw badRequest('markRead: until must be an event id (<ms>-<seq>)');
    await this.send({ type: 'read', channel, until: id }, true);
    this.acks?.read(channel, id);
  }

  unread(): Promise<UnreadCount[]> {
    return unreadOverHttp(this.ctx);
  }

  /** An event reached the application: acknowledge it (autoAck), unless it is the user's own. */
  delivered(event: EventFrame): void {
    if (!this.acks) return;
    const me = this.host.userId();
    if (me !== null && event.publisher?.id === me) return;
    this.acks.delivered(event.channel, event.id);
  }

  // Signals from the server

  signal(feed: ChannelFeed, frame: SignalFrame): void {
    if (frame.type === 'presence') {
      const event = toPresenceEvent(frame);
      if (!event) return;
      const changed = feed.memberList.frame(event);
      this.emitter.emit('presence', event);
      feed.presence(event);
      if (changed) feed.membersChanged();
    } else if (frame.type === 'typing') {
      const event = feed.typingSet.frame(frame as { user?: unknown; state?: unknown });
      if (event) this.typingEvent(feed, event);
    } else if (frame.type === 'receipt') {
      const { user, kind, until } = frame as { user?: { id?: unknown }; kind?: unknown; until?: unknown };
      if (typeof user?.id !== 'string' || (kind !== 'delivered' && kind !== 'read') || typeof until !== 'string') return;
      const event: ReceiptEvent = { channel: feed.channel, user: { id: user.id }, kind, until };
      this.emitter.emit('receipt', event);
      feed.receipt(event);
    }
  }

  typingEvent(feed: ChannelFeed, event: TypingEvent): void {
    this.emitter.emit('typing', event);
    feed.typing(event);
  }

  /** The channel's feed is gone. */
  forget(feed: ChannelFeed): void {
    feed.dispose();
    this.acks?.forget(feed.channel);
  }

  /** Send a request over the connection, or over HTTP when `http` allows it and there is none (or it was lost). */
  private async send(request: CommandRequest, http: boolean): Promise<Record<string, unknown>> {
    const t = this.host.transport();
    if (t) {
      try {
        return await t.command(request);
      } catch (err) {
        if (!http || !isConnectionLoss(err)) throw err;
      }
    }
    if (!http) throw disconnected('not connected');
    return commandOverHttp(this.ctx, request);
  }
}

function badRequest(message: string): StreamgateClientError {
  return new StreamgateClientError('bad_request', message);
}
