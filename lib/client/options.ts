/**
 * `connect()` options: the user's merged over the defaults, validated once, frozen;
 * a bad or conflicting option fails at once with a message that names it.
 */
import type { BackoffOptions } from './backoff.js';
import { DEFAULT_AWAY_AFTER_MS, pageActivitySource } from './idle.js';
import { TokenSource } from './token.js';
import type { TransportContext } from './transport.js';
import type { ActivitySource, ConnectOptions, StorageLike, TimeoutOptions, TransportName } from './types.js';

export const DEFAULT_TIMEOUTS: Readonly<Required<TimeoutOptions>> = Object.freeze({
  connectMs: 10_000,
  requestMs: 15_000,
  pongMs: 5_000,
  pollSeconds: 25,
  stableMs: 10_000,
  retryBetterMs: 60_000,
});

const TRANSPORT_NAMES: readonly TransportName[] = ['websocket', 'sse', 'poll'];

export interface ResolvedOptions {
  ctx: TransportContext;
  preferred: readonly TransportName[];
  backoff: BackoffOptions;
  /** undefined: the default storage; null: this client's own memory. */
  storage: StorageLike | null | undefined;
  maxQueuedPublishes: number;
  /** Idle detection, or null when off (0, or no page and no source). */
  idle: { awayAfterMs: number; source: ActivitySource } | null;
  autoAck: boolean;
}

function fail(message: string): never {
  throw new TypeError(`connect: ${message}`);
}

/** `ws:` → `http:`, no trailing slash: the base every route is appended to. */
function baseUrlOf(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    fail(`url is not an absolute URL: ${JSON.stringify(url)}`);
  }
  const protocol = ({ 'ws:': 'http:', 'wss:': 'https:', 'http:': 'http:', 'https:': 'https:' } as Record<string, string>)[u.protocol];
  if (!protocol) fail(`url must be http(s) or ws(s), not ${u.protocol}`);
  return `${protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

function positive(name: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) fail(`${name} must be a positive number`);
}

export function resolveOptions(options: ConnectOptions): ResolvedOptions {
  if (!options || typeof options !== 'object') fail('options are required');
  if (typeof options.url !== 'string') fail('url is required');
  if (options.token === undefined && options.getToken === undefined) fail('token or getToken is required');
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token === '')) fail('token must be a non-empty string');
  if (options.getToken !== undefined && typeof options.getToken !== 'function') fail('getToken must be a function');
  const preferred = [...new Set(options.transports ?? TRANSPORT_NAMES)];
  if (preferred.length === 0) fail('transports must name at least one transport');
  for (const t of preferred) if (!TRANSPORT_NAMES.includes(t)) fail(`unknown transport ${JSON.stringify(t)} (websocket, sse, poll)`);

  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  for (const [k, v] of Object.entries(timeouts)) positive(`timeouts.${k}`, v);
  timeouts.pollSeconds = Math.min(30, Math.max(1, Math.round(timeouts.pollSeconds)));
  const backoff = { ...options.backoff };
  if (backoff.baseMs !== undefined) positive('backoff.baseMs', backoff.baseMs);
  if (backoff.maxMs !== undefined) positive('backoff.maxMs', backoff.maxMs);
  if (backoff.baseMs !== undefined && backoff.maxMs !== undefined && backoff.maxMs < backoff.baseMs) fail('backoff.maxMs is below backoff.baseMs');
  const maxQueuedPublishes = options.maxQueuedPublishes ?? 1000;
  if (!Number.isInteger(maxQueuedPublishes) || maxQueuedPublishes < 0) fail('maxQueuedPublishes must be a whole number');

  if (options.idle !== undefined && (typeof options.idle !== 'object' || options.idle === null)) fail('idle must be an object');
  const awayAfterMs = options.idle?.awayAfterMs;
  if (awayAfterMs !== undefined && (typeof awayAfterMs !== 'number' || !Number.isFinite(awayAfterMs) || awayAfterMs < 0)) fail('idle.awayAfterMs must be 0 (off) or a positive number');
  const source = options.idle?.source;
  if (source !== undefined && (typeof source !== 'object' || source === null || typeof source.listen !== 'function')) fail('idle.source must have a listen(onActivity) method');
  const activity = source ?? pageActivitySource();
  const away = awayAfterMs ?? DEFAULT_AWAY_AFTER_MS;
  const idle = activity && away > 0 ? Object.freeze({ awayAfterMs: away, source: activity }) : null;
  if (options.autoAck !== undefined && typeof options.autoAck !== 'boolean') fail('autoAck must be a boolean');

  const g = globalThis as Partial<Pick<TransportContext, 'WebSocket' | 'EventSource' | 'fetch'>>;
  const ctx: TransportContext = {
    baseUrl: baseUrlOf(options.url),
    tokens: new TokenSource(options.token, options.getToken, timeouts.requestMs),
    fetch: options.fetch ?? (typeof g.fetch === 'function' ? g.fetch.bind(globalThis) : undefined),
    WebSocket: options.WebSocket ?? g.WebSocket,
    EventSource: options.EventSource ?? g.EventSource,
    timeouts: Object.freeze(timeouts),
    device: options.device,
  };
  return Object.freeze({
    ctx,
    preferred: Object.freeze(preferred),
    backoff: Object.freeze(backoff),
    storage: options.storage,
    maxQueuedPublishes,
    idle,
    autoAck: options.autoAck ?? false,
  });
}
