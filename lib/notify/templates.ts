/**
 * Email templates: one notification, and the daily digest of unread ones, each as
 * plain text and HTML. `{{name}}` is replaced by a value, HTML-escaped in the HTML
 * templates; `{{{name}}}` inserts already-rendered HTML.
 */

export interface EmailContent {
  subject: string;
  text: string;
  html: string;
}

/** What a template needs of a notification. */
export interface TemplateNotification {
  title: string;
  body: string;
  channel: string;
  createdAt: Date;
  data: Record<string, unknown>;
}

export interface TemplateOptions {
  /** Relative `data.url` links are made absolute with it; without it they are left out. */
  baseUrl: string | null;
}

const NOTIFICATION_TEXT = `{{title}}

{{body}}
{{link}}
--
Sent by Streamgate for {{channel}} at {{time}}.
Change what you receive in your notification settings.
`;

const NOTIFICATION_HTML = `<!doctype html>
<html><body style="font-family: sans-serif; line-height: 1.4">
<h2 style="margin: 0 0 8px">{{title}}</h2>
<p style="white-space: pre-wrap">{{body}}</p>
{{{link}}}
<p style="color: #777; font-size: 12px">Sent by Streamgate for {{channel}} at {{time}}. Change what you receive in your notification settings.</p>
</body></html>
`;

const DIGEST_TEXT = `You have {{total}} unread notification{{plural}}.

{{{items}}}{{more}}
--
Sent by Streamgate once a day. Turn the digest off in your notification settings.
`;

const DIGEST_ITEM_TEXT = `* {{title}}{{body}}
  {{channel}}, {{time}}{{link}}
`;

const DIGEST_HTML = `<!doctype html>
<html><body style="font-family: sans-serif; line-height: 1.4">
<h2 style="margin: 0 0 8px">You have {{total}} unread notification{{plural}}</h2>
<ul style="padding-left: 18px">
{{{items}}}</ul>
<p>{{more}}</p>
<p style="color: #777; font-size: 12px">Sent by Streamgate once a day. Turn the digest off in your notification settings.</p>
</body></html>
`;

const DIGEST_ITEM_HTML = `<li style="margin-bottom: 8px"><strong>{{title}}</strong>{{{body}}}<br><span style="color: #777; font-size: 12px">{{channel}}, {{time}}</span>{{{link}}}</li>
`;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/** Fill `template`; `html` escapes `{{…}}` values (never `{{{…}}}` ones). */
export function render(template: string, values: Record<string, string>, html: boolean): string {
  return template.replace(/\{\{\{(\w+)\}\}\}|\{\{(\w+)\}\}/g, (_, raw: string | undefined, plain: string | undefined) => {
    if (raw !== undefined) return values[raw] ?? '';
    const v = values[plain!] ?? '';
    return html ? escapeHtml(v) : v;
  });
}

/** The notification's link: `data.url` when it is http(s), or relative and `baseUrl` is set. */
export function linkOf(data: Record<string, unknown>, baseUrl: string | null): string | null {
  const url = data.url;
  if (typeof url !== 'string' || url.length > 2048) return null;
  try {
    const abs = url.startsWith('/') && !url.startsWith('//') ? (baseUrl ? new URL(url, baseUrl) : null) : new URL(url);
    return abs && (abs.protocol === 'https:' || abs.protocol === 'http:') ? abs.href : null;
  } catch {
    return null;
  }
}

const time = (d: Date): string => d.toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
/** Header values may not carry line breaks. */
const oneLine = (s: string): string => s.replace(/[\r\n]+/g, ' ').trim();

export function notificationEmail(n: TemplateNotification, options: TemplateOptions): EmailContent {
  const link = linkOf(n.data, options.baseUrl);
  const values = { title: n.title, body: n.body, channel: n.channel, time: time(n.createdAt) };
  return {
    subject: oneLine(n.title),
    text: render(NOTIFICATION_TEXT, { ...values, link: link ? `\n${link}\n` : '' }, false),
    html: render(NOTIFICATION_HTML, { ...values, link: link ? `<p><a href="${escapeHtml(link)}">Open</a></p>` : '' }, true),
  };
}

export function digestEmail(items: readonly TemplateNotification[], total: number, options: TemplateOptions): EmailContent {
  const plural = total === 1 ? '' : 's';
  const rest = total - items.length;
  const more = rest > 0 ? `…and ${rest} more.` : '';
  const textItems = items
    .map((n) => {
      const link = linkOf(n.data, options.baseUrl);
      return render(DIGEST_ITEM_TEXT, { title: n.title, body: n.body ? `: ${n.body}` : '', channel: n.channel, time: time(n.createdAt), link: link ? `\n  ${link}` : '' }, false);
    })
    .join('');
  const htmlItems = items
    .map((n) => {
      const link = linkOf(n.data, options.baseUrl);
      return render(
        DIGEST_ITEM_HTML,
        {
          title: n.title,
          body: n.body ? `<br>${escapeHtml(n.body)}` : '',
          channel: n.channel,
          time: time(n.createdAt),
          link: link ? ` <a href="${escapeHtml(link)}">Open</a>` : '',
        },
        true,
      );
    })
    .join('');
  const values = { total: String(total), plural, more };
  return {
    subject: `You have ${total} unread notification${plural}`,
    text: render(DIGEST_TEXT, { ...values, items: textItems }, false),
    html: render(DIGEST_HTML, { ...values, items: htmlItems }, true),
  };
}
