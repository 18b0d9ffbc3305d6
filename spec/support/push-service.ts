/**
 * A web push service on loopback HTTPS (RFC 8030), strict as the real ones: it
 * checks the VAPID JWT (RFC 8292: ES256 signature with the key in `k`, audience,
 * expiry, subject) and decrypts the aes128gcm payload (RFC 8188, RFC 8291) with the
 * subscription's private key, which the test holds because the fake made the
 * subscription's keys.
 */
import { createECDH, createPublicKey, hkdfSync, createDecipheriv, randomBytes, verify, type ECDH } from 'node:crypto';
import { Agent } from 'node:https';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TestPki } from './test-ca.js';

export interface TestSubscription {
  id: string;
  endpoint: string;
  /** The browser's public key and auth secret, base64url: what the browser hands the app. */
  p256dh: string;
  auth: string;
  /** The browser's private half. */
  ecdh: ECDH;
}

export interface ReceivedPush {
  subscriptionId: string;
  /** The decrypted payload. */
  payload: string;
  ttl: number;
  urgency: string | undefined;
  vapid: { sub: string; aud: string; exp: number; publicKey: string };
}

const b64u = (b: Buffer): string => b.toString('base64url');

function decodeJson(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** RFC 8291 + RFC 8188: the plaintext of one aes128gcm record. */
export function decryptAes128gcm(body: Buffer, ecdh: ECDH, authSecret: Buffer): string {
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLen = body[20]!;
  const serverPublic = body.subarray(21, 21 + idLen);
  const ciphertext = body.subarray(21 + idLen);
  if (ciphertext.length > recordSize) throw new Error('more than one record');
  const uaPublic = ecdh.getPublicKey();
  const shared = ecdh.computeSecret(serverPublic);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, serverPublic]);
  const ikm = Buffer.from(hkdfSync('sha256', shared, authSecret, keyInfo, 32));
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 0x02, then zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (padded[end] !== 2) throw new Error('bad padding delimiter');
  return padded.subarray(0, end).toString('utf8');
}

export class FakePushService {
  readonly received: ReceivedPush[] = [];
  /** Requests refused, with why (a bad signature, an undecryptable body…). */
  readonly refused: string[] = [];
  private readonly subs = new Map<string, { sub: TestSubscription; authSecret: Buffer; status: number; origin: string }>();
  private seq = 0;

  private constructor(
    private readonly server: Server,
    readonly origin: string,
    private readonly pki: TestPki,
  ) {}

  static async start(pki: TestPki): Promise<FakePushService> {
    let self: FakePushService | undefined;
    const server = createServer({ key: pki.key, cert: pki.cert }, (req, res) => self!.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new FakePushService(server, `https://127.0.0.1:${(server.address() as AddressInfo).port}`, pki);
    return self;
  }

  /** This service's port on loopback. */
  get port(): number {
    return Number(new URL(this.origin).port);
  }

  /**
   * A new browser subscription, with its keys. `host` names the service in the
   * endpoint (default `127.0.0.1`; `localhost` is in the test certificate too).
   */
  subscribe(host = '127.0.0.1'): TestSubscription {
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const authSecret = randomBytes(16);
    const id = `s${++this.seq}`;
    const origin = `https://${host}:${this.port}`;
    const sub: TestSubscription = { id, endpoint: `${origin}/push/${id}`, p256dh: b64u(ecdh.getPublicKey()), auth: b64u(authSecret), ecdh };
    this.subs.set(id, { sub, authSecret, status: 201, origin });
    return sub;
  }

  /** Answer this subscription's pushes with `status` (410: unsubscribed) from now on. */
  respondWith(id: string, status: number): void {
    this.subs.get(id)!.status = status;
  }

  /** An agent that trusts the test CA: web-push's `agent` option. */
  agent(): Agent {
    return new Agent({ ca: this.pki.ca });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private refuse(res: ServerResponse, status: number, why: string): void {
    this.refused.push(why);
    res.writeHead(status, { 'content-type': 'text/plain' }).end(why);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        this.receive(req, Buffer.concat(chunks), res);
      } catch (err) {
        this.refuse(res, 400, `error: ${(err as Error).message}`);
      }
    });
  }

  private receive(req: IncomingMessage, body: Buffer, res: ServerResponse): void {
    const m = /^\/push\/(\w+)$/.exec(req.url ?? '');
    const entry = m ? this.subs.get(m[1]!) : undefined;
    if (req.method !== 'POST' || !entry) return this.refuse(res, 404, `no subscription at ${req.method} ${req.url}`);
    if (req.headers['content-encoding'] !== 'aes128gcm') return this.refuse(res, 415, 'Content-Encoding must be aes128gcm');
    const ttl = Number(req.headers.ttl);
    if (!Number.isInteger(ttl) || ttl < 0) return this.refuse(res, 400, 'TTL header missing');

    const auth = /^vapid t=([\w-]+\.[\w-]+\.[\w-]+), k=([\w-]+)$/.exec(req.headers.authorization ?? '');
    if (!auth) return this.refuse(res, 401, `Authorization is not vapid t=…, k=…: ${req.headers.authorization}`);
    const [header, claims, signature] = auth[1]!.split('.') as [string, string, string];
    const raw = Buffer.from(auth[2]!, 'base64url');
    if (raw.length !== 65 || raw[0] !== 4) return this.refuse(res, 401, 'k is not an uncompressed P-256 key');
    const key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64u(raw.subarray(1, 33)), y: b64u(raw.subarray(33)) }, format: 'jwk' });
    const signed = verify('sha256', Buffer.from(`${header}.${claims}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(signature, 'base64url'));
    if (!signed) return this.refuse(res, 403, 'VAPID signature does not verify');
    const h = decodeJson(header);
    const c = decodeJson(claims);
    if (h.alg !== 'ES256') return this.refuse(res, 403, `VAPID alg ${String(h.alg)}`);
    if (c.aud !== entry.origin) return this.refuse(res, 403, `VAPID aud ${String(c.aud)} is not ${entry.origin}`);
    const now = Math.floor(Date.now() / 1000);
    if (typeof c.exp !== 'number' || c.exp <= now || c.exp > now + 24 * 3600) return this.refuse(res, 403, 'VAPID exp out of range');
    if (typeof c.sub !== 'string' || !/^(mailto:|https:)/.test(c.sub)) return this.refuse(res, 403, 'VAPID sub missing');

    let payload: string;
    try {
      payload = decryptAes128gcm(body, entry.sub.ecdh, entry.authSecret);
    } catch (err) {
      return this.refuse(res, 400, `cannot decrypt: ${(err as Error).message}`);
    }
    if (entry.status < 200 || entry.status > 299) {
      // Refused on purpose (410: unsubscribed, 5xx: overloaded): not delivered.
      res.writeHead(entry.status).end();
      return;
    }
    const urgency = req.headers.urgency;
    this.received.push({
      subscriptionId: entry.sub.id,
      payload,
      ttl,
      urgency: typeof urgency === 'string' ? urgency : undefined,
      vapid: { sub: c.sub, aud: c.aud, exp: c.exp, publicKey: auth[2]! },
    });
    res.writeHead(entry.status, { location: `${this.origin}/message/${this.received.length}` }).end();
  }
}
