/**
 * SSE and long-polling as one transport: one stream (or poll loop) carries every
 * subscribed channel and is restarted with the current cursor when the set changes;
 * publish and history go over HTTP.
 *
 * The cursor alone cannot resume a channel it holds no position for (one added to the
 * set, or one that had no event yet, starts live), so such channels catch up from the
 * last id the client kept with an HTTP history read once the stream is live, while
 * their live frames wait; the client drops what arrives twice.
 */
import { disconnected, fromErrorBody, StreamgateClientError } from './errors.js';
import { commandOverHttp, historyOverHttp, publishOverHttp } from './http.js';
import type { ClientTransport, CommandRequest, InboundFrame, PublishRequest, SubscribeAnswer, TransportContext, TransportHost } from './transport.js';
import type { HistoryOptions, HistoryResult, PublishResult } from './types.js';
import type { Wire, WireFailure, WireKind } from './wire.js';

/** The stream cursor, kept by the client across transports. */
export interface StreamCursor {
  value: string | null;
  /** Channels the cursor holds a position for: an event of theirs went through it. */
  covered: Set<string>;
}

/** Gather subscribe/unsubscribe calls made together into one restart. */
const RESTART_DELAY_MS = 10;
const CATCH_UP_PAGE = 1000;
/** At most this many pages per channel and catch-up. */
const CATCH_UP_PAGES = 100;

