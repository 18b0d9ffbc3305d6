/**
 * Web push endpoints come from users, so the worker must not be made to post to
 * internal services. Checking the endpoint's host name when it is registered is not
 * enough (`127.0.0.1.nip.io` and DNS rebinding resolve public-looking names to
 * private addresses), so the check is on the address actually connected to: the
 * HTTPS agent web push uses resolves names with a `lookup` that drops loopback,
 * private, link-local, unique-local, unspecified, multicast and reserved addresses
 * (IPv4 and IPv6, IPv4-mapped and other IPv4-embedding IPv6 forms included), and
 * refuses IP literals in those ranges (Node connects to literals without a lookup).
 */
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import { Agent, type AgentOptions } from 'node:https';
import { isIP, isIPv4, type LookupFunction } from 'node:net';
import type { Duplex } from 'node:stream';

/** A connection refused because of where it would go. */
export class BlockedAddressError extends Error {
  readonly code = 'ERR_NOTIFY_BLOCKED_ADDRESS';
  constructor(message: string) {
    super(message);
    this.name = 'BlockedAddressError';
  }
}

/** An IPv4 or IPv6 address as bytes (4 or 16), or null when it is not one. */
export function parseIp(address: string): Uint8Array | null {
  const text = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  if (isIPv4(text)) return Uint8Array.from(text.split('.').map(Number));
  if (isIP(text) !== 6) return null;
  let head = text;
  let tail: number[] = [];
  // A trailing dotted quad (::ffff:1.2.3.4) is the last two groups.
  const quad = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const v4 = quad[2]!.split('.').map(Number);
    tail = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    head = quad[1]!.endsWith('::') ? quad[1]! : quad[1]!.slice(0, -1);
  }
  const [left, right] = head.includes('::') ? (head.split('::') as [string, string]) : [head, null];
  const groups = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const l = groups(left);
  const r = right === null ? [] : groups(right);
  const fill = 8 - tail.length - l.length - r.length;
  if (fill < 0 || (right === null && fill !== 0)) return null;
  const all = [...l, ...new Array<number>(fill).fill(0), ...r, ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

function inV4(b: Uint8Array, net: [number, number, number, number], bits: number): boolean {
  for (let i = 0; i < 4; i++) {
    const take = Math.max(0, Math.min(8, bits - i * 8));
    if (take === 0) return true;
    const mask = (0xff << (8 - take)) & 0xff;
    if ((b[i]! & mask) !== (net[i]! & mask)) return false;
  }
  return true;
}

/** IPv4 ranges no push service lives in. */
const BLOCKED_V4: Array<[[number, number, number, number], number]> = [
  [[0, 0, 0, 0], 8], // "this network", unspecified
  [[10, 0, 0, 0], 8], // private
  [[100, 64, 0, 0], 10], // carrier-grade NAT
  [[127, 0, 0, 0], 8], // loopback
  [[169, 254, 0, 0], 16], // link-local (cloud metadata services)
  [[172, 16, 0, 0], 12], // private
  [[192, 0, 0, 0], 24], // IETF protocol assignments
  [[192, 168, 0, 0], 16], // private
  [[198, 18, 0, 0], 15], // benchmarking
  [[224, 0, 0, 0], 4], // multicast
  [[240, 0, 0, 0], 4], // reserved, broadcast
];

function blockedV4(b: Uint8Array): boolean {
  return BLOCKED_V4.some(([net, bits]) => inV4(b, net, bits));
}

function blockedV6(b: Uint8Array): boolean {
  const zeros = (from: number, to: number) => b.subarray(from, to).every((x) => x === 0);
  // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped): judge the IPv4 address.
  if (zeros(0, 10) && ((b[10] === 0 && b[11] === 0) || (b[10] === 0xff && b[11] === 0xff))) {
    if (zeros(10, 16) || (zeros(10, 15) && b[15] === 1)) return true;
    return blockedV4(b.subarray(12, 16));
  }
  // 64:ff9b::/96 (NAT64) embeds an IPv4 address in its last 32 bits.
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return blockedV4(b.subarray(12, 16));
  // 2002::/16 (6to4) embeds one in bits 16 to 48.
  if (b[0] === 0x20 && b[1] === 0x02) return blockedV4(b.subarray(2, 6));
  if (b[0] === 0xff) return true; // multicast ff00::/8
  if ((b[0]! & 0xfe) === 0xfc) return true; // unique local fc00::/7
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return true; // link-local fe80::/10
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0xc0) return true; // site-local fec0::/10 (deprecated)
  if (b[0] === 0x01 && zeros(1, 8)) return true; // discard 100::/64
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0x0d && b[3] === 0xb8) return true; // documentation 2001:db8::/32
  return false;
}

