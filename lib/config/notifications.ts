/**
 * The `notifications` section of the configuration file and the notification
 * credentials read from the environment (VAPID, FCM, SMTP).
 *
 * Rules say, per namespace, which events notify whom:
 *
 * ```json
 * "rules": {
 *   "user": {"notify": "owner"},
 *   "dm":   {"notify": "participants"},
 *   "room": [{"events": ["message.*"], "notify": "members", "mentions": true},
 *            {"priorities": ["emergency"], "notify": "members"}],
 *   "ops":  {"notify": "none", "mentions": true, "priorities": ["high", "emergency"]}
 * }
 * ```
 *
 * A namespace takes a rule or a list of rules; the first rule whose `events` and
 * `priorities` match the event applies, and a namespace without a matching rule
 * notifies nobody.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { PRIORITIES } from '../protocol/frames.js';

/** Who hears of every matching event. */
export const AUDIENCES = ['owner', 'participants', 'members', 'none'] as const;
export type Audience = (typeof AUDIENCES)[number];

/** The delivery channels a user may turn on and off. */
export const DELIVERY_CHANNELS = ['webpush', 'fcm', 'email'] as const;
export type DeliveryChannel = (typeof DELIVERY_CHANNELS)[number];

const NAMESPACE_NAME = /^[A-Za-z0-9_\-.@]{1,128}$/;
/** An event name, or a prefix ending in `*`. */
const EVENT_PATTERN = /^[A-Za-z0-9_\-:.@/]{0,127}[A-Za-z0-9_\-:.@/*]$/;
/** As long as a namespace name, the default category. */
const CATEGORY = /^[A-Za-z0-9_\-.:@]{1,128}$/;
const HH_MM = /^([01]\d|2[0-3]):[0-5]\d$/;

/** True for names `Intl` knows as time zones (IANA names, `UTC`). */
export function isTimeZone(value: unknown): value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 64) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: value });
    return true;
  } catch {
    return false;
  }
}

export const timeZoneSchema = z.string().refine(isTimeZone, 'not an IANA time zone (e.g. Europe/Paris, UTC)');

/** Quiet hours: `start` to `end` (local `HH:MM`, may cross midnight) in `time_zone`. */
export const quietHoursSchema = z
  .strictObject({
    start: z.string().regex(HH_MM, 'HH:MM, 00:00 to 23:59'),
    end: z.string().regex(HH_MM, 'HH:MM, 00:00 to 23:59'),
    time_zone: timeZoneSchema,
  })
  .refine((q) => q.start !== q.end, 'start and end must differ');

export const notificationRuleSchema = z.strictObject({
  /** `owner`: the id after `<namespace>:`; `participants`: every id after it (`dm:a:b`); `members`: the room's members. */
  notify: z.enum(AUDIENCES).default('none'),
  /** Also tell the users the event mentions (`data.mentions`, `@user` in `data.text`). */
  mentions: z.boolean().default(false),
  /** Only these events (exact names or prefixes ending in `*`); all when absent. */
  events: z.array(z.string().regex(EVENT_PATTERN, 'an event name or a prefix ending in *')).min(1).max(100).optional(),
  /** Only events of these priorities; all when absent. */
  priorities: z.array(z.enum(PRIORITIES)).min(1).optional(),
  /** The preference category of the notifications (default: the namespace; `mention` for mentions). */
  category: z.string().regex(CATEGORY, 'letters, digits, _ - . : @ (1 to 128)').optional(),
});

const ruleOrRules = z.union([notificationRuleSchema, z.array(notificationRuleSchema).min(1).max(20)]);
const rulesSchema = z.record(z.string().regex(NAMESPACE_NAME, 'not a namespace name'), ruleOrRules);

export const DEFAULT_RULES = {
  user: { notify: 'owner' },
  dm: { notify: 'participants' },
  room: { notify: 'members', mentions: true },
} as const;

const digestSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Hour of the day the digest goes out, in `time_zone`. */
  hour: z.number().int().min(0).max(23).default(8),
  time_zone: timeZoneSchema.default('UTC'),
});

const retrySchema = z.strictObject({
  /** Attempts per delivery, the first included. */
  attempts: z.number().int().min(1).max(50).default(5),
  /** First retry delay; each next one doubles. */
  backoff_ms: z.number().int().min(10).max(3_600_000).default(1000),
});

const emailSchema = z.strictObject({
  from: z.string().min(3).max(320).default('Streamgate <no-reply@localhost>'),
  /** Links in emails and push payloads point here (`<base_url>` + `data.url` when relative). */
  base_url: z.url({ protocol: /^https?$/ }).nullable().default(null),
});

