// The parts of web-push 3.6 that Streamgate uses (the package ships no types).
declare module 'web-push' {
  import type { Agent } from 'node:https';

  interface PushSubscription {
    endpoint: string;
    keys: { p256dh: string; auth: string };
  }

  interface VapidDetails {
    subject: string;
    publicKey: string;
    privateKey: string;
  }

  interface RequestOptions {
    vapidDetails?: VapidDetails;
    TTL?: number;
    headers?: Record<string, string>;
    contentEncoding?: 'aes128gcm' | 'aesgcm';
    urgency?: 'very-low' | 'low' | 'normal' | 'high';
    topic?: string;
    agent?: Agent;
    timeout?: number;
  }

  interface SendResult {
    statusCode: number;
    body: string;
    headers: Record<string, string | string[] | undefined>;
  }

  class WebPushError extends Error {
    statusCode: number;
    headers: Record<string, string | string[] | undefined>;
    body: string;
    endpoint: string;
  }

  function generateVAPIDKeys(): { publicKey: string; privateKey: string };
  function sendNotification(subscription: PushSubscription, payload?: string | Buffer | null, options?: RequestOptions): Promise<SendResult>;

  const webpush: {
    WebPushError: typeof WebPushError;
    generateVAPIDKeys: typeof generateVAPIDKeys;
    sendNotification: typeof sendNotification;
  };
  export default webpush;
  // Only the default export: Node's CommonJS interop does not see the functions as named exports.
  export { WebPushError };
  export type { PushSubscription, VapidDetails, RequestOptions, SendResult };
}
