/**
 * VAPID keys for web push (`streamgate vapid`): a P-256 key pair, base64url, as
 * `VAPID_PUBLIC_KEY` / `VAPID_PRIVATE_KEY` expect them.
 */
import webpush from 'web-push';

export interface VapidKeys {
  /** 65-byte uncompressed public key, base64url: also what browsers get as `applicationServerKey`. */
  publicKey: string;
  /** 32-byte private key, base64url. Keep it secret. */
  privateKey: string;
}

export function generateVapidKeys(): VapidKeys {
  const { publicKey, privateKey } = webpush.generateVAPIDKeys();
  return { publicKey, privateKey };
}
