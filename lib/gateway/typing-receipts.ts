/**
 * Typing indicators and delivered/read receipts (PROTOCOL §4): signals to a channel's
 * other subscribers, never in the log. Typing stops by itself 3 s after the last
 * `start`; read cursors are kept by the engine (and mirrored to the database for
 * unread counts).
 */
import type { UserPrincipal } from '../auth/principal.js';
import { assertMaySubscribe } from '../auth/rules.js';
import { namespaceSettings, type Config } from '../config/config.js';
import type { Engine, ReceiptKind } from '../engine/engine.js';
import { badRequest, forbidden } from '../errors.js';
import { isEventId } from '../protocol/event-id.js';
import { Throttle } from './throttle.js';

/** Typing stops by itself this long after the last `start`. */
export const TYPING_TIMEOUT_MS = 3000;

export interface ReceiptMirror {
  receipt(row: { tenant: string; userId: string; channel: string; kind: ReceiptKind; until: string }): void;
}

export interface TypingReceiptsDeps {
  config: Config;
  engine: Engine;
  mirror?: ReceiptMirror;
  /** The database copy, read when the engine has no cursors for a user (Redis lost them). */
  stored?: { list(tenant: string, userId: string): Promise<Array<{ channel: string; read: string | null; delivered: string | null }>> };
  /** Extra subscribe rule (room membership); resolves or throws `forbidden`. */
  mayRead?(principal: UserPrincipal, channel: string): Promise<void>;
}

export class TypingReceipts {
  private readonly throttle = new Throttle(2);
  /** Auto-stop timers of users typing: tenant\0user\0channel → timer. */
  private readonly typing = new Map<string, NodeJS.Timeout>();

  constructor(private readonly deps: TypingReceiptsDeps) {}

  private async mayRead(principal: UserPrincipal, channel: string): Promise<void> {
    assertMaySubscribe(principal, channel);
    await this.deps.mayRead?.(principal, channel);
  }

  /** `typing` start/stop from a user; throttled to 2 per second per user, the last wins. */
  async typingSignal(principal: UserPrincipal, channel: string, state: unknown): Promise<void> {
    if (state !== 'start' && state !== 'stop') throw badRequest('state: start or stop');
    await this.mayRead(principal, channel);
    if (!namespaceSettings(this.deps.config, channel).typing) throw forbidden(`typing is off for ${channel}`);
    const k = `${principal.tenant}\u0000${principal.userId}\u0000${channel}`;
    const timer = this.typing.get(k);
    if (timer) clearTimeout(timer);
    this.typing.delete(k);
    if (state === 'start') {
      const stop = setTimeout(() => {
        this.typing.delete(k);
        this.throttle.submit(k, () => void this.send(principal, channel, 'stop'));
      }, TYPING_TIMEOUT_MS);
      stop.unref();
      this.typing.set(k, stop);
    }
    this.throttle.submit(k, () => void this.send(principal, channel, state));
  }

  private send(principal: UserPrincipal, channel: string, state: 'start' | 'stop'): Promise<void> {
    // Anonymous namespaces say that someone types, never who.
    const frame: Record<string, unknown> = { type: 'typing', channel };
    if (!namespaceSettings(this.deps.config, channel).anonymous) {
      const user: { id: string; name?: string } = { id: principal.userId };
      if (principal.name !== undefined) user.name = principal.name;
      frame.user = user;
    }
    frame.state = state;
    return this.deps.engine
      .publishSignal({
        tenant: principal.tenant,
        channel,
        kind: 'typing',
        frame: JSON.stringify(frame),
        exceptUser: principal.userId,
      })
      .catch(() => undefined);
  }

  /** `ack` (delivered) or `read` up to an event id. */
  async receipt(principal: UserPrincipal, channel: string, kind: ReceiptKind, until: unknown): Promise<void> {
    if (!isEventId(until)) throw badRequest('until: an event id (<ms>-<seq>)');
    await this.mayRead(principal, channel);
    const moved = await this.deps.engine.receiptSet(principal.tenant, principal.userId, channel, kind, until);
    if (!moved) return;
    this.deps.mirror?.receipt({ tenant: principal.tenant, userId: principal.userId, channel, kind, until });
    const ns = namespaceSettings(this.deps.config, channel);
    if (!ns.receipts || ns.anonymous) return;
    await this.deps.engine.publishSignal({
      tenant: principal.tenant,
      channel,
      kind: 'receipt',
      frame: JSON.stringify({ type: 'receipt', channel, user: { id: principal.userId }, kind, until }),
      exceptUser: principal.userId,
    });
  }

  /**
   * Unread counts: events published by others after the user's read cursor, for each
   * channel with receipts that the user has read in or is a member of (`extraChannels`).
   * Counted up to the retention (at most 1000 per channel).
   */
  async unread(principal: UserPrincipal, extraChannels: readonly string[] = []): Promise<Array<{ channel: string; unread: number }>> {
    let cursors = await this.deps.engine.receiptsGet(principal.tenant, principal.userId);
    if (cursors.length === 0 && this.deps.stored) cursors = await this.deps.stored.list(principal.tenant, principal.userId);
    const read = new Map(cursors.map((c) => [c.channel, c.read]));
    for (const c of extraChannels) if (!read.has(c)) read.set(c, null);
    const candidates = [...read.keys()].filter((c) => namespaceSettings(this.deps.config, c).receipts).sort();
    // Only channels the user may still read (a removed room member sees no counts).
    const allowed = await Promise.all(candidates.map((c) => this.mayRead(principal, c).then(() => true, () => false)));
    const channels = candidates.filter((_, i) => allowed[i]);
    return Promise.all(
      channels.map(async (channel) => {
        const since = read.get(channel) ?? '0-0';
        const { events } = await this.deps.engine.history(principal.tenant, channel, { since, limit: 1000 });
        return { channel, unread: events.filter((e) => e.publisher?.id !== principal.userId).length };
      }),
    );
  }

  close(): void {
    for (const t of this.typing.values()) clearTimeout(t);
    this.typing.clear();
    this.throttle.clear();
  }
}
