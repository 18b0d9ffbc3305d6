/**
 * Typing indicators both ways: who is typing on a channel (each entry ends with their
 * `stop`, or by itself 3 s after their last `start`, as the server does), and this
 * client's own typing, throttled to one `start` per 2 s while it goes on.
 */
import type { TypingEvent, TypingUser } from './types.js';

/** Someone is typing for this long after their last `start` (PROTOCOL §4). */
export const TYPING_EXPIRY_MS = 3000;
/** While typing goes on, a `start` is repeated this often: within the expiry, so the indicator stays. */
export const TYPING_REPEAT_MS = 2000;

export class TypingSet {
  private readonly typing = new Map<string, { user: TypingUser; timer: ReturnType<typeof setTimeout> }>();

  constructor(
    private readonly channel: string,
    /** An entry expired without a `stop`. */
    private readonly expired: (event: TypingEvent) => void,
  ) {}

  users(): TypingUser[] {
    return [...this.typing.values()].map((t) => t.user);
  }

  /**
   * A typing frame. Returns the event to hand to the application: every `start`, and a
   * `stop` only for someone typing (one whose entry expired already got theirs).
   */
  frame(raw: { user?: unknown; state?: unknown }): TypingEvent | null {
    const u = raw.user as { id?: unknown; name?: unknown } | undefined;
    if (!u || typeof u.id !== 'string' || (raw.state !== 'start' && raw.state !== 'stop')) return null;
    const user: TypingUser = { id: u.id, name: typeof u.name === 'string' ? u.name : null };
    const was = this.typing.get(user.id);
    if (was) clearTimeout(was.timer);
    if (raw.state === 'stop') {
      if (!was) return null;
      this.typing.delete(user.id);
      return { channel: this.channel, user, state: 'stop' };
    }
    const timer = setTimeout(() => {
      if (this.typing.get(user.id)?.timer !== timer) return;
      this.typing.delete(user.id);
      this.expired({ channel: this.channel, user, state: 'stop', expired: true });
    }, TYPING_EXPIRY_MS);
    this.typing.set(user.id, { user, timer });
    return { channel: this.channel, user, state: 'start' };
  }

  clear(): void {
    for (const t of this.typing.values()) clearTimeout(t.timer);
    this.typing.clear();
  }
}

/** This client's typing per channel: when each `start` was sent (none: not typing). */
export class TypingThrottle {
  private readonly startedAt = new Map<string, number>();

  /** What to send for `typing(channel, typing)` now, if anything. */
  next(channel: string, typing: boolean, now = Date.now()): 'start' | 'stop' | null {
    const last = this.startedAt.get(channel);
    if (!typing) {
      if (last === undefined) return null;
      this.startedAt.delete(channel);
      return 'stop';
    }
    if (last !== undefined && now - last < TYPING_REPEAT_MS) return null;
    this.startedAt.set(channel, now);
    return 'start';
  }

  /** A `start` did not go through: the next call sends one. */
  forget(channel: string): void {
    this.startedAt.delete(channel);
  }
}
