/**
 * The requests clients send most get a lane of their own in front of Express when
 * Streamgate owns the HTTP server (`gateway.listen`, `streamgate serve`):
 *
 * - `POST /v1/channels/{channel}/events`, what backends send. Both ways in share
 *   everything that decides the answer (`publishOne`): validation, rights, quota, the
 *   append, audit and metrics. Mounted in Express (`gateway.router`), passport
 *   authenticates and body-parser reads the body, as on every other route; the lane
 *   verifies the credential directly (the same server key store and JWT options) and
 *   reads a plain JSON body itself.
 * - `GET /v1/poll`, what every long-polling client sends again and again; its handler
 *   never needed Express (lib/transports/poll.ts), only the router in front of it.
 *
 * The lane takes only requests it can answer exactly as the router would, and hands
 * the rest (compressed bodies, CORS requests, odd paths) to Express. The profile of a
 * node publishing 1,000 events/s over HTTP had Express routing, passport and
 * body-parser at about a third of its CPU; `spec/http/fast-lane.spec.ts` sends the
 * same requests down both ways and compares the answers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request } from 'express';
import { credentialOf, missingCredentials, serverKeyPrincipal, SERVER_KEY_PREFIX, type ServerKeyVerifier } from '../auth/authenticate.js';
import type { Principal } from '../auth/principal.js';
import type { TokenVerifier } from '../auth/tokens.js';
import { badRequest, StreamgateError } from '../errors.js';
import type { ChannelAccess } from '../gateway/session.js';
import { appendEvents, preparePublish, type PublishAnswer, type PublishDeps } from '../gateway/publish.js';
import type { Metrics } from '../gateway/metrics.js';
import { writeError, writeJson } from './respond.js';

/** The routes as Express names them (metrics labels). */
export const PUBLISH_ROUTE = '/v1/channels/:channel/events';
export const POLL_ROUTE = '/v1/poll';

export interface PublishEndpointDeps {
  publish: PublishDeps;
  access?: ChannelAccess;
  /** Counts publishes that shutdown waits for. */
  track<T>(work: Promise<T>): Promise<T>;
}

/** Validate, check rights, append: the answer of one single publish, whichever way it came. */
export async function publishOne(deps: PublishEndpointDeps, principal: Principal, channel: string, body: unknown): Promise<PublishAnswer> {
  const request = preparePublish(deps.publish.config, principal, channel, body);
  if (principal.kind === 'user') await deps.access?.mayPublish(principal, request.channel);
  const [answer] = await deps.track(appendEvents(deps.publish, principal, [request], 'http'));
  return answer!;
}

export interface FastLaneDeps extends PublishEndpointDeps {
  keys: ServerKeyVerifier;
  verifier: TokenVerifier;
  metrics: Metrics;
  /** CORS is Express's job: requests with an Origin go there when origins are configured. */
  corsOrigins: readonly string[];
  isClosing(): boolean;
  /** The long-polling handler (PollGateway.serve), when polling is served. */
  poll?(req: IncomingMessage, res: ServerResponse): void;
}

const PREFIX = '/v1/channels/';
const SUFFIX = '/events';

/**
 * The fast lane. `take(req, res)` answers the request and returns true, or returns
 * false without touching it (the caller hands it to Express).
 */
export class FastLane {
  private readonly limit: number;

  constructor(private readonly deps: FastLaneDeps) {
    this.limit = deps.publish.config.limits.max_message_bytes;
  }

