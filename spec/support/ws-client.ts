/**
 * A real `ws` client for the tests: records every frame, awaits frames by predicate,
 * sends requests and awaits their one reply or error.
 */
import WebSocket from 'ws';

export type Frame = Record<string, any>;

export interface TestClient {
  ws: WebSocket;
  frames: Frame[];
  welcome: Frame;
  /** Resolves with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  next(pred: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  request(frame: Frame, timeoutMs?: number): Promise<Frame>;
  send(frame: Frame | string): void;
  events(channel?: string): Frame[];
  close(): Promise<void>;
}

let seq = 0;

export interface ConnectOptions {
  device?: string;
  header?: boolean;
  /** Answer the server's JSON pings. @default true */
  autoPong?: boolean;
}

/** Connect and wait for the `welcome` frame. Rejects with the HTTP status on a refused upgrade. */
export function connect(baseUrl: string, token: string, options: ConnectOptions = {}): Promise<TestClient> {
  const wsUrl = new URL('/v1/ws', baseUrl.replace(/^http/, 'ws'));
  if (baseUrl.includes('/', 8)) wsUrl.pathname = new URL(baseUrl).pathname.replace(/\/$/, '') + '/v1/ws';
  if (!options.header) wsUrl.searchParams.set('token', token);
  if (options.device) wsUrl.searchParams.set('device', options.device);
  const ws = new WebSocket(wsUrl, options.header ? { headers: { authorization: `Bearer ${token}` } } : {});
  const frames: Frame[] = [];
  const waiters = new Set<{ pred: (f: Frame) => boolean; resolve: (f: Frame) => void }>();
  const autoPong = options.autoPong ?? true;
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString()) as Frame;
    frames.push(f);
    if (f.type === 'ping' && autoPong && ws.readyState === ws.OPEN) ws.send('{"type":"pong"}');
    for (const w of [...waiters]) {
      if (w.pred(f)) {
        waiters.delete(w);
        w.resolve(f);
      }
    }
  });
  const next = (pred: (f: Frame) => boolean, timeoutMs = 5000) =>
    new Promise<Frame>((resolve, reject) => {
      const found = frames.find(pred);
      if (found) return resolve(found);
      const w = {
        pred,
        resolve: (f: Frame) => {
          clearTimeout(timer);
          resolve(f);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`timed out waiting for a frame; got ${JSON.stringify(frames.slice(-5))}`));
      }, timeoutMs);
      waiters.add(w);
    });
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body: body ? JSON.parse(body) : null, headers: res.headers })));
    });
    ws.once('error', (err) => reject(err));
    next((f) => f.type === 'welcome' || f.type === 'error', 5000).then((welcome) => {
      if (welcome.type !== 'welcome') return reject(new Error(`no welcome: ${JSON.stringify(welcome)}`));
      resolve({
        ws,
        frames,
        welcome,
        closed,
        next,
        send: (frame) => ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
        request: (frame, timeoutMs = 5000) => {
          const id = frame.id ?? `r${++seq}`;
          ws.send(JSON.stringify({ ...frame, id }));
          return next((f) => (f.type === 'reply' || f.type === 'error' || f.type === 'pong') && f.id === id, timeoutMs);
        },
        events: (channel) => frames.filter((f) => f.type === 'event' && (channel === undefined || f.channel === channel)),
        close: async () => {
          if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000);
          await closed;
        },
      });
    }, reject);
  });
}
