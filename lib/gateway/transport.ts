/**
 * The one seam between a session and its wire (WebSocket, SSE, long-polling). A
 * session never asks which wire it has; it says what kind of frame it writes and,
 * for a durable event, its channel and id (SSE and polling build their cursor from
 * them).
 */
import type { TransportName } from './metrics.js';
import type { OutFrame } from './shared-frame.js';

/** The `type` of a frame: `event`, `reply`, `error`, `welcome`, `ping`, `reset`, … */
export type FrameKind = string;

/** A durable event's place in its channel. */
export interface EventMark {
  channel: string;
  id: string;
}

export interface Transport {
  readonly name: TransportName;
  /**
   * How the session keeps the wire alive: `ping` frames that the client must answer
   * (WebSocket), `comment`s (SSE), or nothing (long-polling, one request at a time).
   */
  readonly keepalive: 'ping' | 'comment' | 'none';
  /** Bytes handed to the wire and not yet flushed to the kernel. */
  readonly pendingBytes: number;
  /** Write one encoded frame; `mark` is set for durable events. */
  write(frame: OutFrame, kind: FrameKind, mark?: EventMark): void;
  /** Close the wire with a protocol close code. */
  close(code: number, reason: string): void;
  /** Ask to be told (through `Session.drain`) once the wire has flushed. */
  watchDrain(): void;
  /** Wire-level keep-alive: WebSocket ping frames, SSE comments. */
  heartbeat?(): void;
}