  take(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.deps.corsOrigins.length && req.headers.origin !== undefined) return false;
    const poll = this.deps.poll;
    if (poll && isPoll(req)) {
      this.count(res, 'GET', POLL_ROUTE);
      if (this.refuseWhileClosing(res)) return true;
      poll(req, res);
      return true;
    }
    const channel = this.match(req);
    if (channel === null) return false;
    this.count(res, 'POST', PUBLISH_ROUTE);
    if (this.refuseWhileClosing(res)) return true;
    this.serve(req, res, channel).catch((err: unknown) => writeError(res, err));
    return true;
  }

  private count(res: ServerResponse, method: string, route: string): void {
    res.once('finish', () => this.deps.metrics.httpRequests.inc({ method, route, status: String(res.statusCode) }));
  }

  /** As the router does during shutdown: 503 and no keep-alive. */
  private refuseWhileClosing(res: ServerResponse): boolean {
    if (!this.deps.isClosing()) return false;
    res.setHeader('Connection', 'close');
    writeError(res, new StreamgateError('unavailable', 'server is shutting down'));
    return true;
  }

  /** The decoded channel of a publish this lane can answer exactly as the router would, else null. */
  private match(req: IncomingMessage): string | null {
    const url = req.url ?? '';
    if (req.method !== 'POST' || !url.startsWith(PREFIX)) return null;
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (!path.endsWith(SUFFIX) || path.length <= PREFIX.length + SUFFIX.length) return null;
    const raw = path.slice(PREFIX.length, -SUFFIX.length);
    if (raw.includes('/')) return null;
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') return null;
    // Any charset but UTF-8 is body-parser's to decode or refuse.
    const charset = charsetOf(req.headers['content-type']);
    if (charset !== null && charset !== 'utf-8') return null;
    try {
      return decodeURIComponent(raw);
    } catch {
      return null;
    }
  }

  private async serve(req: IncomingMessage, res: ServerResponse, channel: string): Promise<void> {
    const principal = await this.authenticate(req);
    const body = await readJsonBody(req, this.limit);
    const answer = await publishOne(this.deps, principal, channel, body);
    writeJson(res, 201, answer);
  }

  /** What passport's two strategies decide (lib/auth/authenticate.ts), without passport. */
  private async authenticate(req: IncomingMessage): Promise<Principal> {
    // credentialOf reads only the headers and the URL, which a plain request has.
    const credential = credentialOf(req as Request);
    if (!credential) throw missingCredentials(new URL(req.url ?? '/', 'http://x').searchParams.get('token'));
    if (!credential.startsWith(SERVER_KEY_PREFIX)) return this.deps.verifier.verify(credential);
    return serverKeyPrincipal(this.deps.keys, credential);
  }
}

/** The lower-cased `charset` parameter of a Content-Type, or null. */
function charsetOf(type: string | undefined): string | null {
  const semi = type?.indexOf(';') ?? -1;
  if (semi < 0) return null;
  return /charset\s*=\s*"?([^";\s]+)/i.exec(type!.slice(semi))?.[1]?.toLowerCase() ?? null;
}

/** `GET /v1/poll` or `/v1/poll?…`, exactly (the router's other spellings go to Express). */
function isPoll(req: IncomingMessage): boolean {
  const url = req.url ?? '';
  return req.method === 'GET' && url.startsWith(POLL_ROUTE) && (url.length === POLL_ROUTE.length || url.charCodeAt(POLL_ROUTE.length) === 63 /* ? */);
}

/**
 * The body as express.json({ strict: false, limit }) reads it: `application/json` in
 * UTF-8 (other charsets never reach the lane), a leading byte order mark dropped, an
 * empty body is `{}`, over `limit` bytes is 413 (told by Content-Length before reading
 * when it is given). Anything else is a 400, as the router answers.
 */
export function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const type = req.headers['content-type'];
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  const semi = type?.indexOf(';') ?? -1;
  const media = type === undefined ? '' : (semi < 0 ? type : type.slice(0, semi)).trim().toLowerCase();
  if (!hasBody || media !== 'application/json') {
    req.resume();
    return Promise.reject(badRequest('expected a JSON body (Content-Type: application/json)'));
  }
  // Gone while it was being authenticated: no 'data' or 'end' will ever come.
  if (req.destroyed || req.readableAborted) return Promise.reject(badRequest('malformed request body: request aborted'));
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(new StreamgateError('too_large', 'request body is too large'));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (err: StreamgateError) => {
      if (done) return;
      done = true;
      chunks.length = 0;
      reject(err);
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) return fail(new StreamgateError('too_large', 'request body is too large'));
      chunks.push(chunk);
    });
    req.once('error', (err) => fail(badRequest(`malformed request body: ${err.message}`)));
    req.once('aborted', () => fail(badRequest('malformed request body: request aborted')));
    req.once('end', () => {
      if (done) return;
      done = true;
      let text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks, size).toString('utf8');
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      if (text.length === 0) return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(badRequest(`malformed request body: ${(err as Error).message}`));
      }
    });
  });
}
