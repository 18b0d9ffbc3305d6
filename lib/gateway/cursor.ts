/**
 * The cursor of SSE and long-polling (PROTOCOL §1): the last event delivered on each
 * channel of a connection, opaque to clients, stateless and valid on every node.
 * Channel names are not spelled out: each is a 6-byte hash, followed by its event id as
 * two varints, base64url-encoded. 100 channels take about 1.9 KiB (limit 4 KiB).
 */
import { createHash } from 'node:crypto';
import { badRequest } from '../errors.js';
import { isEventId } from '../protocol/event-id.js';

const VERSION = 1;
const HASH_BYTES = 6;
/** Channels one SSE stream or poll may carry (so a cursor stays under 4 KiB). */
export const MAX_CURSOR_CHANNELS = 100;

/** Hashes of recently seen channels: an SSE stream rehashes its channel on every event otherwise. */
const hashes = new Map<string, string>();
const MAX_CACHED_HASHES = 10_000;

function channelHashHex(channel: string): string {
  let hex = hashes.get(channel);
  if (hex === undefined) {
    hex = createHash('sha256').update(channel).digest().subarray(0, HASH_BYTES).toString('hex');
    if (hashes.size >= MAX_CACHED_HASHES) hashes.clear();
    hashes.set(channel, hex);
  }
  return hex;
}

function pushVarint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
}

function readVarint(buf: Buffer, at: { i: number }): number {
  let n = 0;
  let mul = 1;
  for (let k = 0; k < 8; k++) {
    if (at.i >= buf.length) throw new Error('truncated');
    const b = buf[at.i++]!;
    n += (b & 0x7f) * mul;
    if (b < 0x80) return n;
    mul *= 0x80;
  }
  throw new Error('varint too long');
}

/** The positions of a connection's channels; `null` means "no event yet, start live". */
export class Cursor {
  private readonly byHash = new Map<string, string>();

  /** Parse a client's cursor; throws `bad_request` when it is not one of ours. */
  static decode(text: string): Cursor {
    const cursor = new Cursor();
    if (text === '') return cursor;
    try {
      if (!/^[A-Za-z0-9_-]+$/.test(text) || text.length > 8192) throw new Error('not base64url');
      const buf = Buffer.from(text, 'base64url');
      if (buf[0] !== VERSION) throw new Error('unknown version');
      const at = { i: 1 };
      while (at.i < buf.length) {
        if (at.i + HASH_BYTES > buf.length) throw new Error('truncated');
        const hash = buf.subarray(at.i, at.i + HASH_BYTES).toString('hex');
        at.i += HASH_BYTES;
        const ms = readVarint(buf, at);
        const seq = readVarint(buf, at);
        cursor.byHash.set(hash, `${ms}-${seq}`);
      }
    } catch (err) {
      throw badRequest(`not a valid cursor (${(err as Error).message})`);
    }
    return cursor;
  }

  /** The last event id delivered on `channel`, or undefined when the cursor has none. */
  get(channel: string): string | undefined {
    return this.byHash.get(channelHashHex(channel));
  }

  set(channel: string, id: string): void {
    if (!isEventId(id)) return;
    this.byHash.set(channelHashHex(channel), id);
  }

  /** Keep only the positions of `channels` (a stream's current set). */
  retain(channels: readonly string[]): void {
    const keep = new Set(channels.map(channelHashHex));
    for (const h of this.byHash.keys()) if (!keep.has(h)) this.byHash.delete(h);
  }

  encode(): string {
    const out: number[] = [VERSION];
    for (const [hash, id] of this.byHash) {
      for (const b of Buffer.from(hash, 'hex')) out.push(b);
      const dash = id.indexOf('-');
      pushVarint(out, Number(id.slice(0, dash)));
      pushVarint(out, Number(id.slice(dash + 1)));
    }
    return Buffer.from(out).toString('base64url');
  }

  clone(): Cursor {
    const c = new Cursor();
    for (const [h, id] of this.byHash) c.byHash.set(h, id);
    return c;
  }
}
