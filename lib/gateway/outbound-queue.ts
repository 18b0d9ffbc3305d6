/**
 * A session's bounded, priority-ordered outbound queue (ARCHITECTURE §3). Frames wait
 * here only while the wire is busy. Higher lanes go first (`control` for replies and
 * signals, then `emergency`, `high`, `normal`, `low`), but events of one channel never
 * overtake each other: an urgent event takes the channel's queued events with it into
 * its lane.
 */
import type { Priority } from '../protocol/frames.js';
import type { EventMark, FrameKind } from './transport.js';
import { frameLength, type OutFrame } from './shared-frame.js';

export type Lane = 'control' | Priority;
const LANES: readonly Lane[] = ['control', 'emergency', 'high', 'normal', 'low'];
const RANK: Readonly<Record<Lane, number>> = { control: 0, emergency: 1, high: 2, normal: 3, low: 4 };

export interface QueuedFrame {
  frame: OutFrame;
  kind: FrameKind;
  mark: EventMark | undefined;
}

export class OutboundQueue {
  private readonly lanes: QueuedFrame[][] = LANES.map(() => []);
  /** The lane each channel's queued events are in. */
  private readonly channelLane = new Map<string, number>();
  /** How many events of each channel are queued. */
  private readonly channelCount = new Map<string, number>();
  private _bytes = 0;
  private _length = 0;

  get bytes(): number {
    return this._bytes;
  }

  get length(): number {
    return this._length;
  }

  push(item: QueuedFrame, lane: Lane): void {
    let rank = RANK[lane];
    const channel = item.mark?.channel;
    if (channel !== undefined) {
      const current = this.channelLane.get(channel);
      if (current !== undefined && current !== rank) {
        if (rank < current) this.promote(channel, current, rank);
        else rank = current;
      }
      this.channelLane.set(channel, rank);
      this.channelCount.set(channel, (this.channelCount.get(channel) ?? 0) + 1);
    }
    this.lanes[rank]!.push(item);
    this._bytes += frameLength(item.frame);
    this._length++;
  }

  /** Move a channel's queued events from lane `from` to `to`, keeping their order. */
  private promote(channel: string, from: number, to: number): void {
    const keep: QueuedFrame[] = [];
    const moved: QueuedFrame[] = [];
    for (const item of this.lanes[from]!) (item.mark?.channel === channel ? moved : keep).push(item);
    this.lanes[from] = keep;
    this.lanes[to]!.push(...moved);
  }

  shift(): QueuedFrame | undefined {
    for (const lane of this.lanes) {
      const item = lane.shift();
      if (!item) continue;
      this._bytes -= frameLength(item.frame);
      this._length--;
      const channel = item.mark?.channel;
      if (channel !== undefined) {
        const left = this.channelCount.get(channel)! - 1;
        if (left === 0) {
          this.channelCount.delete(channel);
          this.channelLane.delete(channel);
        } else {
          this.channelCount.set(channel, left);
        }
      }
      return item;
    }
    return undefined;
  }

  clear(): void {
    for (const lane of this.lanes) lane.length = 0;
    this.channelLane.clear();
    this.channelCount.clear();
    this._bytes = 0;
    this._length = 0;
  }
}
