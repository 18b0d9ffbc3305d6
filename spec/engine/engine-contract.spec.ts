import { engineContract } from './contract.js';
import { MemoryEngine } from '../../lib/engine/memory-engine.js';
import { RedisEngine } from '../../lib/engine/redis-engine.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';

engineContract('MemoryEngine', async (retention) => {
  const engine = new MemoryEngine({ retention });
  return { engine, cleanup: () => engine.close() };
});

engineContract('RedisEngine', async (retention) => {
  const keyPrefix = uniquePrefix();
  const engine = await RedisEngine.create({ url: testRedisUrl(), keyPrefix, shards: 4, logMaxLength: 100_000, retention });
  return {
    engine,
    cleanup: async () => {
      await engine.close();
      await deleteKeysWithPrefix(keyPrefix);
    },
  };
});
