/**
 * Event ids have the Redis Stream form `<milliseconds>-<sequence>`. They compare as
 * pairs of integers, never as strings (`…-9` < `…-10`).
 */

const ID_RE = /^(\d{1,16})-(\d{1,16})$/;

export function isEventId(value: unknown): value is string {
  return typeof value === 'string' && ID_RE.test(value);
}

/** Negative, zero or positive as `a` is before, equal to or after `b`. */
export function compareIds(a: string, b: string): number {
  const da = a.indexOf('-');
  const db = b.indexOf('-');
  const ma = Number(a.slice(0, da));
  const mb = Number(b.slice(0, db));
  if (ma !== mb) return ma < mb ? -1 : 1;
  const sa = Number(a.slice(da + 1));
  const sb = Number(b.slice(db + 1));
  return sa === sb ? 0 : sa < sb ? -1 : 1;
}

/** Milliseconds part of an id. */
export function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

export const ZERO_ID = '0-0';
