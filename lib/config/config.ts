/**
 * Configuration: environment variables plus the configuration file (defaults in
 * `config/default.json`, `STREAMGATE_CONFIG` merged over them), validated once,
 * frozen. Everything else receives a `Config` and never reads `process.env`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { namespaceOf } from '../protocol/channel.js';
import { buildNotificationConfig, mergeNotificationSettings, readNotificationCredentials, type NotificationConfig, type NotificationCredentials } from './notifications.js';
import {
  fileConfigSchema,
  overrideSchema,
  type FileConfig,
  type FileConfigOverride,
  type Limits,
  type NamespaceSettings,
  type RedisSettings,
  type PresenceSettings,
} from './schema.js';

export type { Limits, NamespaceSettings, RedisSettings, FileConfigOverride } from './schema.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface JwtSettings {
  /** HS256 secret. */
  secret?: string;
  /** PEM public key for RS256/ES256. */
  publicKey?: string;
  issuer?: string;
  audience?: string;
  /** True when the secret was generated for development (never in production). */
  generated: boolean;
}

export interface Config {
  nodeEnv: string;
  port: number;
  host: string;
  /** Unset: the in-process memory engine. */
  redisUrl?: string;
  /** Unset: SQLite at `sqliteFile`. */
  databaseUrl?: string;
  sqliteFile: string;
  /** PostgreSQL schema to use (tests isolate themselves with one). */
  databaseSchema?: string;
  jwt: JwtSettings;
  /** When set, `/metrics` needs `Authorization: Bearer <metricsToken>`. */
  metricsToken?: string;
  /** Origins allowed to call the API from a browser page elsewhere (`*`: any). */
  corsOrigins: readonly string[];
  namespaces: Readonly<Record<string, NamespaceSettings>>;
  defaults: NamespaceSettings;
  limits: Limits;
  redis: RedisSettings;
  presence: PresenceSettings;
  /** Notification rules and settings (file), with the credentials (environment). */
  notifications: NotificationConfig;
}

const here = dirname(fileURLToPath(import.meta.url));

/** `config/default.json`, found from both `lib/config` (tsx) and `dist/lib/config`. */
export function defaultConfigPath(): string {
  for (const up of ['../..', '../../..']) {
    const p = resolve(here, up, 'config', 'default.json');
    if (existsSync(p)) return p;
  }
  throw new ConfigError('config/default.json not found');
}

function formatIssues(source: string, error: z.ZodError): string {
  const lines = error.issues.map((i) => {
    const path = i.path.length ? i.path.join('.') : '(root)';
    if (i.code === 'unrecognized_keys') {
      const keys = (i as { keys: string[] }).keys;
      return `  ${keys.map((k) => (i.path.length ? `${path}.${k}` : k)).join(', ')}: unknown setting`;
    }
    return `  ${path}: ${i.message}`;
  });
  return `invalid configuration in ${source}:\n${lines.join('\n')}`;
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read configuration file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ConfigError(`configuration file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Merge an override over the file defaults, validating the override first. */
export function mergeFileConfig(base: FileConfig, override: unknown, source: string): FileConfig {
  const parsed = overrideSchema.safeParse(override);
  if (!parsed.success) throw new ConfigError(formatIssues(source, parsed.error));
  const o: FileConfigOverride = parsed.data;
  const namespaces: FileConfig['namespaces'] = { ...base.namespaces };
  for (const [name, ns] of Object.entries(o.namespaces ?? {})) {
    const prev = namespaces[name] ?? {};
    namespaces[name] = {
      ...prev,
      ...ns,
      ...(prev.retention || ns.retention ? { retention: { ...prev.retention, ...ns.retention } } : {}),
    };
  }
  const merged = {
    namespaces,
    defaults: {
      ...base.defaults,
      ...o.defaults,
      retention: { ...base.defaults.retention, ...o.defaults?.retention },
    },
    limits: { ...base.limits, ...o.limits },
    redis: { ...base.redis, ...o.redis },
    presence: { ...base.presence, ...o.presence },
    notifications: mergeNotificationSettings(base.notifications, o.notifications),
  };
  const full = fileConfigSchema.safeParse(merged);
  if (!full.success) throw new ConfigError(formatIssues(source, full.error));
  return full.data;
}

function loadFileConfig(env: NodeJS.ProcessEnv, override?: unknown): FileConfig {
  const defaultsPath = defaultConfigPath();
  const base = fileConfigSchema.safeParse(readJson(defaultsPath));
  if (!base.success) throw new ConfigError(formatIssues(defaultsPath, base.error));
  let cfg = base.data;
  if (env.STREAMGATE_CONFIG) cfg = mergeFileConfig(cfg, readJson(env.STREAMGATE_CONFIG), env.STREAMGATE_CONFIG);
  if (override !== undefined) cfg = mergeFileConfig(cfg, override, 'options');
  return cfg;
}

function parsePort(value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`PORT: not a port number: ${value}`);
  return n;
}

function checkUrl(name: string, value: string | undefined, protocols: string[]): void {
  if (value === undefined) return;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name}: not a URL`);
  }
  if (!protocols.includes(url.protocol)) throw new ConfigError(`${name}: must start with ${protocols.map((p) => p + '//').join(' or ')}`);
}

