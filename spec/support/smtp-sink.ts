/**
 * A loopback SMTP server (the `smtp-server` package) that records each message,
 * with a small MIME reader for the text and HTML parts nodemailer writes.
 */
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export interface ReceivedEmail {
  from: string;
  to: string[];
  raw: string;
  subject: string;
  text: string;
  html: string;
}

function unfold(headerBlock: string): Map<string, string> {
  const headers = new Map<string, string>();
  for (const line of headerBlock.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return headers;
}

function decodeBody(body: string, encoding: string | undefined): string {
  const enc = (encoding ?? '7bit').toLowerCase();
  if (enc === 'base64') return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  if (enc === 'quoted-printable') {
    const bytes = body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(bytes, 'latin1').toString('utf8');
  }
  return body;
}

/** RFC 2047 encoded words (`=?UTF-8?Q?…?=`, `=?UTF-8?B?…?=`). */
function decodeWords(value: string): string {
  return value.replace(/=\?([^?]+)\?([QB])\?([^?]*)\?=\s*/gi, (_, _charset: string, kind: string, text: string) =>
    kind.toUpperCase() === 'B'
      ? Buffer.from(text, 'base64').toString('utf8')
      : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-F]{2})/gi, (__, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8'),
  );
}

/** The subject and the text/plain and text/html parts of a message. */
export function readMessage(raw: string): { subject: string; text: string; html: string } {
  const split = raw.indexOf('\r\n\r\n');
  const headers = unfold(raw.slice(0, split));
  const body = raw.slice(split + 4);
  const out = { subject: decodeWords(headers.get('subject') ?? ''), text: '', html: '' };
  const type = headers.get('content-type') ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  const parts = boundary
    ? body.split(`--${boundary}`).slice(1, -1).map((p) => p.replace(/^\r\n/, ''))
    : [`content-type: ${type}\r\ncontent-transfer-encoding: ${headers.get('content-transfer-encoding') ?? '7bit'}\r\n\r\n${body}`];
  for (const part of parts) {
    const i = part.indexOf('\r\n\r\n');
    const h = unfold(part.slice(0, i));
    const content = decodeBody(part.slice(i + 4).replace(/\r\n$/, ''), h.get('content-transfer-encoding'));
    const ct = h.get('content-type') ?? '';
    if (ct.startsWith('text/plain')) out.text = content;
    else if (ct.startsWith('text/html')) out.html = content;
  }
  return out;
}

export class SmtpSink {
  readonly messages: ReceivedEmail[] = [];
  /** Answer the next messages with this SMTP code (e.g. 550) instead of accepting them. */
  rejectWith: number | null = null;

  private constructor(
    private readonly server: SMTPServer,
    readonly port: number,
  ) {}

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<SmtpSink> {
    let self: SmtpSink | undefined;
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          if (self!.rejectWith !== null) {
            const err = Object.assign(new Error('mailbox unavailable'), { responseCode: self!.rejectWith });
            return callback(err);
          }
          const raw = Buffer.concat(chunks).toString('utf8');
          self!.messages.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            raw,
            ...readMessage(raw),
          });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new SmtpSink(server, (server.server.address() as AddressInfo).port);
    return self;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
