/**
 * FCM (Firebase Cloud Messaging HTTP v1) through firebase-admin, for mobile device
 * tokens. firebase-admin is loaded only when FCM is configured.
 */
import { randomUUID } from 'node:crypto';
import type { Agent } from 'node:http';
import type { App, Credential } from 'firebase-admin/app';
import type { Messaging, TokenMessage } from 'firebase-admin/messaging';
import type { FcmServiceAccount } from '../config/notifications.js';
import type { Priority } from '../protocol/frames.js';

export interface FcmSenderOptions {
  /** The service account (from `FCM_SERVICE_ACCOUNT`); or give `credential` and `projectId`. */
  serviceAccount?: FcmServiceAccount;
  credential?: Credential;
  projectId?: string;
  /** Agent for FCM and OAuth requests (proxies, tests). */
  httpAgent?: Agent;
  /** HTTP/1.1 instead of HTTP/2 for batches (needed with `httpAgent`, which HTTP/2 does not use). @default false */
  legacyHttpTransport?: boolean;
}

export interface FcmMessage {
  title: string;
  body: string;
  /** String values only: FCM's `data` map. */
  data: Record<string, string>;
  priority: Priority;
}

/** An FCM answer other than success for one token: `message` is the detail, `publicReason` what users may see. */
export class FcmSendError extends Error {
  constructor(
    message: string,
    readonly publicReason: string,
  ) {
    super(message);
    this.name = 'FcmSendError';
  }
}

/** Per token: `sent`; `invalid` (unregistered or not a token: delete it); or the error, worth a retry. */
export type FcmOutcome = 'sent' | 'invalid' | FcmSendError;

/** `sendEach` takes at most this many messages. */
export const FCM_BATCH_SIZE = 500;

/** A user-safe reason for an FCM failure: FCM's error code, never network error text. */
export function fcmPublicReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^(messaging|app)\/[a-z0-9-]{1,64}$/.test(code) ? `FCM answered ${code}` : 'FCM could not be reached';
}

/** FCM's answers that mean the token will never work again. */
const INVALID_TOKEN_CODES = new Set(['messaging/registration-token-not-registered', 'messaging/invalid-registration-token']);

function isInvalidToken(error: { code?: string; message?: string } | undefined): boolean {
  if (!error?.code) return false;
  if (INVALID_TOKEN_CODES.has(error.code)) return true;
  // INVALID_ARGUMENT also covers malformed messages; only a complaint about the token counts.
  return error.code === 'messaging/invalid-argument' && /registration token/i.test(error.message ?? '');
}

export class FcmSender {
  private constructor(
    private readonly app: App,
    private readonly messaging: Messaging,
    private readonly deleteApp: (app: App) => Promise<void>,
  ) {}

  static async create(options: FcmSenderOptions): Promise<FcmSender> {
    const appModule = await import('firebase-admin/app');
    const { getMessaging } = await import('firebase-admin/messaging');
    const sa = options.serviceAccount;
    const credential =
      options.credential ??
      (sa ? appModule.cert({ projectId: sa.projectId, clientEmail: sa.clientEmail, privateKey: sa.privateKey }, options.httpAgent) : undefined);
    const projectId = options.projectId ?? sa?.projectId;
    if (!credential || !projectId) throw new TypeError('FCM needs a service account, or a credential and a project id');
    // A name of its own, so several senders (tests, embedding) never share an app.
    const app = appModule.initializeApp(
      { credential, projectId, ...(options.httpAgent ? { httpAgent: options.httpAgent } : {}) },
      `streamgate-${randomUUID()}`,
    );
    const messaging = getMessaging(app);
    if (options.legacyHttpTransport) messaging.enableLegacyHttpTransport();
    return new FcmSender(app, messaging, appModule.deleteApp);
  }

  /**
   * Send one message to each token, `FCM_BATCH_SIZE` at a time; the outcomes are in
   * the tokens' order. A batch that fails as a whole (no connection, refused
   * credentials) rejects.
   */
  async send(tokens: readonly string[], message: FcmMessage): Promise<FcmOutcome[]> {
    const urgent = message.priority === 'emergency' || message.priority === 'high';
    const outcomes: FcmOutcome[] = [];
    for (let i = 0; i < tokens.length; i += FCM_BATCH_SIZE) {
      const messages: TokenMessage[] = tokens.slice(i, i + FCM_BATCH_SIZE).map((token) => ({
        token,
        notification: { title: message.title, body: message.body },
        data: message.data,
        android: { priority: urgent ? 'high' : 'normal' },
        apns: { headers: { 'apns-priority': urgent ? '10' : '5' } },
      }));
      const batch = await this.messaging.sendEach(messages);
      for (const r of batch.responses) {
        if (r.success) outcomes.push('sent');
        else if (isInvalidToken(r.error)) outcomes.push('invalid');
        else outcomes.push(new FcmSendError(r.error ? `${r.error.code}: ${r.error.message}` : 'FCM refused the message', fcmPublicReason(r.error)));
      }
    }
    return outcomes;
  }

  close(): Promise<void> {
    return this.deleteApp(this.app);
  }
}