/** Days a notification stays in the history; a daily job deletes older ones. */
const historyDaysSchema = z.number().int().min(1).max(36_500);
export const DEFAULT_HISTORY_DAYS = 90;

/** The `notifications` key of the configuration file, every part defaulted. */
export const notificationsSchema = z.strictObject({
  rules: rulesSchema.prefault(() => structuredClone(DEFAULT_RULES) as z.input<typeof rulesSchema>),
  default_quiet_hours: quietHoursSchema.nullable().default(null),
  digest: digestSchema.prefault({}),
  retry: retrySchema.prefault({}),
  email: emailSchema.prefault({}),
  history_days: historyDaysSchema.default(DEFAULT_HISTORY_DAYS),
});

/** What a `STREAMGATE_CONFIG` file may say: any part; `rules` entries replace the namespace's rules. */
export const notificationsOverrideSchema = z.strictObject({
  rules: rulesSchema.optional(),
  default_quiet_hours: quietHoursSchema.nullable().optional(),
  digest: digestSchema.partial().strict().optional(),
  retry: retrySchema.partial().strict().optional(),
  email: emailSchema.partial().strict().optional(),
  history_days: historyDaysSchema.optional(),
});

export type NotificationSettings = z.infer<typeof notificationsSchema>;
export type NotificationSettingsOverride = z.infer<typeof notificationsOverrideSchema>;
export type NotificationRule = z.infer<typeof notificationRuleSchema>;
export type QuietHoursSettings = z.infer<typeof quietHoursSchema>;

/** The defaults, as `notificationsSchema.parse({})` gives them. */
export function defaultNotificationSettings(): NotificationSettings {
  return notificationsSchema.parse({});
}

/**
 * Merge a validated override over settings: each rule entry replaces that
 * namespace's rules, the other sections merge key by key.
 */
export function mergeNotificationSettings(base: NotificationSettings, override: NotificationSettingsOverride | undefined): NotificationSettings {
  if (!override) return base;
  return notificationsSchema.parse({
    rules: { ...base.rules, ...override.rules },
    default_quiet_hours: override.default_quiet_hours === undefined ? base.default_quiet_hours : override.default_quiet_hours,
    digest: { ...base.digest, ...override.digest },
    retry: { ...base.retry, ...override.retry },
    email: { ...base.email, ...override.email },
    history_days: override.history_days ?? base.history_days,
  });
}

export interface VapidCredentials {
  publicKey: string;
  privateKey: string;
  /** `mailto:` or `https:` contact for push services. */
  subject: string;
}

/** The fields of a Google service account key file that firebase-admin needs. */
export interface FcmServiceAccount {
  projectId: string;
  clientEmail: string;
  privateKey: string;
}

export interface NotificationCredentials {
  vapid: VapidCredentials | null;
  fcm: FcmServiceAccount | null;
  /** `smtp://user:pass@host:587` or `smtps://…:465`; null: no email. */
  smtpUrl: string | null;
  /** Extra trusted CA certificates (PEM) for push services and FCM (`NOTIFY_CA_FILE`). */
  extraCa: string | null;
  /** Test hook (`NOTIFY_FCM_ADDRESS`, refused in production): FCM and Google OAuth connections go to this `host:port`. */
  fcmAddress: string | null;
  /** Test hook (`NOTIFY_ALLOW_PRIVATE_ENDPOINTS=1`, refused in production): accept web push endpoints on loopback and private hosts. */
  allowPrivateEndpoints: boolean;
}

