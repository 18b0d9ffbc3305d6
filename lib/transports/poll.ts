/**
 * `GET /v1/poll` (PROTOCOL §6): one request at a time, each a short-lived session that
 * subscribes from the cursor, answers with what waits (or the first thing to arrive,
 * or nothing at the timeout) and ends. The cursor is stateless, so consecutive polls may
 * land on different nodes and lose nothing.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { badRequest, rateLimited, StreamgateError } from '../errors.js';
import { Cursor } from '../gateway/cursor.js';
import { ZERO_ID } from '../protocol/event-id.js';
import { Session } from '../gateway/session.js';
import { DEVICES } from '../gateway/event-input.js';
import { SHORT_POLL_MS } from '../gateway/presence.js';
import type { EventMark, FrameKind, Transport } from '../gateway/transport.js';
import { frameText, type OutFrame } from '../gateway/shared-frame.js';
import type { StreamDeps } from './sse.js';
import { parseStreamRequest, refuseRequest, type StreamRequest } from './stream-request.js';

/** Most frames one answer carries; the rest follow on the next poll. */
const MAX_FRAMES = 1000;
const MAX_BYTES = 1024 * 1024;
/** After the first frame, wait this long for others that arrive with it. */
const GATHER_MS = 10;
/** Frame kinds that make no sense on a one-way, one-shot answer. */
const SKIPPED = new Set(['ping', 'pong', 'token_expiring', 'welcome']);

class PollTransport implements Transport {
  readonly name = 'poll' as const;
  readonly keepalive = 'none' as const;
  readonly pendingBytes = 0;
  readonly frames: string[] = [];
  private bytes = 0;
  full = false;
  onFrame: (() => void) | null = null;

  constructor(readonly cursor: Cursor) {}

  write(out: OutFrame, kind: FrameKind, mark?: EventMark): void {
    if (this.full || SKIPPED.has(kind)) return;
    const frame = frameText(out);
    if (this.frames.length >= MAX_FRAMES || this.bytes + frame.length > MAX_BYTES) {
      // Later frames are read again from the cursor on the next poll.
      this.full = true;
      this.onFrame?.();
      return;
    }
    this.frames.push(frame);
    this.bytes += frame.length;
    if (mark) this.cursor.set(mark.channel, mark.id);
    this.onFrame?.();
  }

  close(): void {
    this.onFrame?.();
  }

  watchDrain(): void {}
}

export class PollGateway {
  private readonly waiting = new Set<() => void>();

  constructor(private readonly deps: StreamDeps) {}

  /** Answer every held poll now (shutdown). */
  releaseAll(): void {
    for (const answer of [...this.waiting]) answer();
  }

  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let parsed: StreamRequest;
    let timeoutMs: number;
    let gone = false;
    res.once('close', () => (gone = true));
    try {
      if (this.deps.isClosing()) throw new StreamgateError('unavailable', 'server is shutting down');
      const url = new URL(req.url ?? '/', 'http://localhost');
      parsed = parseStreamRequest(req, this.deps.verifier, url.searchParams.get('cursor'));
      for (const c of parsed.channels) await this.deps.ctx.access?.maySubscribe(parsed.principal, c);
      const t = url.searchParams.get('timeout');
      timeoutMs = 25_000;
      if (t !== null) {
        if (!/^\d{1,2}$/.test(t) || Number(t) < 1 || Number(t) > 30) throw badRequest('timeout: 1 to 30 seconds');
        timeoutMs = Number(t) * 1000;
      }
    } catch (err) {
      refuseRequest(res, err);
      return;
    }
    const { principal, channels } = parsed;
    const { engine } = this.deps.ctx;

    if (!parsed.cursor) {
      // No cursor: the current positions, at once.
      try {
        const cursor = new Cursor();
        const positions = await Promise.all(channels.map((c) => engine.position(principal.tenant, c)));
        // A channel with no event yet resumes from its start, so nothing published
        // before the next poll is missed.
        channels.forEach((c, i) => cursor.set(c, positions[i] ?? ZERO_ID));
        return this.answer(res, [], cursor);
      } catch (err) {
        return refuseRequest(res, err);
      }
    }

    const cursor = parsed.cursor;
    cursor.retain(channels);
    // A held poll counts against the connection limits like any other connection.
    const slotId = randomUUID();
    let slots: string[] = [];
    try {
      const admission = await this.deps.registry.admit(principal.tenant, principal.userId, parsed.ip, slotId);
      if (admission.refusal) throw rateLimited(admission.refusal, 5);
      slots = admission.slots;
      const unknown = channels.filter((c) => cursor.get(c) === undefined);
      const positions = await Promise.all(unknown.map((c) => engine.position(principal.tenant, c)));
      unknown.forEach((c, i) => cursor.set(c, positions[i] ?? ZERO_ID));
    } catch (err) {
      this.deps.registry.release(slots, slotId);
      refuseRequest(res, err);
      return;
    }
    if (gone) {
      this.deps.registry.release(slots, slotId);
      return;
    }
    const transport = new PollTransport(cursor);
    const d = parsed.url.searchParams.get('device');
    const device = d && (DEVICES as readonly string[]).includes(d) ? d : null;
    // One presence entry per polling user and device, lasting until the next poll is
    // late: a user polling at least every `timeout + 10` s counts as online. A short
    // poll leaves its entry as its start set it (lib/gateway/presence.ts), hence the
    // extra SHORT_POLL_MS: the entry still outlasts the answer by `timeout + 10` s.
    const session = new Session(this.deps.ctx, transport, principal, {
      connectionId: `poll:${principal.userId}:${device ?? 'any'}`,
      device,
      ip: parsed.ip,
      userAgent: parsed.userAgent,
      presenceTtlMs: timeoutMs + 10_000 + SHORT_POLL_MS,
    });
    void this.deps.ctx.presence.connected(session, timeoutMs + 10_000 + SHORT_POLL_MS).catch(() => undefined);
    const { metrics } = this.deps.ctx;
    metrics.connections.inc({ transport: 'poll', tenant: principal.tenant });
    let answered = false;
    let timer: NodeJS.Timeout | undefined;
    let gather: NodeJS.Timeout | undefined;
    /** End the poll once: the session goes, and the client gets its answer if it still listens. */
    const finish = (respond: boolean): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      clearTimeout(gather);
      this.waiting.delete(answer);
      session.ended(1000);
      this.deps.registry.release(slots, slotId);
      metrics.connections.dec({ transport: 'poll', tenant: principal.tenant });
      if (respond) this.answer(res, transport.frames, cursor);
    };
    const answer = (): void => finish(true);
    res.on('close', () => finish(false));
    this.waiting.add(answer);

    try {
      for (const channel of channels) {
        if (answered) return;
        await this.deps.ctx.track(
          session.subscribeChannel(channel, cursor.get(channel), (r) => {
            if (!r.recovered) session.send(JSON.stringify({ type: 'reset', channel }), 'reset');
          }),
        );
      }
    } catch (err) {
      if (answered) return;
      finish(false);
      refuseRequest(res, err);
      return;
    }
    if (answered) return;
    if (transport.frames.length || transport.full) return answer();
    transport.onFrame = () => {
      if (transport.full) return answer();
      gather ??= setTimeout(answer, GATHER_MS);
    };
    timer = setTimeout(answer, timeoutMs);
  }

  private answer(res: ServerResponse, frames: readonly string[], cursor: Cursor): void {
    if (res.writableEnded) return;
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(`{"frames":[${frames.join(',')}],"cursor":${JSON.stringify(cursor.encode())}}`);
  }
}