export class StreamTransport implements ClientTransport {
  readonly pipelined = false;
  readonly usesCursor = true;
  readonly signalsOnSubscribe = false;
  readonly name: 'sse' | 'poll';
  private readonly channels = new Set<string>();
  /** Channels catching up: their live frames wait here. */
  private readonly held = new Map<string, Array<{ frame: InboundFrame; cursor: string | null }>>();
  private readonly checks = new Set<Promise<unknown>>();
  private wire: Wire | null = null;
  private wireSeq = 0;
  private started = false;
  private opened = false;
  private worked = false;
  private done = false;
  private rechecking = false;
  private restartTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly kind: WireKind,
    private readonly host: TransportHost,
    private readonly ctx: TransportContext,
    private readonly cursor: StreamCursor,
  ) {
    this.name = kind.name;
  }

  open(): void {
    this.started = true;
    // Channels being checked join the first stream rather than restart it at once.
    void Promise.allSettled([...this.checks]).then(() => this.scheduleRestart());
  }

  close(): void {
    this.done = true;
    this.stopWire();
    clearTimeout(this.restartTimer);
  }

  async subscribe(channel: string, since: string | null, known: boolean): Promise<SubscribeAnswer> {
    let position: string | null = null;
    if (!known || since === null) {
      // Checks the right to subscribe before the channel joins the stream (one refused
      // channel refuses a whole stream) and reads where a live start begins.
      const check = historyOverHttp(this.ctx, channel, { limit: 1 });
      this.checks.add(check);
      try {
        const page = await check;
        position = page.events.length ? page.events[page.events.length - 1]!.id : null;
      } catch (err) {
        if (err instanceof StreamgateClientError && err.code === 'disconnected') this.fail({ reason: `channel check failed: ${err.message}` });
        throw err;
      } finally {
        this.checks.delete(check);
      }
    }
    if (this.done) throw disconnected();
    this.channels.add(channel);
    this.scheduleRestart();
    return { recovered: true, position };
  }

  unsubscribe(channel: string, ended = false): void {
    if (!this.channels.delete(channel)) return;
    this.held.delete(channel);
    this.cursor.covered.delete(channel);
    // The server ended it (removed from a room): the next poll or stream with it would be refused whole.
    if (ended) this.wire?.settle();
    this.scheduleRestart();
  }

  command(request: CommandRequest): Promise<Record<string, unknown>> {
    return commandOverHttp(this.ctx, request);
  }

  publish(request: PublishRequest): Promise<PublishResult> {
    return publishOverHttp(this.ctx, request);
  }

  history(channel: string, options: HistoryOptions): Promise<HistoryResult> {
    return historyOverHttp(this.ctx, channel, options);
  }

  async refresh(): Promise<void> {
    if (this.kind.restartOnRefresh) this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (!this.started || this.done) return;
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => void this.restart(), RESTART_DELAY_MS);
  }

  private stopWire(): void {
    this.wireSeq++;
    this.wire?.close();
    this.wire = null;
    this.held.clear();
    clearTimeout(this.connectTimer);
  }

  private async restart(): Promise<void> {
    if (this.done) return;
    this.stopWire();
    const seq = this.wireSeq;
    if (this.channels.size === 0) {
      if (!this.opened) await this.probe(seq);
      return;
    }
    let token: string;
    try {
      token = await this.ctx.tokens.fresh();
    } catch (err) {
      if (seq === this.wireSeq) this.fail({ reason: `no token: ${String(err)}`, status: 401 });
      return;
    }
    if (seq !== this.wireSeq || this.done) return;
    this.connectTimer = setTimeout(() => {
      if (seq === this.wireSeq) this.fail({ reason: `nothing arrived on ${this.name} within ${this.ctx.timeouts.connectMs} ms` });
    }, this.ctx.timeouts.connectMs);
    this.wire = this.kind.open(this.ctx, { channels: [...this.channels], cursor: this.cursor.value, token }, {
      welcome: () => seq === this.wireSeq && this.live(seq),
      frame: (frame, cursor) => seq === this.wireSeq && this.receive(frame, cursor),
      cursor: (cursor) => {
        if (seq === this.wireSeq) this.cursor.value = cursor;
      },
      failed: (info) => seq === this.wireSeq && this.fail(info),
      serverError: (frame) => seq === this.wireSeq && this.host.error(this, fromErrorBody(frame)),
      tokenExpiring: () => seq === this.wireSeq && this.host.tokenExpiring(this),
    });
  }

  /** No channel to stream yet: make sure the gateway answers at all. */
  private async probe(seq: number): Promise<void> {
    try {
      if (!this.ctx.fetch) throw new Error('no fetch');
      const res = await this.ctx.fetch(`${this.ctx.baseUrl}/v1/transports`, { headers: { accept: 'application/json' } });
      await res.text();
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
    } catch (err) {
      if (seq === this.wireSeq) this.fail({ reason: `the gateway does not answer: ${String(err)}` });
      return;
    }
    if (seq !== this.wireSeq || this.done || this.opened) return;
    this.opened = true;
    this.host.opened(this);
  }

  private live(seq: number): void {
    clearTimeout(this.connectTimer);
    if (!this.opened) {
      this.opened = true;
      this.host.opened(this);
    }
    if (!this.worked) {
      this.worked = true;
      this.host.confirmed(this);
    }
    if (seq !== this.wireSeq) return;
    for (const channel of this.channels) {
      if (this.cursor.covered.has(channel) || this.held.has(channel)) continue;
      this.held.set(channel, []);
      void this.catchUp(channel, seq);
    }
    this.host.channelsLive(this, [...this.channels]);
  }

  private receive(frame: InboundFrame, cursor: string | null): void {
    if (cursor) this.cursor.value = cursor;
    const held = this.held.get(frame.channel);
    if (held) held.push({ frame, cursor });
    else this.deliver(frame, cursor);
  }

  private deliver(frame: InboundFrame, cursor: string | null): void {
    if (frame.type === 'event' && cursor && this.channels.has(frame.channel)) this.cursor.covered.add(frame.channel);
    this.host.frame(this, frame);
  }

  private async catchUp(channel: string, seq: number): Promise<void> {
    const current = () => seq === this.wireSeq && this.held.has(channel);
    try {
      for (let page = 0; page < CATCH_UP_PAGES; page++) {
        const since = this.host.lastId(channel);
        if (since === null) break;
        const r = await historyOverHttp(this.ctx, channel, { since, limit: CATCH_UP_PAGE });
        if (!current()) return;
        if (!r.recovered && page === 0) this.host.frame(this, { type: 'reset', channel });
        for (const e of r.events) this.host.frame(this, e);
        if (r.events.length < CATCH_UP_PAGE) break;
      }
    } catch (err) {
      // Without the catch-up the live frames would skip a gap: start over instead.
      if (current()) this.fail({ reason: `catch-up of ${channel} failed: ${String(err)}` });
      return;
    }
    if (!current()) return;
    const waiting = this.held.get(channel)!;
    this.held.delete(channel);
    for (const { frame, cursor } of waiting) this.deliver(frame, cursor);
  }

  private fail(info: WireFailure): void {
    if (this.done) return;
    if (info.status === 403 && this.worked && !this.rechecking) {
      void this.recheck(info);
      return;
    }
    this.done = true;
    this.stopWire();
    clearTimeout(this.restartTimer);
    this.host.closed(this, { neverWorked: !this.worked, ...info });
  }

  /**
   * A stream that worked was refused (403): one of its channels is no longer allowed (a
   * room the user was removed from between two polls). Find which, hand them back as
   * refused, and go on with the others; if none is refused, the stream failed after all.
   */
  private async recheck(info: WireFailure): Promise<void> {
    this.rechecking = true;
    this.stopWire();
    const seq = this.wireSeq;
    const channels = [...this.channels];
    const refused: Array<{ channel: string; err: StreamgateClientError }> = [];
    await Promise.all(
      channels.map((channel) =>
        historyOverHttp(this.ctx, channel, { limit: 1 }).catch((err: unknown) => {
          if (err instanceof StreamgateClientError && (err.code === 'forbidden' || err.code === 'not_found')) refused.push({ channel, err });
        }),
      ),
    );
    this.rechecking = false;
    if (this.done || seq !== this.wireSeq) return;
    if (refused.length === 0) return this.fail(info);
    for (const { channel, err } of refused) {
      this.channels.delete(channel);
      this.cursor.covered.delete(channel);
      this.host.channelRefused(this, channel, err);
    }
    this.scheduleRestart();
  }
}
