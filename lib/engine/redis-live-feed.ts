/**
 * A node's live feed on Redis: one blocking `XREAD` over every shard log, on its own
 * connection, from stored positions (ARCHITECTURE §2, STYLE §10). On errors it backs
 * off and resumes from the same positions, so an outage loses nothing that is in the
 * log. Also the parsers of stream replies, which the engine shares.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { idTime } from '../protocol/event-id.js';
import { isPriority, type PublisherInfo } from '../protocol/frames.js';
import type { LogEvent, LogFeed, LogListener } from './engine.js';

/** Entries per shard per read. */
const READ_COUNT = 1000;
/** How long one XREAD waits for new entries. */
export const FEED_BLOCK_MS = 2000;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

/** Fields of one stream entry as a flat `[name, value, …]` array; `tenant`/`channel` come from the caller for channel streams. */
export function entryToEvent(id: string, fields: unknown, tenant?: string, channel?: string): LogEvent | null {
  if (!Array.isArray(fields)) return null;
  let t = tenant;
  let c = channel;
  let event = '';
  let dataJson = 'null';
  let priority: LogEvent['priority'] = 'normal';
  let publisher: PublisherInfo | null = null;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const value = String(fields[i + 1]);
    switch (String(fields[i])) {
      case 'tenant': t = value; break;
      case 'channel': c = value; break;
      case 'event': event = value; break;
      case 'data': dataJson = value; break;
      case 'priority': if (isPriority(value)) priority = value; break;
      case 'publisher': publisher = parsePublisher(value); break;
    }
  }
  if (t === undefined || c === undefined) return null;
  return {
    tenant: t,
    id,
    channel: c,
    event,
    dataJson,
    timestamp: new Date(idTime(id)).toISOString(),
    priority,
    publisher,
  };
}

function parsePublisher(json: string): PublisherInfo | null {
  if (json === '') return null;
  try {
    const p: unknown = JSON.parse(json);
    return p !== null && typeof p === 'object' && typeof (p as PublisherInfo).id === 'string' ? (p as PublisherInfo) : null;
  } catch {
    return null;
  }
}

/** An `XRANGE`-shaped reply, `[[id, fields], …]`; deleted entries (`fields` null) are skipped. */
export function parseEntries(reply: unknown, tenant?: string, channel?: string): LogEvent[] {
  const events: LogEvent[] = [];
  if (!Array.isArray(reply)) return events;
  for (const entry of reply) {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string') continue;
    const e = entryToEvent(entry[0], entry[1], tenant, channel);
    if (e) events.push(e);
  }
  return events;
}

export interface StreamRead {
  key: string;
  events: LogEvent[];
  /** Id of the last entry read, also when it could not be parsed: where to resume. */
  lastId: string | null;
}

/** An `XREAD`/`XREADGROUP` reply, `[[key, entries], …]` or null. */
export function parseReadReply(reply: unknown): StreamRead[] {
  const out: StreamRead[] = [];
  if (!Array.isArray(reply)) return out;
  for (const stream of reply) {
    if (!Array.isArray(stream) || typeof stream[0] !== 'string') continue;
    const entries: unknown = stream[1];
    const last: unknown = Array.isArray(entries) && entries.length > 0 ? entries[entries.length - 1] : null;
    const lastId = Array.isArray(last) && typeof last[0] === 'string' ? last[0] : null;
    out.push({ key: stream[0], events: parseEntries(entries), lastId });
  }
  return out;
}

/** 100 ms doubling to 5 s, with equal jitter so nodes do not retry in step. */
function backoffMs(failures: number): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(failures - 1, 16));
  return base / 2 + Math.random() * (base / 2);
}

export class RedisLiveFeed implements LogFeed {
  private readonly conn: Redis;
  private readonly keys: readonly string[];
  private readonly shardOfKey: Map<string, number>;
  private readonly current: string[];
  private readonly listener: LogListener;
  private readonly stop = new AbortController();
  private readonly loop: Promise<void>;
  private readonly onClose: (feed: RedisLiveFeed) => void;

  /**
   * Starts reading at once. `conn` is a connected connection the feed owns and
   * disconnects on close; `from` holds one concrete id per shard log in `keys`.
   */
  constructor(conn: Redis, keys: readonly string[], from: readonly string[], listener: LogListener, onClose: (feed: RedisLiveFeed) => void) {
    this.conn = conn;
    this.keys = keys;
    this.shardOfKey = new Map(keys.map((k, i) => [k, i]));
    this.current = [...from];
    this.listener = listener;
    this.onClose = onClose;
    this.loop = this.run();
  }

  positions(): string[] {
    return [...this.current];
  }

  async close(): Promise<void> {
    if (!this.stop.signal.aborted) {
      this.stop.abort();
      // Ends the blocked XREAD at once instead of waiting up to FEED_BLOCK_MS.
      this.conn.disconnect();
      this.onClose(this);
    }
    await this.loop;
  }

  private async run(): Promise<void> {
    const signal = this.stop.signal;
    let failures = 0;
    while (!signal.aborted) {
      let reply: unknown;
      try {
        reply = await this.conn.call('XREAD', 'COUNT', READ_COUNT, 'BLOCK', FEED_BLOCK_MS, 'STREAMS', ...this.keys, ...this.current);
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        // A read that never answers is a dead socket the OS has not noticed: reconnect.
        if (err instanceof Error && err.message.includes('timed out')) this.conn.disconnect(true);
        failures++;
        try {
          await sleep(backoffMs(failures), undefined, { signal });
        } catch {
          break;
        }
        continue;
      }
      if (signal.aborted) break;
      this.deliver(reply);
    }
  }

  private deliver(reply: unknown): void {
    let batch: LogEvent[] | undefined;
    for (const { key, events, lastId } of parseReadReply(reply)) {
      const shard = this.shardOfKey.get(key);
      if (shard === undefined || lastId === null) continue;
      this.current[shard] = lastId;
      if (events.length > 0) batch = batch ? batch.concat(events) : events;
    }
    if (!batch) return;
    try {
      this.listener(batch);
    } catch {
      // A listener's bug must not stop the node's feed; the listener reports its own errors.
    }
  }
}
