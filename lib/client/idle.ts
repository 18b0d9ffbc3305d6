/**
 * Idle detection for `away`: no activity (mouse, keyboard, touch, wheel, the page
 * becoming visible) for `awayAfterMs` makes the user idle; the next activity ends it.
 * One timer, re-armed lazily: activity only records the time, so a stream of
 * `mousemove` events costs nothing.
 */
import type { ActivitySource } from './types.js';

/** @default awayAfterMs in a browser. */
export const DEFAULT_AWAY_AFTER_MS = 300_000;

const ACTIVITY_EVENTS = ['mousemove', 'mousedown', 'keydown', 'touchstart', 'wheel', 'pointerdown'] as const;

interface EventTargetLike {
  addEventListener(type: string, listener: () => void, options?: { passive?: boolean; capture?: boolean }): void;
  removeEventListener(type: string, listener: () => void, options?: { capture?: boolean }): void;
}

/** The page's own activity, when there is a page (document and window); else null. */
export function pageActivitySource(): ActivitySource | null {
  const g = globalThis as { window?: EventTargetLike; document?: EventTargetLike & { visibilityState?: string } };
  const { window: win, document: doc } = g;
  if (!win || !doc || typeof win.addEventListener !== 'function' || typeof doc.addEventListener !== 'function') return null;
  return {
    listen(onActivity) {
      const visible = () => {
        if (doc.visibilityState !== 'hidden') onActivity();
      };
      for (const type of ACTIVITY_EVENTS) win.addEventListener(type, onActivity, { passive: true, capture: true });
      doc.addEventListener('visibilitychange', visible);
      return () => {
        for (const type of ACTIVITY_EVENTS) win.removeEventListener(type, onActivity, { capture: true });
        doc.removeEventListener('visibilitychange', visible);
      };
    },
  };
}

export class IdleWatcher {
  private lastActivity = Date.now();
  private idleNow = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopListening: (() => void) | null = null;

  constructor(
    private readonly awayAfterMs: number,
    private readonly source: ActivitySource,
    /** Idle began (true) or ended (false). */
    private readonly changed: (idle: boolean) => void,
  ) {}

  get idle(): boolean {
    return this.idleNow;
  }

  start(): void {
    if (this.stopListening) return;
    this.lastActivity = Date.now();
    this.stopListening = this.source.listen(() => this.activity());
    this.arm(this.awayAfterMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.stopListening?.();
    this.stopListening = null;
  }

  /** The user did something (also: the application said they are online). */
  activity(): void {
    if (!this.stopListening) return;
    this.lastActivity = Date.now();
    if (!this.idleNow) return;
    this.idleNow = false;
    this.arm(this.awayAfterMs);
    this.changed(false);
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), ms);
  }

  private check(): void {
    this.timer = undefined;
    const quiet = Date.now() - this.lastActivity;
    if (quiet < this.awayAfterMs) return this.arm(this.awayAfterMs - quiet);
    this.idleNow = true;
    this.changed(true);
  }
}
