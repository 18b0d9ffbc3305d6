/**
 * The one seam between a session and its wire (WebSocket today; SSE and long-polling
 * reuse sessions). A session never asks which wire it has.
 */
import type { TransportName } from './metrics.js';

export interface Transport {
  readonly name: TransportName;
  /** Bytes handed to the wire and not yet flushed to the kernel. */
  readonly pendingBytes: number;
  /** Write one encoded frame. */
  write(frame: string): void;
  /** Close the wire with a protocol close code. */
  close(code: number, reason: string): void;
  /** Ask to be told (through `Session.drain`) once the wire has flushed. */
  watchDrain(): void;
  /** Wire-level keep-alive sent with each heartbeat (WebSocket ping frames). */
  heartbeat?(): void;
}
