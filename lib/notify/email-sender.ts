/**
 * Email over SMTP with nodemailer: the fallback when no push reaches a user, and
 * the daily digest.
 */
import nodemailer, { type Transporter } from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import type { EmailContent } from './templates.js';

export interface EmailSenderOptions {
  /** `smtp://user:pass@host:587`, `smtps://…:465`, or nodemailer SMTP options. */
  transport: string | SMTPTransport.Options;
  /** The From header, e.g. `Streamgate <no-reply@example.com>`. */
  from: string;
}

/** An SMTP answer that will not change on retry (5xx): the message is refused for good. */
export class PermanentEmailError extends Error {
  constructor(
    message: string,
    readonly responseCode: number,
  ) {
    super(message);
    this.name = 'PermanentEmailError';
  }
}

/** A user-safe reason for an SMTP failure: the answer's code, never the server's text or network errors. */
export function emailPublicReason(err: unknown): string {
  const code = (err as { responseCode?: unknown } | null)?.responseCode;
  return typeof code === 'number' && Number.isInteger(code) && code >= 100 && code < 1000
    ? `the mail server refused the message (${code})`
    : 'the mail server could not be reached';
}

/** Seconds before an unresponsive SMTP server counts as down. */
const TIMEOUT_MS = 15_000;

export class EmailSender {
  private readonly transporter: Transporter<SMTPTransport.SentMessageInfo>;
  private readonly from: string;

  constructor(options: EmailSenderOptions) {
    const base: SMTPTransport.Options = { connectionTimeout: TIMEOUT_MS, greetingTimeout: TIMEOUT_MS, socketTimeout: TIMEOUT_MS };
    this.transporter =
      typeof options.transport === 'string'
        ? nodemailer.createTransport({ ...base, url: options.transport } as SMTPTransport.Options)
        : nodemailer.createTransport({ ...base, ...options.transport });
    this.from = options.from;
  }

  /** Resolves with the message id; rejects with `PermanentEmailError` for 5xx answers. */
  async send(to: string, content: EmailContent): Promise<string> {
    try {
      const info = await this.transporter.sendMail({ from: this.from, to, subject: content.subject, text: content.text, html: content.html });
      return info.messageId;
    } catch (err) {
      const code = (err as { responseCode?: unknown }).responseCode;
      if (typeof code === 'number' && code >= 500 && code < 600) throw new PermanentEmailError(`SMTP refused the message: ${(err as Error).message}`, code);
      throw err;
    }
  }

  close(): void {
    this.transporter.close();
  }
}
