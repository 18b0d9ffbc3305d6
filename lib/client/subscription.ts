/**
 * A channel's feed on the client: its handlers and the last event id kept, by which
 * replays and repeats are dropped (PROTOCOL §8), and from which a new connection resumes.
 */
import { compareIds, isEventId } from '../protocol/event-id.js';
import type { EventFrame } from '../protocol/frames.js';
import { callSafely } from './emitter.js';
import type { ResetInfo, SubscribeOptions } from './types.js';

export interface Subscription {
  readonly channel: string;
  /** Resolves once the server accepted the channel; rejects when it refused it. */
  readonly ready: Promise<void>;
  /** Stop this handler (the channel is left when its last handler goes). */
  unsubscribe(): void;
}

export class ChannelFeed {
  readonly subscriptions = new Set<ChannelSubscription>();
  /** The last event id delivered (or the position a live start began at). */
  lastId: string | null;
  /** The server accepted this channel for this client once. */
  known = false;
  /** Temporary refusals in a row (`rate_limited`, `unavailable`). */
  retries = 0;

  constructor(
    readonly channel: string,
    since: string | null,
  ) {
    this.lastId = since;
  }

  /** Hand an event to every handler unless its id is not after the last one kept. */
  deliver(event: EventFrame): boolean {
    if (!isEventId(event.id)) return false;
    if (this.lastId !== null && compareIds(event.id, this.lastId) <= 0) return false;
    this.lastId = event.id;
    for (const sub of [...this.subscriptions]) sub.handle(event);
    return true;
  }

  reset(): void {
    for (const sub of [...this.subscriptions]) sub.reset({ channel: this.channel });
  }

  accepted(): void {
    this.known = true;
    this.retries = 0;
    for (const sub of this.subscriptions) sub.accepted();
  }

  refused(err: Error): void {
    for (const sub of [...this.subscriptions]) sub.refused(err);
    this.subscriptions.clear();
  }
}

export class ChannelSubscription implements Subscription {
  readonly ready: Promise<void>;
  private settle!: { resolve(): void; reject(err: Error): void };
  private active = true;

  constructor(
    readonly channel: string,
    private readonly handler: (event: EventFrame) => void,
    private readonly options: SubscribeOptions,
    private readonly leave: (sub: ChannelSubscription) => void,
  ) {
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

  handle(event: EventFrame): void {
    if (this.active) callSafely(this.handler, event);
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
