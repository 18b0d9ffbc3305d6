/**
 * Web push through the `web-push` library: VAPID-signed, aes128gcm-encrypted
 * requests to the subscription's push service.
 */
import type { Agent } from 'node:https';
import webpush from 'web-push';
import type { VapidCredentials } from '../config/notifications.js';
import type { Priority } from '../protocol/frames.js';
import type { WebPushSubscription } from '../store/push-targets.js';
import { BlockedAddressError } from './address-guard.js';

export interface WebPushSenderOptions {
  vapid: VapidCredentials;
  /** An `https.Agent` for push service connections (a test CA, a proxy). */
  agent?: Agent;
  /** @default 10000 */
  timeoutMs?: number;
}

/**
 * `sent`; `gone`: the push service no longer knows the subscription (404/410, it
 * expired or was unsubscribed): delete it; `blocked`: the endpoint is not a public
 * address (or port) and is never posted to.
 */
export type WebPushOutcome = 'sent' | 'gone' | 'blocked';

/**
 * A push service's answer other than 2xx, 404 and 410, or no answer: worth a retry.
 * `message` holds the detail (for the worker log); `publicReason` is what users may
 * see, never network error text.
 */
export class PushServiceError extends Error {
  constructor(
    message: string,
    readonly statusCode: number | null,
    readonly publicReason: string,
  ) {
    super(message);
    this.name = 'PushServiceError';
  }
}

const URGENCY: Record<Priority, 'low' | 'normal' | 'high'> = { emergency: 'high', high: 'high', normal: 'normal', low: 'low' };
/** Push services keep an undelivered message this long (seconds). */
const TTL_SECONDS = 24 * 60 * 60;

export class WebPushSender {
  private readonly options: Readonly<WebPushSenderOptions>;

  constructor(options: WebPushSenderOptions) {
    this.options = Object.freeze({ ...options });
  }

  get publicKey(): string {
    return this.options.vapid.publicKey;
  }

  async send(subscription: Pick<WebPushSubscription, 'endpoint' | 'p256dh' | 'auth'>, payload: string, priority: Priority): Promise<WebPushOutcome> {
    try {
      await webpush.sendNotification({ endpoint: subscription.endpoint, keys: { p256dh: subscription.p256dh, auth: subscription.auth } }, payload, {
        vapidDetails: this.options.vapid,
        TTL: priority === 'emergency' ? 60 * 60 : TTL_SECONDS,
        urgency: URGENCY[priority],
        contentEncoding: 'aes128gcm',
        timeout: this.options.timeoutMs ?? 10_000,
        ...(this.options.agent ? { agent: this.options.agent } : {}),
      });
      return 'sent';
    } catch (err) {
      if (err instanceof BlockedAddressError || (err as { code?: unknown }).code === 'ERR_NOTIFY_BLOCKED_ADDRESS') return 'blocked';
      const status = (err as { statusCode?: unknown }).statusCode;
      if (status === 404 || status === 410) return 'gone';
      const code = typeof status === 'number' ? status : null;
      const host = new URL(subscription.endpoint).host;
      throw new PushServiceError(
        `web push to ${host} failed: ${code ? `HTTP ${code}` : (err as Error).message}`,
        code,
        code ? `the push service answered HTTP ${code}` : 'the push service could not be reached',
      );
    }
  }
}
