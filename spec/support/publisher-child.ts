// Run in a separate process by the Node API spec: publish with `Publisher`, print the answers.
import { Publisher } from '../../lib/publisher.js';

const publisher = await Publisher.connect({
  redisUrl: process.env.REDIS_URL!,
  env: { NODE_ENV: 'production' },
  override: { redis: { key_prefix: process.env.SG_PREFIX!, shards: 4 } },
});
const answers = [];
for (const spec of JSON.parse(process.env.SG_EVENTS!) as Array<{ tenant: string; channel: string; event: string; data: unknown; idempotencyKey?: string }>) {
  answers.push(await publisher.publish(spec.tenant, spec.channel, spec));
}
await publisher.close();
process.stdout.write(JSON.stringify(answers) + '\n');
