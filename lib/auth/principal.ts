/** Who is acting: a user with a token, or a backend with a server key. */

export interface UserPrincipal {
  kind: 'user';
  tenant: string;
  userId: string;
  name?: string;
  roles: readonly string[];
  /** Channel patterns the user may subscribe to (token `channels` claim). */
  channels: readonly string[];
  /** Channel patterns the user may publish to (token `publish` claim). */
  publish: readonly string[];
  /** Token expiry, epoch milliseconds. */
  expiresAt: number;
}

export interface ServerPrincipal {
  kind: 'server';
  tenant: string;
  keyId: string;
}

export type Principal = UserPrincipal | ServerPrincipal;
