/**
 * `Publisher`: append events straight into Redis Streams from an application's own
 * process (an Express handler, a job), with the same script, ids, retention and
 * idempotency as the gateway, and no HTTP hop. Import it as `streamgate/publisher`.
 */
import { loadConfig, namespaceSettings, type LoadOptions } from './config/config.js';
import type { PublishResult } from './engine/engine.js';
import { RedisEngine } from './engine/redis-engine.js';
import { badRequest, tooLarge } from './errors.js';
import { isValidChannel, isValidTenant } from './protocol/channel.js';
import { isPriority, isValidEventName, type Priority, type PublisherInfo } from './protocol/frames.js';

export interface PublisherOptions extends LoadOptions {
  /** Redis URL. @default process.env.REDIS_URL */
  redisUrl?: string;
}

export interface PublishOptions {
  event: string;
  data: unknown;
  priority?: Priority;
  idempotencyKey?: string;
  publisher?: PublisherInfo;
}

export interface PublishedEvent {
  id: string;
  channel: string;
  timestamp: string;
  /** True when an earlier publish with the same idempotency key answered. */
  duplicate: boolean;
}

export class Publisher {
  private constructor(
    private readonly engine: RedisEngine,
    private readonly maxBytes: number,
    private readonly anonymous: (channel: string) => boolean,
  ) {}

  /**
   * Connect to Redis. The configuration (namespaces, retention, key prefix, shards)
   * is read as the gateway reads it, so both agree on where and how long events live.
   */
  static async connect(options: PublisherOptions = {}): Promise<Publisher> {
    const settings = { ...options.settings };
    if (options.redisUrl) settings.redisUrl = options.redisUrl;
    const config = loadConfig({ ...options, settings, server: false });
    if (!config.redisUrl) throw new Error('Publisher needs REDIS_URL (or the redisUrl option)');
    const engine = await RedisEngine.create({
      url: config.redisUrl,
      keyPrefix: config.redis.key_prefix,
      shards: config.redis.shards,
      logMaxLength: config.redis.log_max_length,
      retention: (channel: string) => namespaceSettings(config, channel).retention,
    });
    return new Publisher(engine, config.limits.max_message_bytes, (channel) => namespaceSettings(config, channel).anonymous);
  }

  /** Append one event to `channel` of `tenant`; resolves once Redis has it. */
  async publish(tenant: string, channel: string, options: PublishOptions): Promise<PublishedEvent> {
    if (!isValidTenant(tenant)) throw badRequest('tenant: 1 to 64 of A-Z a-z 0-9 _ - . @');
    if (!isValidChannel(channel)) throw badRequest('channel: 1 to 128 of A-Z a-z 0-9 _ - : . @');
    if (!isValidEventName(options.event)) throw badRequest('event: a name of 1 to 128 of A-Z a-z 0-9 _ - : . @ /');
    if (options.priority !== undefined && !isPriority(options.priority)) throw badRequest('priority: emergency, high, normal or low');
    if (options.data === undefined) throw badRequest('data: required (any JSON value)');
    const dataJson = JSON.stringify(options.data);
    if (Buffer.byteLength(dataJson) > this.maxBytes) throw tooLarge(`data is larger than ${this.maxBytes} bytes`);
    const r: PublishResult = await this.engine.publish({
      tenant,
      channel,
      event: options.event,
      dataJson,
      priority: options.priority ?? 'normal',
      publisher: this.anonymous(channel) ? null : options.publisher ?? null,
      ...(options.idempotencyKey === undefined ? {} : { idempotencyKey: options.idempotencyKey }),
    });
    return { id: r.id, channel, timestamp: r.timestamp, duplicate: r.duplicate };
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}