/** Settings and credentials: what `runWorker` and the HTTP routes are given. */
export interface NotificationConfig extends NotificationSettings {
  credentials: NotificationCredentials;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

function base64urlBytes(value: string): number {
  return B64URL.test(value) ? Buffer.from(value, 'base64url').length : -1;
}

function readVapid(env: NodeJS.ProcessEnv): VapidCredentials | null {
  const publicKey = env.VAPID_PUBLIC_KEY || undefined;
  const privateKey = env.VAPID_PRIVATE_KEY || undefined;
  const subject = env.VAPID_SUBJECT || undefined;
  if (!publicKey && !privateKey && !subject) return null;
  const missing = [['VAPID_PUBLIC_KEY', publicKey], ['VAPID_PRIVATE_KEY', privateKey], ['VAPID_SUBJECT', subject]]
    .filter(([, v]) => !v)
    .map(([k]) => k);
  if (missing.length) throw new Error(`web push needs ${missing.join(', ')} as well (make keys with: streamgate vapid)`);
  if (base64urlBytes(publicKey!) !== 65) throw new Error('VAPID_PUBLIC_KEY: a base64url P-256 public key (65 bytes)');
  if (base64urlBytes(privateKey!) !== 32) throw new Error('VAPID_PRIVATE_KEY: a base64url P-256 private key (32 bytes)');
  if (!/^(mailto:.+@.+|https:\/\/.+)$/.test(subject!)) throw new Error('VAPID_SUBJECT: a mailto: address or an https: URL');
  return { publicKey: publicKey!, privateKey: privateKey!, subject: subject! };
}

function readFcm(env: NodeJS.ProcessEnv): FcmServiceAccount | null {
  const raw = env.FCM_SERVICE_ACCOUNT || undefined;
  if (!raw) return null;
  let text = raw;
  if (!raw.trimStart().startsWith('{')) {
    // The value may be a mangled key: never echo it (nor an error text that would).
    try {
      text = readFileSync(raw, 'utf8');
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const why = typeof code === 'string' && /^E[A-Z]+$/.test(code) ? ` (${code})` : '';
      throw new Error(`FCM_SERVICE_ACCOUNT: neither service account JSON nor the path of a readable file${why}`);
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error('FCM_SERVICE_ACCOUNT: not JSON (give the service account key JSON or the path of its file)');
  }
  const o = (typeof json === 'object' && json !== null ? json : {}) as Record<string, unknown>;
  const projectId = o.project_id;
  const clientEmail = o.client_email;
  const privateKey = o.private_key;
  if (typeof projectId !== 'string' || typeof clientEmail !== 'string' || typeof privateKey !== 'string') {
    throw new Error('FCM_SERVICE_ACCOUNT: needs project_id, client_email and private_key (a service account key file)');
  }
  return { projectId, clientEmail, privateKey: privateKey.replace(/\\n/g, '\n') };
}

/**
 * The credentials in `env`: `VAPID_PUBLIC_KEY`, `VAPID_PRIVATE_KEY`, `VAPID_SUBJECT`,
 * `FCM_SERVICE_ACCOUNT` (the key JSON itself, or the path of its file), `SMTP_URL`,
 * `NOTIFY_CA_FILE`, and the test hooks `NOTIFY_FCM_ADDRESS` and
 * `NOTIFY_ALLOW_PRIVATE_ENDPOINTS`. Throws an `Error` naming
 * the variable when one is wrong.
 */
export function readNotificationCredentials(env: NodeJS.ProcessEnv, options: { production: boolean }): NotificationCredentials {
  const smtpUrl = env.SMTP_URL || null;
  if (smtpUrl !== null) {
    let url: URL;
    try {
      url = new URL(smtpUrl);
    } catch {
      throw new Error('SMTP_URL: not a URL (smtp://user:password@host:587 or smtps://…:465)');
    }
    if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') throw new Error('SMTP_URL: must start with smtp:// or smtps://');
  }
  let extraCa: string | null = null;
  if (env.NOTIFY_CA_FILE) {
    try {
      extraCa = readFileSync(env.NOTIFY_CA_FILE, 'utf8');
    } catch (err) {
      throw new Error(`NOTIFY_CA_FILE: cannot read ${env.NOTIFY_CA_FILE}: ${(err as Error).message}`);
    }
  }
  const fcmAddress = env.NOTIFY_FCM_ADDRESS || null;
  if (fcmAddress !== null) {
    if (options.production) throw new Error('NOTIFY_FCM_ADDRESS is a test hook: not allowed with NODE_ENV=production');
    if (!/^[A-Za-z0-9.\-]+:\d{1,5}$/.test(fcmAddress)) throw new Error('NOTIFY_FCM_ADDRESS: host:port');
  }
  const allowPrivateEndpoints = env.NOTIFY_ALLOW_PRIVATE_ENDPOINTS === '1' || env.NOTIFY_ALLOW_PRIVATE_ENDPOINTS === 'true';
  if (allowPrivateEndpoints && options.production) throw new Error('NOTIFY_ALLOW_PRIVATE_ENDPOINTS is a test hook: not allowed with NODE_ENV=production');
  return { vapid: readVapid(env), fcm: readFcm(env), smtpUrl, extraCa, fcmAddress, allowPrivateEndpoints };
}

/** Settings plus credentials, frozen. */
export function buildNotificationConfig(settings: NotificationSettings, credentials: NotificationCredentials): NotificationConfig {
  return Object.freeze({ ...settings, credentials: Object.freeze({ ...credentials }) });
}
