/**
 * HTTPS agents for push services and FCM, built from the notification credentials:
 * an extra trusted CA (`NOTIFY_CA_FILE`), the test hook that sends FCM and Google
 * OAuth connections to one address (`NOTIFY_FCM_ADDRESS`), and, for web push, the
 * check of the address connected to (`address-guard.ts`), off only with the test hook
 * `NOTIFY_ALLOW_PRIVATE_ENDPOINTS`.
 */
import type { Duplex } from 'node:stream';
import { Agent, type AgentOptions } from 'node:https';
import { connect, rootCertificates, type ConnectionOptions } from 'node:tls';
import type { NotificationCredentials } from '../config/notifications.js';
import { publicOnlyAgent } from './address-guard.js';

/** Trust the system roots plus `extraCa`. */
function trust(extraCa: string | null): AgentOptions {
  return extraCa ? { ca: [...rootCertificates, extraCa] } : {};
}

/**
 * The agent web push requests use: it connects to public addresses only (and, in
 * production, to port 443 only), unless `allowPrivateEndpoints` (the test hook).
 */
export function pushAgent(
  credentials: Pick<NotificationCredentials, 'extraCa' | 'allowPrivateEndpoints'>,
  options: { production: boolean } = { production: false },
): Agent {
  if (credentials.allowPrivateEndpoints) return new Agent({ keepAlive: true, ...trust(credentials.extraCa) });
  return publicOnlyAgent({ ...(credentials.extraCa ? { ca: [...rootCertificates, credentials.extraCa] } : {}), httpsPortOnly: options.production });
}

/**
 * An agent whose connections all go to `address` (`host:port`), keeping the TLS
 * server name of the host asked for, so certificates are still checked against it.
 */
export function redirectingAgent(address: string, ca: string | readonly string[] | undefined): Agent {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i);
  const port = Number(address.slice(i + 1));
  const agent = new Agent({ keepAlive: false });
  agent.createConnection = (options: ConnectionOptions & { host?: string; servername?: string }, callback?: (err: Error | null, socket: Duplex) => void): Duplex => {
    const servername = options.servername ?? options.host ?? undefined;
    const socket = connect({ host, port, ...(servername ? { servername } : {}), ...(ca ? { ca: ca as string | string[] } : {}) });
    if (callback) {
      socket.once('secureConnect', () => callback(null, socket));
      socket.once('error', (err) => callback(err, socket));
    }
    return socket;
  };
  return agent;
}

/** The agent FCM requests use, or undefined for firebase-admin's default. */
export function fcmAgent(credentials: Pick<NotificationCredentials, 'extraCa' | 'fcmAddress'>): Agent | undefined {
  if (credentials.fcmAddress) return redirectingAgent(credentials.fcmAddress, credentials.extraCa ?? undefined);
  return credentials.extraCa ? new Agent({ keepAlive: true, ...trust(credentials.extraCa) }) : undefined;
}
