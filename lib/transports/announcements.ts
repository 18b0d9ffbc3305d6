/**
 * `GET /v1/announcements`: the tenant's announcements (events on `tenant`) as a plain
 * SSE broadcast. A single-topic stream with no durable replay is what `sse-channel`
 * fits (STACK.md): it keeps a short history of its own and replays from it on
 * `Last-Event-ID`; for everything durable and multi-channel see `sse.ts`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import SseChannel from 'sse-channel';
import type { TokenVerifier } from '../auth/tokens.js';
import { randomUUID } from 'node:crypto';
import { StreamgateError, forbidden, rateLimited, unauthorized } from '../errors.js';
import type { ConnectionRegistry } from '../gateway/connections.js';
import type { LogEvent } from '../engine/engine.js';
import type { Hub, Subscriber } from '../gateway/hub.js';
import type { SharedFrame } from '../gateway/shared-frame.js';
import type { Metrics } from '../gateway/metrics.js';
import { refuseRequest, tokenOf } from './stream-request.js';

/** Events kept for `Last-Event-ID` replay per tenant stream. */
const HISTORY_SIZE = 50;
const IDLE_DROP_MS = 60_000;

interface TenantStream extends Subscriber {
  sse: SseChannel;
  seq: number;
}

export class Announcements {
  private readonly streams = new Map<string, TenantStream>();

  constructor(
    private readonly hub: Hub,
    private readonly verifier: TokenVerifier,
    private readonly metrics: Metrics,
    private readonly isClosing: () => boolean,
    private readonly registry: ConnectionRegistry,
  ) {}

  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let tenant: string;
    let slots: string[] = [];
    const slotId = randomUUID();
    let gone = false;
    res.once('close', () => {
      gone = true;
      this.registry.release(slots, slotId);
    });
    try {
      if (this.isClosing()) throw new StreamgateError('unavailable', 'server is shutting down');
      const url = new URL(req.url ?? '/', 'http://localhost');
      const token = tokenOf(req, url);
      if (!token) throw unauthorized('missing token: ?token=<jwt> or Authorization: Bearer <jwt>');
      if (token.startsWith('sgk_')) throw forbidden('server keys cannot open client streams; use a user token');
      const principal = this.verifier.verify(token);
      tenant = principal.tenant;
      // An announcements stream counts against the connection limits too.
      const admission = await this.registry.admit(tenant, principal.userId, req.socket.remoteAddress ?? 'unknown', slotId);
      if (admission.refusal) throw rateLimited(admission.refusal, 5);
      slots = admission.slots;
      if (gone) return this.registry.release(slots, slotId);
      // sse-channel pads the stream for old browsers only when asked in the query.
      url.searchParams.set('evs_preamble', '1');
      req.url = url.pathname + url.search;
    } catch (err) {
      refuseRequest(res, err);
      return;
    }
    const stream = this.stream(tenant);
    res.setHeader('X-Accel-Buffering', 'no');
    stream.sse.addClient(req, res);
    this.metrics.connections.inc({ transport: 'sse', tenant });
    res.on('close', () => {
      this.metrics.connections.dec({ transport: 'sse', tenant });
      // Kept a minute after the last client, so a reconnect still finds the history.
      if (stream.sse.getConnectionCount() === 0) {
        setTimeout(() => {
          if (this.streams.get(tenant) === stream && stream.sse.getConnectionCount() === 0) this.drop(tenant);
        }, IDLE_DROP_MS).unref();
      }
    });
  }

  private stream(tenant: string): TenantStream {
    let stream = this.streams.get(tenant);
    if (stream) return stream;
    const sse = new SseChannel({ historySize: HISTORY_SIZE, retryTimeout: 3000, pingInterval: 15_000, jsonEncode: false });
    const s: TenantStream = {
      sse,
      seq: 0,
      // Zero-padded sequence ids, because sse-channel compares ids as strings.
      deliver: (frame: SharedFrame, _event: LogEvent) => sse.send({ id: String(++s.seq).padStart(12, '0'), event: 'event', data: frame.text }),
    };
    this.hub.subscribe(tenant, 'tenant', s);
    this.streams.set(tenant, s);
    return s;
  }

  private drop(tenant: string): void {
    const stream = this.streams.get(tenant);
    if (!stream) return;
    this.hub.unsubscribe(tenant, 'tenant', stream);
    stream.sse.close();
    this.streams.delete(tenant);
  }

  close(): void {
    for (const tenant of [...this.streams.keys()]) this.drop(tenant);
  }
}
