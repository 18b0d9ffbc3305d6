/**
 * Quiet hours in a user's time zone: whether an instant falls inside them and when
 * they end, through `Intl` (no time zone database of our own).
 */
import type { QuietHours } from '../store/notification-preferences.js';

const DAY_SECONDS = 24 * 60 * 60;
const formats = new Map<string, Intl.DateTimeFormat>();

function format(timeZone: string): Intl.DateTimeFormat {
  let f = formats.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', { timeZone, hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    formats.set(timeZone, f);
  }
  return f;
}

/** Seconds since local midnight at `epochMs` in `timeZone`. */
export function localSecondOfDay(epochMs: number, timeZone: string): number {
  let h = 0;
  let m = 0;
  let s = 0;
  for (const p of format(timeZone).formatToParts(new Date(epochMs))) {
    if (p.type === 'hour') h = Number(p.value);
    else if (p.type === 'minute') m = Number(p.value);
    else if (p.type === 'second') s = Number(p.value);
  }
  return (h % 24) * 3600 + m * 60 + s;
}

const secondsOf = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 3600 + Number(hhmm.slice(3, 5)) * 60;

/** Is local second `t` inside [start, end), the window crossing midnight when end < start? */
function inside(t: number, start: number, end: number): boolean {
  return start < end ? t >= start && t < end : t >= start || t < end;
}

/**
 * When the quiet hours that contain `nowMs` end (epoch ms), or null when `nowMs` is
 * outside them. Across a daylight saving change the end is corrected to the local
 * wall time `end` (or the nearest instant to it when that time does not exist).
 */
export function quietHoursEnd(nowMs: number, quiet: QuietHours): number | null {
  const start = secondsOf(quiet.start);
  const end = secondsOf(quiet.end);
  const now = localSecondOfDay(nowMs, quiet.timeZone);
  if (!inside(now, start, end)) return null;
  const wait = (end - now + DAY_SECONDS) % DAY_SECONDS;
  // Whole seconds: the sub-second part of now is dropped from the local clock.
  let candidate = nowMs - (nowMs % 1000) + wait * 1000;
  for (let i = 0; i < 2; i++) {
    let diff = end - localSecondOfDay(candidate, quiet.timeZone);
    if (diff > DAY_SECONDS / 2) diff -= DAY_SECONDS;
    if (diff < -DAY_SECONDS / 2) diff += DAY_SECONDS;
    if (diff === 0) break;
    candidate += diff * 1000;
  }
  return Math.max(candidate, nowMs);
}
