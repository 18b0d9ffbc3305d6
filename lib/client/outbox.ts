/**
 * Publishes waiting for the server's answer, in the order they were made. They stay
 * here until answered: written again in order on the next connection when one is lost
 * (each carries an idempotency key, so the server appends it once).
 */
import { isConnectionLoss, StreamgateClientError } from './errors.js';
import type { ClientTransport, PublishRequest } from './transport.js';
import type { PublishResult } from './types.js';

/** A publish lost on a transport that still works is written again after this. */
const RETRY_MS = 1000;

interface Outgoing {
  request: PublishRequest;
  sent: boolean;
  resolve(result: PublishResult): void;
  reject(err: Error): void;
}

export class Outbox {
  private readonly items: Outgoing[] = [];
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly max: number) {}

  get size(): number {
    return this.items.length;
  }

  add(request: PublishRequest): Promise<PublishResult> {
    if (this.items.length >= this.max) {
      return Promise.reject(new StreamgateClientError('unavailable', `${this.max} publishes are already waiting for a connection`));
    }
    return new Promise((resolve, reject) => {
      this.items.push({ request, sent: false, resolve, reject });
    });
  }

  /**
   * Write what waits: everything at once on a pipelined transport (one ordered socket),
   * else one at a time.
   */
  pump(transport: ClientTransport, stillCurrent: () => boolean): void {
    for (const item of this.items) {
      if (item.sent) {
        if (transport.pipelined) continue;
        return;
      }
      item.sent = true;
      transport.publish(item.request).then(
        (result) => {
          this.remove(item);
          item.resolve(result);
          if (!transport.pipelined && stillCurrent()) this.pump(transport, stillCurrent);
        },
        (err: unknown) => {
          if (isConnectionLoss(err)) {
            item.sent = false;
            // A request lost while its transport lives on (a dropped POST): try again soon.
            if (stillCurrent()) this.retrySoon(transport, stillCurrent);
            return;
          }
          this.remove(item);
          item.reject(err instanceof Error ? err : new Error(String(err)));
          if (!transport.pipelined && stillCurrent()) this.pump(transport, stillCurrent);
        },
      );
      if (!transport.pipelined) return;
    }
  }

  private retrySoon(transport: ClientTransport, stillCurrent: () => boolean): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (stillCurrent()) this.pump(transport, stillCurrent);
    }, RETRY_MS);
  }

  rejectAll(err: Error): void {
    clearTimeout(this.retryTimer);
    for (const item of this.items.splice(0)) item.reject(err);
  }

  private remove(item: Outgoing): void {
    const i = this.items.indexOf(item);
    if (i !== -1) this.items.splice(i, 1);
  }
}