/** True when `address` is an IP address a push service may have: public unicast. */
export function isPublicAddress(address: string): boolean {
  const b = parseIp(address);
  if (!b) return false;
  return b.length === 4 ? !blockedV4(b) : !blockedV6(b);
}

type Resolve = (hostname: string, options: LookupAllOptions, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void;

const defaultResolve: Resolve = (hostname, options, callback) => dnsLookup(hostname, options, callback);

/**
 * A `lookup` for sockets that resolves with `resolve` (default `dns.lookup`) and
 * keeps only public addresses; none left is an error (`BlockedAddressError`).
 */
export function publicOnlyLookup(resolve: Resolve = defaultResolve): LookupFunction {
  return ((hostname: string, options: LookupOneOptions | LookupAllOptions, callback: (...args: unknown[]) => void) => {
    const { all, ...rest } = (options ?? {}) as LookupAllOptions;
    resolve(hostname, { ...rest, all: true }, (err, addresses) => {
      if (err) return callback(err);
      const allowed = (addresses ?? []).filter((a) => isPublicAddress(a.address));
      if (allowed.length === 0) return callback(new BlockedAddressError(`${hostname} resolves to no public address`));
      if (all) return callback(null, allowed);
      callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  }) as LookupFunction;
}

export interface GuardedAgentOptions {
  /** Extra trusted CA certificates (PEM); with them the system roots are kept. */
  ca?: string | readonly string[];
  /** Only port 443 (production). @default false */
  httpsPortOnly?: boolean;
  /** Name resolution, for tests. @default dns.lookup */
  resolve?: Resolve;
  agentOptions?: AgentOptions;
}

/**
 * An HTTPS agent that connects to public addresses only: names through
 * `publicOnlyLookup`, IP literals checked directly, and (with `httpsPortOnly`) only
 * to port 443.
 */
export function publicOnlyAgent(options: GuardedAgentOptions = {}): Agent {
  const agent = new Agent({
    keepAlive: true,
    ...options.agentOptions,
    ...(options.ca !== undefined ? { ca: options.ca as string | string[] } : {}),
    lookup: publicOnlyLookup(options.resolve),
  });
  const create = agent.createConnection.bind(agent) as (opts: unknown, cb?: unknown) => Duplex | undefined;
  agent.createConnection = ((opts: { host?: string | null; port?: number | string | null }, callback?: (err: Error | null, socket?: Duplex) => void) => {
    const host = (opts.host ?? '').replace(/^\[|\]$/g, '');
    let problem: string | null = null;
    if (options.httpsPortOnly && Number(opts.port ?? 443) !== 443) problem = `port ${String(opts.port)} is not 443`;
    else if (isIP(host) && !isPublicAddress(host)) problem = `${host} is not a public address`;
    if (problem) {
      const err = new BlockedAddressError(problem);
      // Through the callback, asynchronously: the request emits 'error'.
      if (callback) process.nextTick(callback, err);
      else throw err;
      return undefined;
    }
    return create(opts, callback);
  }) as Agent['createConnection'];
  return agent;
}
