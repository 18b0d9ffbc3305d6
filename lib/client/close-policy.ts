/**
 * What the client does when a connection ends (PROTOCOL §4 close codes; HTTP statuses
 * of SSE and polling): stop, renew the token, back off harder, try the next transport,
 * or simply reconnect with backoff.
 */
import { CloseCode } from '../protocol/codes.js';
import { StreamgateClientError } from './errors.js';
import type { CloseInfo } from './transport.js';

export type CloseDecision =
  | { action: 'stop'; error: StreamgateClientError }
  | { action: 'renew-token' }
  /** The server limits this user or connection: wait at least the ceiling of this attempt. */
  | { action: 'back-off'; attempt: number }
  /** The transport itself does not work here: the next one may. */
  | { action: 'next-transport' }
  | { action: 'reconnect' };

/** Close codes the server chose; they say nothing about whether the transport works. */
const SERVER_DECIDED = new Set<number>([
  CloseCode.GoingAway,
  CloseCode.MessageTooBig,
  CloseCode.Unauthorized,
  CloseCode.Forbidden,
  CloseCode.ConnectionLimit,
  CloseCode.RateLimited,
]);

/** 4009/4029: start backing off from the 8-second ceiling. */
const LIMITED_ATTEMPT = 3;

export function decideOnClose(info: CloseInfo, canRenewToken: boolean): CloseDecision {
  const { closeCode: code, status } = info;
  if (code === CloseCode.Forbidden) {
    return { action: 'stop', error: new StreamgateClientError('forbidden', `the server refused the connection: ${info.reason}`, { closeCode: code }) };
  }
  if (code === CloseCode.Unauthorized || status === 401) {
    if (canRenewToken) return { action: 'renew-token' };
    const details = code === undefined ? { status: 401 } : { closeCode: code };
    return { action: 'stop', error: new StreamgateClientError('unauthorized', 'the token was refused and there is no getToken to renew it', details) };
  }
  if (code === CloseCode.ConnectionLimit || code === CloseCode.RateLimited || status === 429) return { action: 'back-off', attempt: LIMITED_ATTEMPT };
  // 1009 and others after a working connection: the frame at fault was refused; reconnect.
  if (info.neverWorked && status !== 403 && (code === undefined || !SERVER_DECIDED.has(code))) return { action: 'next-transport' };
  return { action: 'reconnect' };
}
