/**
 * At most `perSecond` actions per key per second; extra ones are coalesced and the last
 * one wins (PROTOCOL §4: presence and typing updates, 2 per second per user).
 */
const MAX_KEYS = 10_000;

export class Throttle {
  private readonly state = new Map<string, { times: number[]; pending: (() => void) | null; timer: NodeJS.Timeout | null }>();

  constructor(private readonly perSecond: number) {}

  submit(key: string, action: () => void): void {
    const now = Date.now();
    let s = this.state.get(key);
    if (!s) this.state.set(key, (s = { times: [], pending: null, timer: null }));
    s.times = s.times.filter((t) => now - t < 1000);
    if (s.times.length < this.perSecond && !s.timer) {
      s.times.push(now);
      action();
      if (this.state.size > MAX_KEYS) this.forgetIdle(now);
      return;
    }
    s.pending = action;
    if (!s.timer) {
      const wait = Math.max(1, 1000 - (now - s.times[0]!));
      s.timer = setTimeout(() => {
        const st = this.state.get(key);
        if (!st) return;
        st.timer = null;
        const next = st.pending;
        st.pending = null;
        if (next) this.submit(key, next);
      }, wait);
      s.timer.unref();
    }
  }

  /** Bounded memory: keys with nothing pending and no action in the last second go. */
  private forgetIdle(now: number): void {
    for (const [k, v] of this.state) if (!v.timer && !v.pending && v.times.every((t) => now - t >= 1000)) this.state.delete(k);
  }

  clear(): void {
    for (const s of this.state.values()) if (s.timer) clearTimeout(s.timer);
    this.state.clear();
  }
}
