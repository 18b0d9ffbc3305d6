/**
 * Channel names, namespaces and the channel patterns of token claims (PROTOCOL §1, §2).
 * Pure functions, shared by the server and the SDK.
 */

const CHANNEL_RE = /^[A-Za-z0-9_\-:.@]{1,128}$/;
/** Tenant ids become part of Redis keys and rows, so they get the channel alphabet minus `:`. */
const TENANT_RE = /^[A-Za-z0-9_\-.@]{1,64}$/;

export const MAX_CHANNEL_LENGTH = 128;

export function isValidChannel(name: unknown): name is string {
  return typeof name === 'string' && CHANNEL_RE.test(name);
}

export function isValidTenant(id: unknown): id is string {
  return typeof id === 'string' && TENANT_RE.test(id);
}

/** The part of a channel name before the first `:` (the whole name when there is none). */
export function namespaceOf(channel: string): string {
  const i = channel.indexOf(':');
  return i === -1 ? channel : channel.slice(0, i);
}

/**
 * Does `channel` match one of the claim `patterns`? A pattern is an exact name, or a
 * prefix ending in `*` that matches one or more further characters
 * (`goal:*` matches `goal:1` and `goal:a:b`, not `goal:`).
 */
export function matchesAny(patterns: readonly string[] | undefined, channel: string): boolean {
  if (!patterns) return false;
  for (const p of patterns) {
    if (p.endsWith('*')) {
      const prefix = p.slice(0, -1);
      if (channel.length > prefix.length && channel.startsWith(prefix)) return true;
    } else if (p === channel) {
      return true;
    }
  }
  return false;
}
