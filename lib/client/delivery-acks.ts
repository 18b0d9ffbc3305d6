/**
 * Automatic delivered receipts (`connect({ autoAck: true })`): per channel, the
 * latest event received waits here and goes as one `ack` at most once a second, so a
 * burst of events (a replay after a reconnect) costs one request, not one per event.
 */
import { compareIds } from '../protocol/event-id.js';
import { isConnectionLoss } from './errors.js';

/** At most one `ack` per channel this often. */
export const ACK_INTERVAL_MS = 1000;
/** Events arriving together are gathered this long before the first `ack`. */
const GATHER_MS = 50;

interface ChannelAcks {
  /** The latest id received and not yet sent. */
  waiting: string | null;
  /** The latest id the server accepted (or was sent). */
  sent: string | null;
  sentAt: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class DeliveryAcks {
  private readonly channels = new Map<string, ChannelAcks>();

  constructor(
    /** Send one `ack`; rejects with a connection loss when there is no connection. */
    private readonly send: (channel: string, until: string) => Promise<void>,
    /** An `ack` the server refused. */
    private readonly failed: (err: Error) => void,
  ) {}

  /** An event of the channel was delivered to the application. */
  delivered(channel: string, id: string): void {
    let c = this.channels.get(channel);
    if (!c) this.channels.set(channel, (c = { waiting: null, sent: null, sentAt: 0, timer: undefined }));
    if (c.sent !== null && compareIds(id, c.sent) <= 0) return;
    if (c.waiting === null || compareIds(id, c.waiting) > 0) c.waiting = id;
    this.schedule(channel, c);
  }

  /** Read up to `until`: the server counts it as delivered too. */
  read(channel: string, until: string): void {
    const c = this.channels.get(channel);
    if (!c) return;
    if (c.sent === null || compareIds(until, c.sent) > 0) c.sent = until;
    if (c.waiting !== null && compareIds(c.waiting, until) <= 0) c.waiting = null;
  }

  /** A connection is back: what waits goes now. */
  resume(): void {
    for (const [channel, c] of this.channels) if (c.waiting !== null) this.schedule(channel, c);
  }

  forget(channel: string): void {
    clearTimeout(this.channels.get(channel)?.timer);
    this.channels.delete(channel);
  }

  clear(): void {
    for (const c of this.channels.values()) clearTimeout(c.timer);
    this.channels.clear();
  }

  private schedule(channel: string, c: ChannelAcks): void {
    if (c.timer !== undefined) return;
    const delay = Math.max(GATHER_MS, c.sentAt + ACK_INTERVAL_MS - Date.now());
    c.timer = setTimeout(() => this.flush(channel, c), delay);
  }

  private flush(channel: string, c: ChannelAcks): void {
    c.timer = undefined;
    if (this.channels.get(channel) !== c || c.waiting === null) return;
    const until = c.waiting;
    const before = c.sent;
    c.waiting = null;
    c.sent = until;
    c.sentAt = Date.now();
    this.send(channel, until).catch((err: unknown) => {
      if (this.channels.get(channel) !== c) return;
      if (c.sent === until) c.sent = before;
      // Offline: it waits for `resume`; anything else is the application's to hear.
      if (isConnectionLoss(err)) {
        if (c.waiting === null || compareIds(until, c.waiting) > 0) c.waiting = until;
        return;
      }
      this.failed(err instanceof Error ? err : new Error(String(err)));
    });
  }
}
