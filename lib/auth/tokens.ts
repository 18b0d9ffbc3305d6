/**
 * User tokens (PROTOCOL §2): JWTs signed HS256 with a secret, or RS256/ES256 verified
 * with a public key; issuer and audience checked when configured. The same options
 * serve passport-jwt (HTTP) and direct verification (WebSocket upgrade, `refresh`).
 */
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { JwtSettings } from '../config/config.js';
import { isValidTenant } from '../protocol/channel.js';
import { unauthorized } from '../errors.js';
import type { UserPrincipal } from './principal.js';

type Algorithm = jwt.Algorithm;

export interface VerifyOptions {
  /** A prebuilt key: given a string, jsonwebtoken tries to parse it as a public key on every call (~380 µs). */
  key: KeyObject;
  algorithms: Algorithm[];
  issuer?: string;
  audience?: string;
}

export function verifyOptions(settings: JwtSettings): VerifyOptions {
  const opts: VerifyOptions = settings.publicKey
    ? { key: createPublicKey(settings.publicKey), algorithms: ['RS256', 'ES256'] }
    : { key: createSecretKey(Buffer.from(settings.secret ?? '')), algorithms: ['HS256'] };
  if (settings.issuer) opts.issuer = settings.issuer;
  if (settings.audience) opts.audience = settings.audience;
  return opts;
}

function stringArray(value: unknown, claim: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
    throw unauthorized(`token claim ${claim} must be an array of strings`);
  }
  return value as string[];
}

/** Check the claims a verified token must carry and turn them into a principal. */
export function principalFromClaims(payload: unknown): UserPrincipal {
  if (!payload || typeof payload !== 'object') throw unauthorized('token payload is not an object');
  const p = payload as Record<string, unknown>;
  if (typeof p.exp !== 'number') throw unauthorized('token has no exp claim');
  if (typeof p.sub !== 'string' || p.sub.length === 0 || p.sub.length > 128) throw unauthorized('token has no valid sub claim');
  if (!isValidTenant(p.tid)) throw unauthorized('token has no valid tid claim (letters, digits, _ - . @; at most 64)');
  if (p.name !== undefined && typeof p.name !== 'string') throw unauthorized('token claim name must be a string');
  const principal: UserPrincipal = {
    kind: 'user',
    tenant: p.tid,
    userId: p.sub,
    roles: stringArray(p.roles, 'roles'),
    channels: stringArray(p.channels, 'channels'),
    publish: stringArray(p.publish, 'publish'),
    expiresAt: p.exp * 1000,
  };
  if (typeof p.name === 'string') principal.name = p.name;
  return principal;
}

function describe(err: unknown): string {
  if (err instanceof jwt.TokenExpiredError) return 'token expired';
  if (err instanceof jwt.JsonWebTokenError) return `invalid token: ${err.message}`;
  return 'invalid token';
}

/** Verifies user tokens outside Express (WebSocket upgrades, `refresh` frames). */
export class TokenVerifier {
  private readonly options: VerifyOptions;

  constructor(settings: JwtSettings) {
    this.options = verifyOptions(settings);
  }

  /** The verified principal; throws `unauthorized` with the reason otherwise. */
  verify(token: string): UserPrincipal {
    let payload: unknown;
    try {
      const { key, ...rest } = this.options;
      payload = jwt.verify(token, key, rest);
    } catch (err) {
      throw unauthorized(describe(err));
    }
    return principalFromClaims(payload);
  }
}

export interface SignOptions {
  sub: string;
  tid: string;
  name?: string;
  roles?: string[];
  channels?: string[];
  publish?: string[];
  /** Seconds until expiry. @default 3600 */
  ttlSeconds?: number;
  issuer?: string;
  audience?: string;
}

/** A development token signed HS256 with `secret` (`streamgate token`). */
export function signUserToken(secret: string, o: SignOptions): string {
  const claims: Record<string, unknown> = { sub: o.sub, tid: o.tid };
  if (o.name) claims.name = o.name;
  if (o.roles?.length) claims.roles = o.roles;
  if (o.channels?.length) claims.channels = o.channels;
  if (o.publish?.length) claims.publish = o.publish;
  const options: jwt.SignOptions = { algorithm: 'HS256', expiresIn: o.ttlSeconds ?? 3600 };
  if (o.issuer) options.issuer = o.issuer;
  if (o.audience) options.audience = o.audience;
  return jwt.sign(claims, secret, options);
}

export { describe as describeTokenError };
