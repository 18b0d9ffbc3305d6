/**
 * `Publisher`: append events straight into Redis Streams from an application's own
 * process (an Express handler, a job), with the same script, ids, retention and
 * idempotency as the gateway, and no HTTP hop. Import it as `streamgate/publisher`.
 */
import { loadConfig, namespaceSettings, type LoadOptions } from './config/config.js';
import type { Engine, PublishResult } from './engine/engine.js';
import { createEngine } from './engines.js';
import { badRequest } from './errors.js';
import { assertChannel, parseEventInput } from './gateway/event-input.js';
import { isValidTenant } from './protocol/channel.js';
import type { Priority, PublisherInfo } from './protocol/frames.js';

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
    private readonly engine: Engine,
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
    const engine = await createEngine(config);
    return new Publisher(engine, config.limits.max_message_bytes, (channel) => namespaceSettings(config, channel).anonymous);
  }

  /** Append one event to `channel` of `tenant`; resolves once Redis has it. */
  async publish(tenant: string, channel: string, options: PublishOptions): Promise<PublishedEvent> {
    if (!isValidTenant(tenant)) throw badRequest('tenant: 1 to 64 of A-Z a-z 0-9 _ - . @');
    assertChannel(channel);
    const input = parseEventInput(
      {
        event: options.event,
        data: options.data,
        priority: options.priority,
        idempotency_key: options.idempotencyKey,
        publisher: options.publisher,
      },
      this.maxBytes,
    );
    const r: PublishResult = await this.engine.publish({
      tenant,
      channel,
      event: input.event,
      dataJson: input.dataJson,
      priority: input.priority,
      publisher: this.anonymous(channel) ? null : input.publisher ?? null,
      ...(input.idempotencyKey === undefined ? {} : { idempotencyKey: input.idempotencyKey }),
    });
    return { id: r.id, channel, timestamp: r.timestamp, duplicate: r.duplicate };
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}
