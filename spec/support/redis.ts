/**
 * The shared test Redis (REDIS_URL) and unique key prefixes, so suites never see each
 * other's keys and never need FLUSHALL (STYLE §12).
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';

/** `REDIS_URL`, or the local default `redis://127.0.0.1:6379`. */
export function testRedisUrl(): string {
  return process.env.REDIS_URL || 'redis://127.0.0.1:6379';
}

/** A key prefix no other test uses: `sgt-<uuid>`. */
export function uniquePrefix(): string {
  return `sgt-${randomUUID()}`;
}

/** Deletes every key `<prefix>:*` (SCAN, never KEYS or FLUSHALL). Returns how many. */
export async function deleteKeysWithPrefix(prefix: string, url: string = testRedisUrl()): Promise<number> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  let deleted = 0;
  try {
    await redis.connect();
    // Glob characters in a prefix would widen the match: escape them.
    const pattern = prefix.replace(/[*?[\]\\]/g, '\\$&') + ':*';
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      // UNLINK one key at a time: keys of different hash slots cannot share a command on a cluster.
      if (keys.length > 0) {
        const pipeline = redis.pipeline();
        for (const key of keys) pipeline.unlink(key);
        await pipeline.exec();
        deleted += keys.length;
      }
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return deleted;
}
