/**
 * Build the configured engine: Redis when `REDIS_URL` is set, else the in-process
 * memory engine. Shared by the gateway and `Publisher` so both store events alike.
 */
import { namespaceSettings, type Config } from './config/config.js';
import type { Engine } from './engine/engine.js';
import { MemoryEngine } from './engine/memory-engine.js';
import { RedisEngine } from './engine/redis-engine.js';

export function createEngine(config: Config): Promise<Engine> | Engine {
  const retention = (channel: string) => namespaceSettings(config, channel).retention;
  if (!config.redisUrl) return new MemoryEngine({ retention, logMaxLength: config.redis.log_max_length });
  return RedisEngine.create({
    url: config.redisUrl,
    keyPrefix: config.redis.key_prefix,
    shards: config.redis.shards,
    logMaxLength: config.redis.log_max_length,
    retention,
  });
}
