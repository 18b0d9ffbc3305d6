/**
 * The node's local index of channel → subscribers, and fan-out. Each event frame is
 * encoded once and the same string goes to every subscriber (STYLE §7).
 */
import type { LogEvent, Signal } from '../engine/engine.js';
import { encodeEventFrame } from '../protocol/frames.js';
import { SharedFrame } from './shared-frame.js';

export interface Subscriber {
  /** `frame` is the encoded event frame, shared by every subscriber of the event. */
  deliver(frame: SharedFrame, event: LogEvent): void;
  /** An ephemeral frame (presence, typing, receipt) for the channel, encoded once. */
  signal?(signal: Signal, frame: SharedFrame): void;
}

function key(tenant: string, channel: string): string {
  return tenant + '\u0000' + channel;
}

export class Hub {
  private readonly channels = new Map<string, Set<Subscriber>>();

  subscribe(tenant: string, channel: string, subscriber: Subscriber): void {
    const k = key(tenant, channel);
    let set = this.channels.get(k);
    if (!set) this.channels.set(k, (set = new Set()));
    set.add(subscriber);
  }

  unsubscribe(tenant: string, channel: string, subscriber: Subscriber): void {
    const k = key(tenant, channel);
    const set = this.channels.get(k);
    if (!set) return;
    set.delete(subscriber);
    if (set.size === 0) this.channels.delete(k);
  }

  subscriberCount(tenant: string, channel: string): number {
    return this.channels.get(key(tenant, channel))?.size ?? 0;
  }

  /** Hand a signal to the local subscribers of its channel. */
  dispatchSignal(signal: Signal): void {
    const set = this.channels.get(key(signal.tenant, signal.channel));
    if (!set) return;
    const frame = new SharedFrame(signal.frame);
    for (const s of set) s.signal?.(signal, frame);
  }

  /** Hand a batch from the log feed to the local subscribers of each event's channel. */
  dispatch(events: readonly LogEvent[]): void {
    for (const event of events) {
      const set = this.channels.get(key(event.tenant, event.channel));
      if (!set) continue;
      const frame = new SharedFrame(encodeEventFrame(event));
      for (const s of set) s.deliver(frame, event);
    }
  }
}
