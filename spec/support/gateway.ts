/**
 * Start real gateways on port 0 for tests: memory or Redis engine, a fresh SQLite
 * file (or a PostgreSQL schema), a known HS256 secret, helpers for tokens and keys.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { createGateway, type Gateway, type GatewayOptions } from '../../lib/gateway.js';
import { signUserToken, type SignOptions } from '../../lib/auth/tokens.js';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-production-use';

export interface TestGateway {
  gateway: Gateway;
  url: string;
  port: number;
  keyPrefix: string;
  token(claims: Partial<SignOptions> & { sub: string; tid: string }): string;
  serverKey(tenant: string): Promise<string>;
  close(): Promise<void>;
}

export interface StartOptions {
  redisUrl?: string;
  databaseUrl?: string;
  databaseSchema?: string;
  override?: GatewayOptions['override'];
  jwt?: { secret?: string; publicKey?: string; issuer?: string; audience?: string };
  keyPrefix?: string;
}

export async function startGateway(options: StartOptions = {}): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'sg-test-'));
  const keyPrefix = options.keyPrefix ?? `sgt-${randomUUID()}`;
  const override = {
    ...(options.override as object | undefined),
    redis: { key_prefix: keyPrefix, shards: 4, ...((options.override as { redis?: object } | undefined)?.redis ?? {}) },
  };
  const gateway = await createGateway({
    env: { NODE_ENV: 'test', STREAMGATE_DATA_DIR: dir },
    override,
    defaultMetrics: false,
    settings: {
      host: '127.0.0.1',
      port: 0,
      sqliteFile: join(dir, 'test.sqlite'),
      ...(options.redisUrl ? { redisUrl: options.redisUrl } : {}),
      ...(options.databaseUrl ? { databaseUrl: options.databaseUrl } : {}),
      ...(options.databaseSchema ? { databaseSchema: options.databaseSchema } : {}),
      jwt: options.jwt ?? { secret: TEST_SECRET },
    },
  });
  const port = await gateway.listen(0, '127.0.0.1');
  return {
    gateway,
    port,
    url: `http://127.0.0.1:${port}`,
    keyPrefix,
    token: (claims) => signUserToken(options.jwt?.secret ?? TEST_SECRET, claims),
    serverKey: async (tenant) => (await gateway.store.keys.create(tenant, 'test')).key,
    close: async () => {
      await gateway.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface JsonResponse {
  status: number;
  headers: Headers;
  body: any;
}

/** fetch with JSON in and out. */
export async function request(
  url: string,
  init: { method?: string; token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<JsonResponse> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  let body: string | undefined;
  if (init.rawBody !== undefined) body = init.rawBody;
  else if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(url, { method: init.method ?? (body === undefined ? 'GET' : 'POST'), headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (metrics)
  }
  return { status: res.status, headers: res.headers, body: parsed };
}