/** The development secret, generated once and kept in `<dataDir>/dev-secret` so `streamgate token` can use it. */
function developmentSecret(dataDir: string): string {
  const file = join(dataDir, 'dev-secret');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const secret = randomBytes(32).toString('base64url');
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, secret + '\n', { mode: 0o600 });
  return secret;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** A configuration object merged last, over `STREAMGATE_CONFIG` (Node API, tests). */
  override?: unknown;
  /** Values that take precedence over the environment (Node API, tests). */
  /**
   * False for programs that only publish (`Publisher`): no token secret is needed and
   * production does not insist on a database. @default true
   */
  server?: boolean;
  settings?: Partial<Pick<Config, 'port' | 'host' | 'redisUrl' | 'databaseUrl' | 'sqliteFile' | 'databaseSchema'>> & {
    jwt?: Partial<Omit<JwtSettings, 'generated'>>;
  };
}

/** Build the frozen configuration from the environment and the configuration files. */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const s = options.settings ?? {};
  const file = loadFileConfig(env, options.override);
  const nodeEnv = env.NODE_ENV ?? 'development';
  const production = nodeEnv === 'production';
  const dataDir = resolve(env.STREAMGATE_DATA_DIR ?? './data');

  const redisUrl = s.redisUrl ?? (env.REDIS_URL || undefined);
  const databaseUrl = s.databaseUrl ?? (env.DATABASE_URL || undefined);
  const jwt: JwtSettings = {
    secret: s.jwt?.secret ?? (env.JWT_SECRET || undefined),
    publicKey: s.jwt?.publicKey ?? (env.JWT_PUBLIC_KEY ? env.JWT_PUBLIC_KEY.replace(/\\n/g, '\n') : undefined),
    issuer: s.jwt?.issuer ?? (env.JWT_ISSUER || undefined),
    audience: s.jwt?.audience ?? (env.JWT_AUDIENCE || undefined),
    generated: false,
  };

  if (jwt.secret && jwt.publicKey) {
    throw new ConfigError('JWT_SECRET and JWT_PUBLIC_KEY are both set: choose HS256 (secret) or RS256/ES256 (public key)');
  }
  checkUrl('REDIS_URL', redisUrl, ['redis:', 'rediss:']);
  checkUrl('DATABASE_URL', databaseUrl, ['postgres:', 'postgresql:']);
  const server = options.server ?? true;
  if (production && server) {
    const missing: string[] = [];
    if (!jwt.secret && !jwt.publicKey) missing.push('JWT_SECRET or JWT_PUBLIC_KEY');
    if (!redisUrl) missing.push('REDIS_URL');
    if (!databaseUrl) missing.push('DATABASE_URL');
    if (missing.length) {
      throw new ConfigError(`NODE_ENV=production needs ${missing.join(', ')} (the embedded defaults are for development only)`);
    }
    if (jwt.secret && jwt.secret.length < 32) {
      throw new ConfigError('JWT_SECRET: must be at least 32 characters in production');
    }
  }
  let notificationCredentials: NotificationCredentials;
  try {
    notificationCredentials = readNotificationCredentials(env, { production });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  if (server && !jwt.secret && !jwt.publicKey) {
    jwt.secret = developmentSecret(dataDir);
    jwt.generated = true;
  }

  const config: Config = {
    nodeEnv,
    port: s.port ?? parsePort(env.PORT, 8080),
    host: s.host ?? (env.HOST || '0.0.0.0'),
    redisUrl,
    databaseUrl,
    sqliteFile: s.sqliteFile ?? join(dataDir, 'streamgate.sqlite'),
    databaseSchema: s.databaseSchema ?? (env.DATABASE_SCHEMA || undefined),
    jwt: Object.freeze(jwt),
    metricsToken: env.METRICS_TOKEN || undefined,
    corsOrigins: Object.freeze((env.CORS_ORIGINS ?? '').split(',').map((o) => o.trim()).filter(Boolean)),
    namespaces: Object.freeze(
      Object.fromEntries(
        Object.entries(file.namespaces).map(([name, ns]) => [
          name,
          Object.freeze({
            ...file.defaults,
            ...ns,
            retention: Object.freeze({ ...file.defaults.retention, ...ns.retention }),
          }) as NamespaceSettings,
        ]),
      ),
    ),
    defaults: Object.freeze(file.defaults),
    limits: Object.freeze(file.limits),
    redis: Object.freeze(file.redis),
    presence: Object.freeze(file.presence),
    notifications: buildNotificationConfig(file.notifications, notificationCredentials),
  };
  return Object.freeze(config);
}

/** The settings of a channel's namespace (its entry, or `defaults`). */
export function namespaceSettings(config: Config, channel: string): NamespaceSettings {
  return config.namespaces[namespaceOf(channel)] ?? config.defaults;
}
