/**
 * The configuration file's schema (PROTOCOL §9). Strict: an unknown key or a bad
 * value stops the start with a message naming the setting.
 */
import { z } from 'zod';
import { notificationsOverrideSchema, notificationsSchema } from './notifications.js';

const retention = z.strictObject({
  count: z.number().int().min(1).max(10_000_000),
  seconds: z.number().int().min(1).max(365 * 86400),
});

/** A namespace entry: every key optional, the rest taken from `defaults`. */
const namespacePartial = z.strictObject({
  retention: retention.partial().optional(),
  presence: z.boolean().optional(),
  typing: z.boolean().optional(),
  receipts: z.boolean().optional(),
  anonymous: z.boolean().optional(),
});

const namespaceFull = z.strictObject({
  retention,
  presence: z.boolean(),
  typing: z.boolean(),
  receipts: z.boolean(),
  anonymous: z.boolean(),
});

const limits = z.strictObject({
  max_message_bytes: z.number().int().min(1024).max(16 * 1024 * 1024),
  max_batch_bytes: z.number().int().min(1024).max(64 * 1024 * 1024),
  messages_per_second: z.number().int().min(1).max(100_000),
  connections_per_user: z.number().int().min(1).max(100_000),
  connections_per_ip: z.number().int().min(1).max(1_000_000),
  heartbeat_ms: z.number().int().min(1000).max(600_000),
  pong_timeout_ms: z.number().int().min(100).max(600_000),
  max_queued_bytes: z.number().int().min(16 * 1024).max(1024 * 1024 * 1024),
  sse_comment_ms: z.number().int().min(1000).max(600_000),
  tenant_connections: z.number().int().min(0),
  tenant_messages_per_second: z.number().int().min(0),
});

const redis = z.strictObject({
  key_prefix: z.string().regex(/^[A-Za-z0-9_\-.]{1,64}$/, 'letters, digits, _ - . only'),
  shards: z.number().int().min(1).max(1024),
  log_max_length: z.number().int().min(1000).max(100_000_000),
});

const presence = z.strictObject({
  grace_ms: z.number().int().min(0).max(600_000),
  timeout_ms: z.number().int().min(1000).max(600_000),
});

const NAMESPACE_NAME = /^[A-Za-z0-9_\-.@]{1,128}$/;

export const fileConfigSchema = z.strictObject({
  namespaces: z.record(z.string().regex(NAMESPACE_NAME, 'not a namespace name'), namespacePartial),
  defaults: namespaceFull,
  limits,
  redis,
  presence,
  notifications: notificationsSchema.prefault({}),
});

/** What a `STREAMGATE_CONFIG` file may contain: any part of the defaults. */
export const overrideSchema = z.strictObject({
  namespaces: z.record(z.string().regex(NAMESPACE_NAME, 'not a namespace name'), namespacePartial).optional(),
  defaults: namespaceFull.partial().extend({ retention: retention.partial().optional() }).strict().optional(),
  limits: limits.partial().strict().optional(),
  redis: redis.partial().strict().optional(),
  presence: presence.partial().strict().optional(),
  notifications: notificationsOverrideSchema.optional(),
});

export type FileConfig = z.infer<typeof fileConfigSchema>;
export type FileConfigOverride = z.infer<typeof overrideSchema>;
export type NamespaceSettings = z.infer<typeof namespaceFull>;
export type Limits = z.infer<typeof limits>;
export type RedisSettings = z.infer<typeof redis>;
export type PresenceSettings = z.infer<typeof presence>;
