/**
 * A small HTTP/WebSocket proxy on loopback for client tests, able to break the way to
 * the gateway as real proxies do: refuse WebSocket upgrades, accept them and pass no
 * frame, buffer SSE responses, drop every connection, or refuse new ones. It can also
 * serve fixed files (the demo page and bundle) itself.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface ProxyOptions {
  /** The gateway's port on 127.0.0.1. */
  targetPort: number;
  /** `refuse`: answer upgrades 502; `blackhole`: pass the 101 and nothing after it. @default 'pass' */
  websocket?: 'pass' | 'refuse' | 'blackhole';
  /** `buffer`: hold SSE responses (headers and body) until the gateway ends them. @default 'pass' */
  sse?: 'pass' | 'buffer';
  /** Paths answered by the proxy itself. */
  files?: Record<string, { type: string; body: string | Buffer }>;
}

export interface TestProxy {
  url: string;
  port: number;
  options: ProxyOptions;
  /** New connections are closed at once while true. */
  refuse: boolean;
  /** WebSocket tunnels pass nothing either way while true (a silently dead path). */
  frozen: boolean;
  /** When a WebSocket tunnel last passed bytes from the server to its client (ms). */
  lastDownAt: number;
  /** Counts of what passed: upgrades, SSE and poll requests. */
  counts: { upgrades: number; sse: number; poll: number };
  /** Destroy every open connection, both sides. */
  dropAll(): void;
  close(): Promise<void>;
}

export async function startProxy(options: ProxyOptions): Promise<TestProxy> {
  const sockets = new Set<Duplex>();
  const tracked = new WeakSet<Duplex>();
  const track = (s: Duplex) => {
    // Keep-alive sockets of the agent come back for every request: listen once.
    if (tracked.has(s)) return;
    tracked.add(s);
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const counts = { upgrades: 0, sse: 0, poll: 0 };
  let proxy: TestProxy;

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const file = options.files?.[path];
    if (file) {
      res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' });
      res.end(file.body);
      return;
    }
    if (path.endsWith('/v1/sse')) counts.sse++;
    if (path.endsWith('/v1/poll')) counts.poll++;
    forward(req, res, path.endsWith('/v1/sse') && options.sse === 'buffer');
  });

  function forward(req: IncomingMessage, res: ServerResponse, buffer: boolean): void {
    const up = httpRequest(
      { host: '127.0.0.1', port: options.targetPort, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        if (!buffer) {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        upRes.on('data', (c: Buffer) => chunks.push(c));
        upRes.on('end', () => {
          if (res.destroyed) return;
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          res.end(Buffer.concat(chunks));
        });
      },
    );
    up.on('socket', track);
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"unavailable","message":"proxy: gateway unreachable"}}');
    });
    res.on('close', () => up.destroy());
    req.pipe(up);
  }

  server.on('connection', (s: Socket) => {
    if (proxy?.refuse) {
      s.destroy();
      return;
    }
    track(s);
  });

  server.on('upgrade', (req: IncomingMessage, client: Duplex, head: Buffer) => {
    counts.upgrades++;
    const mode = options.websocket ?? 'pass';
    if (mode === 'refuse') {
      client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\nWebSocket not supported\n');
      return;
    }
    const up = netConnect(options.targetPort, '127.0.0.1');
    track(up);
    up.on('connect', () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(lines.join('\r\n') + '\r\n\r\n');
      if (head.length) up.write(head);
      client.on('data', (chunk: Buffer) => {
        if (!proxy.frozen) up.write(chunk);
      });
      if (mode === 'pass') {
        up.on('data', (chunk: Buffer) => {
          if (proxy.frozen) return;
          proxy.lastDownAt = Date.now();
          client.write(chunk);
        });
        return;
      }
      // Blackhole: pass the response head (the 101), then nothing.
      let seen = Buffer.alloc(0);
      let passedHead = false;
      up.on('data', (chunk: Buffer) => {
        if (passedHead) return;
        seen = Buffer.concat([seen, chunk]);
        const end = seen.indexOf('\r\n\r\n');
        if (end === -1) return;
        passedHead = true;
        client.write(seen.subarray(0, end + 4));
      });
    });
    up.on('close', () => client.destroy());
    client.on('close', () => up.destroy());
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  proxy = {
    url: `http://127.0.0.1:${port}`,
    port,
    options,
    refuse: false,
    frozen: false,
    lastDownAt: 0,
    counts,
    dropAll() {
      for (const s of [...sockets]) s.destroy();
    },
    close() {
      proxy.dropAll();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
