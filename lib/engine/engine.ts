/**
 * The Engine: the only place that knows how events are stored and moved between
 * nodes (ARCHITECTURE §1). `MemoryEngine` keeps everything in process (one node);
 * `RedisEngine` is the production engine on Redis Streams. Both pass the same
 * contract suite in `spec/engine/contract.ts`.
 */
import type { EncodableEvent, Priority, PublisherInfo } from '../protocol/frames.js';

/** How long a channel keeps events for replay: at least the last `count` younger than `seconds`. */
export interface Retention {
  count: number;
  seconds: number;
}

/** Gives the retention of a channel (from its namespace's configuration). */
export type RetentionResolver = (channel: string) => Retention;

export interface PublishRequest {
  tenant: string;
  channel: string;
  event: string;
  /** The event's data, already encoded as JSON. */
  dataJson: string;
  priority?: Priority;
  publisher?: PublisherInfo | null;
  /** Same key on the same channel within 24 h: the first answer, nothing appended. */
  idempotencyKey?: string;
}

export interface PublishResult {
  id: string;
  timestamp: string;
  /** True when an earlier publish with the same idempotency key answered. */
  duplicate: boolean;
}

/** An event as stored in the log. */
export interface LogEvent extends EncodableEvent {
  tenant: string;
}

export interface HistoryQuery {
  /** Events after this id; without it, the latest `limit`. `0-0` means from the start. */
  since?: string;
  limit: number;
}

export interface HistoryResult {
  events: LogEvent[];
  /** False when an event after `since` was trimmed by retention. */
  recovered: boolean;
  /** Id of the channel's latest event, or null if it has none. */
  position: string | null;
}

/** Receives each batch of new events of the whole log, in id order per channel. */
export type LogListener = (events: LogEvent[]) => void;

export interface LogFeed {
  /** The last id read on each shard: pass it to `subscribeLog` to resume. */
  positions(): string[];
  close(): Promise<void>;
}

/** An entry of a consumer group: which shard log it is in, its id and its event. */
export interface GroupEntry {
  shard: number;
  id: string;
  event: LogEvent;
}

export interface GroupReadOptions {
  count?: number;
  /** Wait this long for new entries when none are ready; 0 returns at once. */
  blockMs?: number;
}

export interface ClaimOptions {
  /** Entries pending for longer than this are taken over. */
  minIdleMs: number;
  count?: number;
}

/** A limit on connections held under one name (a user, an IP address, a tenant). */
export interface SlotClaim {
  name: string;
  limit: number;
}

/** The slots a connection holds, for refreshing them. */
export interface HeldSlots {
  names: readonly string[];
  connectionId: string;
}

export interface Engine {
  readonly kind: 'memory' | 'redis';
  /** Number of shard logs; positions arrays have this length. */
  readonly shards: number;

  /** Append an event; acknowledged only once the store has accepted it. */
  publish(req: PublishRequest): Promise<PublishResult>;
  history(tenant: string, channel: string, query: HistoryQuery): Promise<HistoryResult>;
  /** Id of the channel's latest event, or null. */
  position(tenant: string, channel: string): Promise<string | null>;

  /** The node's live feed of every new event, from `from` (positions) or from now. */
  subscribeLog(from: string[] | 'latest', onEvents: LogListener): Promise<LogFeed>;

  /** Create the consumer group on every shard log if it is missing. */
  ensureGroup(group: string, start?: 'beginning' | 'latest'): Promise<void>;
  readGroup(group: string, consumer: string, options?: GroupReadOptions): Promise<GroupEntry[]>;
  ack(group: string, entries: ReadonlyArray<Pick<GroupEntry, 'shard' | 'id'>>): Promise<number>;
  /** Take over entries another consumer left pending for longer than `minIdleMs`. */
  claimStale(group: string, consumer: string, options: ClaimOptions): Promise<GroupEntry[]>;

  /**
   * Take a slot under each claim's name for `connectionId`, counted across every node.
   * Slots expire after `ttlMs` unless refreshed, so a dead node's connections free
   * theirs. Resolves -1 when all were taken, else the index of the first full claim
   * (and then holds none of them).
   */
  acquireSlots(claims: readonly SlotClaim[], connectionId: string, ttlMs: number): Promise<number>;
  refreshSlots(held: readonly HeldSlots[], ttlMs: number): Promise<void>;
  releaseSlots(names: readonly string[], connectionId: string): Promise<void>;

  /** Resolves when the store answers; rejects with `unavailable` otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Idempotency keys are kept for 24 h (PROTOCOL §7). */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_SHARDS = 16;
