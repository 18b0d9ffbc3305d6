/**
 * HTTP authentication through passport: `passport-jwt` for user tokens and a server
 * key strategy for backends. Credentials come from `Authorization: Bearer …` or, for
 * clients that cannot set headers (EventSource), `?token=`.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { Passport } from 'passport';
import { ExtractJwt, Strategy as JwtStrategy, type StrategyOptionsWithoutRequest } from 'passport-jwt';
import { Strategy } from 'passport-strategy';
import type { JwtSettings } from '../config/config.js';
import { StreamgateError, unauthorized, unavailable } from '../errors.js';
import type { Principal, ServerPrincipal } from './principal.js';
import { describeTokenError, principalFromClaims, verifyOptions } from './tokens.js';

/** What authentication needs of the server key store. */
export interface ServerKeyVerifier {
  verify(key: string): Promise<{ id: string; tenant: string } | null>;
}

/** Server keys are recognisable by their prefix, so one header carries either credential. */
export const SERVER_KEY_PREFIX = 'sgk_';

const extractToken = ExtractJwt.fromExtractors([
  ExtractJwt.fromAuthHeaderAsBearerToken(),
  ExtractJwt.fromUrlQueryParameter('token'),
]);

const fromHeader = ExtractJwt.fromAuthHeaderAsBearerToken();

/**
 * The raw credential of a request, or null. Server keys are taken from the
 * Authorization header only: a key in a URL ends up in proxy and access logs.
 */
export function credentialOf(req: Request): string | null {
  const header = fromHeader(req);
  if (header) return header;
  // `?token=a&token=b` parses to an array: no credential, not a crash.
  const query: unknown = extractToken(req);
  if (typeof query !== 'string' || query.startsWith(SERVER_KEY_PREFIX)) return null;
  return query;
}

/** Why a request without a credential is refused (401). */
export function missingCredentials(tokenInQuery: unknown): StreamgateError {
  const keyInQuery = typeof tokenInQuery === 'string' && tokenInQuery.startsWith(SERVER_KEY_PREFIX);
  return unauthorized(keyInQuery ? 'server keys go in the Authorization header, never in the URL' : 'missing credentials: Authorization: Bearer <token or server key>');
}

/**
 * The principal of a server key; rejects with 401 for an unknown, revoked or wrong key
 * and 503 when the key store cannot answer. Used by the passport strategy below and by
 * the fast lane (lib/http/fast-lane.ts).
 */
export async function serverKeyPrincipal(keys: ServerKeyVerifier, key: string): Promise<ServerPrincipal> {
  let found: { id: string; tenant: string } | null;
  try {
    found = await keys.verify(key);
  } catch (err) {
    throw err instanceof StreamgateError ? err : unavailable('cannot verify server key', err);
  }
  if (!found) throw unauthorized('invalid or revoked server key');
  return { kind: 'server', tenant: found.tenant, keyId: found.id };
}

class ServerKeyStrategy extends Strategy {
  name = 'server-key';

  constructor(private readonly keys: ServerKeyVerifier) {
    super();
  }

  override authenticate(req: Request): void {
    const key = credentialOf(req);
    if (!key) return this.fail('no credentials', 401);
    serverKeyPrincipal(this.keys, key).then(
      (principal) => this.success(principal),
      (err: unknown) => (err instanceof StreamgateError && err.code === 'unauthorized' ? this.fail(err.message, 401) : this.error(err as StreamgateError)),
    );
  }
}

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

/**
 * Middleware that sets `req.principal` or answers 401 with the JSON error shape
 * (through `next(err)`).
 */
export function createAuthenticator(jwtSettings: JwtSettings, keys: ServerKeyVerifier): RequestHandler {
  const passport = new Passport();
  const v = verifyOptions(jwtSettings);
  const jwtOptions: StrategyOptionsWithoutRequest = {
    jwtFromRequest: (req: Request) => credentialOf(req),
    // passport-jwt hands the key to jsonwebtoken, which takes a KeyObject; its types
    // only say string | Buffer.
    secretOrKey: v.key as unknown as string,
    algorithms: v.algorithms,
  };
  if (v.issuer) jwtOptions.issuer = v.issuer;
  if (v.audience) jwtOptions.audience = v.audience;
  passport.use(
    'jwt',
    new JwtStrategy(jwtOptions, (payload: unknown, done: (err: unknown, user?: unknown, info?: unknown) => void) => {
      try {
        done(null, principalFromClaims(payload));
      } catch (err) {
        done(null, false, err);
      }
    }),
  );
  passport.use('server-key', new ServerKeyStrategy(keys));

  return (req: Request, res: Response, next: NextFunction) => {
    const credential = credentialOf(req);
    if (!credential) return next(missingCredentials(req.query.token));
    const strategy = credential.startsWith(SERVER_KEY_PREFIX) ? 'server-key' : 'jwt';
    const handler = passport.authenticate(strategy, { session: false }, (err: unknown, user: unknown, info: unknown) => {
      if (err) return next(err);
      if (!user) {
        if (info instanceof StreamgateError) return next(info);
        if (typeof info === 'string') return next(unauthorized(info));
        return next(unauthorized(describeTokenError(info)));
      }
      req.principal = user as Principal;
      next();
    }) as RequestHandler;
    handler(req, res, next);
  };
}
