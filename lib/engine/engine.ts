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

/**
 * An ephemeral frame (presence, typing, receipt) for the subscribers of a channel on
 * every node. Never stored, never replayed.
 */
export interface Signal {
  tenant: string;
  channel: string;
  /** The frame's `type`. */
  kind: string;
  /** The encoded frame. */
  frame: string;
  /** Not delivered to this user's connections (a typer never sees their own typing). */
  exceptUser?: string;
}

export type SignalListener = (signal: Signal) => void;

/** One connection's presence in a channel. */
export interface PresenceEntry {
  connectionId: string;
  userId: string;
  name?: string;
  device: string | null;
}

/** Where a connection's presence entry lives, for refreshing it. */
export interface PresenceRef {
  tenant: string;
  channel: string;
  connectionId: string;
  userId: string;
}

/** A user's own presence settings and last sighting. */
export interface UserState {
  status?: 'online' | 'away' | 'busy';
  customStatus?: string | null;
  device?: string | null;
  lastSeen?: string;
}

export interface UserPresence extends UserState {
  id: string;
  /** True while any connection of the user is live (or within its grace period). */
  online: boolean;
}

export type ReceiptKind = 'delivered' | 'read';

export interface ReadCursor {
  channel: string;
  delivered: string | null;
  read: string | null;
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

  /** Send a signal to the channel's subscribers on every node (through `subscribeSignals`). */
  publishSignal(signal: Signal): Promise<void>;
  /** This node's feed of every signal, its own included. */
  subscribeSignals(listener: SignalListener): Promise<{ close(): Promise<void> }>;

  /**
   * Add (or renew) a connection's presence in a channel for `ttlMs`. `first` is true
   * when the user had no other live entry there (a join to announce); `count` is the
   * number of distinct users present after it.
   */
  presenceJoin(tenant: string, channel: string, entry: PresenceEntry, ttlMs: number): Promise<{ first: boolean; count: number }>;
  /** Renew entries (the holding node, every few seconds), or shorten them to a grace period on close. */
  presenceTouch(refs: readonly PresenceRef[], ttlMs: number): Promise<void>;
  /**
   * Remove the channel's expired entries; `left` are the users who have no live entry
   * any more (a leave to announce: exactly one sweeping node gets each), `count` the
   * distinct users still present.
   */
  presenceSweep(tenant: string, channel: string): Promise<{ left: PresenceEntry[]; count: number; changed: boolean }>;
  /** The live entries of a channel. */
  presenceList(tenant: string, channel: string): Promise<PresenceEntry[]>;
  /** Channels where the user joined presence lately (for status updates to reach them). */
  userChannels(tenant: string, userId: string): Promise<string[]>;
  /**
   * Mark connections live for their users (`usersGet` online), for `ttlMs`; a grace
   * period on close. A `renewal` (the holding node, every few seconds) only pushes the
   * expiries forward; expired connections are pruned when one opens or closes.
   */
  connectionsTouch(refs: ReadonlyArray<Omit<PresenceRef, 'channel'>>, ttlMs: number, options?: { renewal?: boolean }): Promise<void>;
  /** Change a user's own settings (`undefined` fields are kept). */
  userSet(tenant: string, userId: string, state: UserState): Promise<void>;
  /** Many users at once, in one round trip. */
  usersGet(tenant: string, userIds: readonly string[]): Promise<UserPresence[]>;

  /** Move a read cursor forward (never back); resolves true when it moved. */
  receiptSet(tenant: string, userId: string, channel: string, kind: ReceiptKind, until: string): Promise<boolean>;
  /** Every read cursor of a user. */
  receiptsGet(tenant: string, userId: string): Promise<ReadCursor[]>;

  /** Resolves when the store answers; rejects with `unavailable` otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Idempotency keys are kept for 24 h (PROTOCOL §7). */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_SHARDS = 16;
