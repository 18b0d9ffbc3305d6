/**
 * A channel's feed on the client: its handlers and the last event id kept, by which
 * replays and repeats are dropped (PROTOCOL §8), and from which a new connection
 * resumes; and its signals: the member list and who is typing.
 */
import { compareIds, isEventId } from '../protocol/event-id.js';
import type { EventFrame } from '../protocol/frames.js';
import { callSafely } from './emitter.js';
import { MemberList } from './member-list.js';
import type { ClientTransport } from './transport.js';
import { TypingSet } from './typing.js';
import type { PresenceEvent, PresenceUser, ReceiptEvent, ResetInfo, SubscribeOptions, TypingEvent, TypingUser } from './types.js';

export interface Subscription {
  readonly channel: string;
  /** Resolves once the server accepted the channel; rejects when it refused it. */
  readonly ready: Promise<void>;
  /** Stop this handler (the channel is left when its last handler goes). */
  unsubscribe(): void;
  /**
   * The channel's present users, kept up to date from the `members` answer (asked again
   * after every reconnect) and the join, leave and update frames. Empty until the first
   * answer, in anonymous namespaces, and where presence is off.
   */
  members(): PresenceUser[];
  /** How many users are present (in anonymous namespaces the only thing known). */
  memberCount(): number;
  /** Who else is typing on the channel now. */
  typing(): TypingUser[];
}

export class ChannelFeed {
  readonly subscriptions = new Set<ChannelSubscription>();
  /** The last event id delivered (or the position a live start began at). */
  lastId: string | null;
  /** The last event id actually handed to the handlers. */
  lastDelivered: string | null = null;
  /** The server accepted this channel for this client once. */
  known = false;
  /** Accepted at some point (`known` is forgotten when the channel must be checked again). */
  wasAccepted = false;
  /** Temporary refusals in a row (`rate_limited`, `unavailable`). */
  retries = 0;
  readonly memberList = new MemberList();
  readonly typingSet: TypingSet;
  /** The transport the member list was last asked on (asked again on the next one). */
  membersAskedOn: ClientTransport | null = null;
  /** The server refused `members` (presence is off here): not asked again. */
  presenceOff = false;

  constructor(
    readonly channel: string,
    since: string | null,
    onTypingExpired: (event: TypingEvent) => void,
  ) {
    this.lastId = since;
    this.typingSet = new TypingSet(channel, onTypingExpired);
  }

  /** Some handler wants the member list kept. */
  get wantsMembers(): boolean {
    for (const sub of this.subscriptions) if (sub.wantsMembers) return true;
    return false;
  }

  /** Hand an event to every handler unless its id is not after the last one kept. */
  deliver(event: EventFrame): boolean {
    if (!isEventId(event.id)) return false;
    if (this.lastId !== null && compareIds(event.id, this.lastId) <= 0) return false;
    this.lastId = event.id;
    this.lastDelivered = event.id;
    for (const sub of [...this.subscriptions]) sub.handle(event);
    return true;
  }

  presence(event: PresenceEvent): void {
    for (const sub of [...this.subscriptions]) sub.presence(event);
  }

  membersChanged(): void {
    const members = this.memberList.members();
    for (const sub of [...this.subscriptions]) sub.membersChanged(members, this.memberList.count);
  }

  typing(event: TypingEvent): void {
    for (const sub of [...this.subscriptions]) sub.typingEvent(event);
  }

  receipt(event: ReceiptEvent): void {
    for (const sub of [...this.subscriptions]) sub.receipt(event);
  }

  /** The feed is gone: no timers left behind. */
  dispose(): void {
    this.typingSet.clear();
  }

  reset(): void {
    for (const sub of [...this.subscriptions]) sub.reset({ channel: this.channel });
  }

  accepted(): void {
    this.known = true;
    this.wasAccepted = true;
    this.retries = 0;
    for (const sub of this.subscriptions) sub.accepted();
  }

  refused(err: Error): void {
    for (const sub of [...this.subscriptions]) sub.refused(err);
    this.subscriptions.clear();
  }
}

export class ChannelSubscription implements Subscription {
  readonly channel: string;
  readonly ready: Promise<void>;
  private settle!: { resolve(): void; reject(err: Error): void };
  private active = true;

  constructor(
    private readonly feed: ChannelFeed,
    private readonly handler: (event: EventFrame) => void,
    private readonly options: SubscribeOptions,
    private readonly leave: (sub: ChannelSubscription) => void,
  ) {
    this.channel = feed.channel;
    this.ready = new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // An application that never awaits `ready` must not get an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  unsubscribe(): void {
    if (!this.active) return;
    this.active = false;
    this.leave(this);
  }

  members(): PresenceUser[] {
    return this.feed.memberList.members();
  }

  memberCount(): number {
    return this.feed.memberList.count;
  }

  typing(): TypingUser[] {
    return this.feed.typingSet.users();
  }

  get wantsMembers(): boolean {
    return this.active && this.options.members !== false;
  }

  handle(event: EventFrame): void {
    if (this.active) callSafely(this.handler, event);
  }

  presence(event: PresenceEvent): void {
    if (this.active && this.options.onPresence) callSafely(this.options.onPresence, event);
  }

  membersChanged(members: PresenceUser[], count: number): void {
    const fn = this.options.onMembers;
    if (this.active && fn) callSafely(() => fn(members, count), undefined);
  }

  typingEvent(event: TypingEvent): void {
    if (this.active && this.options.onTyping) callSafely(this.options.onTyping, event);
  }

  receipt(event: ReceiptEvent): void {
    if (this.active && this.options.onReceipt) callSafely(this.options.onReceipt, event);
  }

  reset(info: ResetInfo): void {
    if (this.active && this.options.onReset) callSafely(this.options.onReset, info);
  }

  accepted(): void {
    this.settle.resolve();
  }

  refused(err: Error): void {
    this.active = false;
    this.settle.reject(err);
    if (this.options.onError) callSafely(this.options.onError, err);
  }
}
