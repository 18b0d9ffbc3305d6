/**
 * A loopback TLS stand-in for the FCM HTTP v1 endpoint
 * (`POST /v1/projects/<project>/messages:send`), for the real firebase-admin client:
 * give the app `credential()` (a fake OAuth credential), `httpAgent()` (every
 * connection goes here, the TLS name still checked) and enable its legacy HTTP/1.1
 * transport. Tokens marked `unregister`ed are answered as FCM does
 * (404 NOT_FOUND, FcmError UNREGISTERED).
 */
import { createServer, type Server } from 'node:https';
import type { Agent } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Credential } from 'firebase-admin/app';
import { redirectingAgent } from '../../lib/notify/agents.js';
import type { TestPki } from './test-ca.js';

export interface FcmReceived {
  token: string;
  notification?: { title?: string; body?: string };
  data?: Record<string, string>;
  android?: Record<string, unknown>;
}

export class FakeFcm {
  readonly received: FcmReceived[] = [];
  /** Tokens answered UNREGISTERED. */
  readonly unregistered = new Set<string>();
  /** Tokens answered 400 INVALID_ARGUMENT (not a valid FCM registration token). */
  readonly invalid = new Set<string>();
  /** Requests with a wrong bearer token or path. */
  readonly refused: string[] = [];
  readonly accessToken = `ya29.test-${Math.random().toString(36).slice(2)}`;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly projectId: string,
    private readonly pki: TestPki,
  ) {}

  static async start(pki: TestPki, projectId = 'streamgate-test'): Promise<FakeFcm> {
    let self: FakeFcm | undefined;
    const server = createServer({ key: pki.key, cert: pki.cert }, (req, res) => self!.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new FakeFcm(server, (server.address() as AddressInfo).port, projectId, pki);
    return self;
  }

  /** A credential that hands out this server's access token (no Google OAuth). */
  credential(): Credential {
    return { getAccessToken: async () => ({ access_token: this.accessToken, expires_in: 3600 }) };
  }

  /** An agent whose connections reach this server, trusting the test CA. */
  httpAgent(): Agent {
    return redirectingAgent(`127.0.0.1:${this.port}`, this.pki.ca);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' }).end(JSON.stringify(body));
      if (req.method !== 'POST' || req.url !== `/v1/projects/${this.projectId}/messages:send`) {
        this.refused.push(`${req.method} ${req.url}`);
        return json(404, { error: { code: 404, message: 'not found', status: 'NOT_FOUND' } });
      }
      if (req.headers.authorization !== `Bearer ${this.accessToken}`) {
        this.refused.push(`authorization ${req.headers.authorization}`);
        return json(401, { error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } });
      }
      const { message } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { message: FcmReceived };
      if (this.unregistered.has(message.token)) {
        return json(404, {
          error: {
            code: 404,
            message: 'Requested entity was not found.',
            status: 'NOT_FOUND',
            details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'UNREGISTERED' }],
          },
        });
      }
      if (this.invalid.has(message.token)) {
        return json(400, {
          error: {
            code: 400,
            message: 'The registration token is not a valid FCM registration token',
            status: 'INVALID_ARGUMENT',
            details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'INVALID_ARGUMENT' }],
          },
        });
      }
      this.received.push(message);
      json(200, { name: `projects/${this.projectId}/messages/${this.received.length}` });
    });
  }
}
