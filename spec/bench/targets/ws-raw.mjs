/**
 * Benchmark target `ws-raw`: ONE process (peers/ws-raw-server.mjs) with plain `ws`, an
 * in-memory room map and an HTTP publish endpoint: the upper bound, no durability, no
 * second node. Whatever node count a scenario asks for, it runs one node and every
 * client connects to it. Same two halves as targets/streamgate.mjs. No resume.
 */
import { fileURLToPath } from 'node:url';
import { closeSocket, httpPublisher, startPeer } from '../peers/common.mjs';

export const name = 'ws-raw';
export const supports = { resume: false };
const SCRIPT = fileURLToPath(new URL('../peers/ws-raw-server.mjs', import.meta.url));

// ---------------------------------------------------------------- server half

export const server = {
  /** opts: { track(child) }; `nodes` is ignored (always one). */
  async start(opts) {
    const node = await startPeer({ label: 'A', script: SCRIPT, env: { PORT: '0' }, track: opts.track });
    return {
      name,
      nodes: [{ label: node.label, pid: node.pid, url: node.url }],
      pids: () => [node.pid],
      clientSpecs(list) {
        return list.map(() => ({ wsUrl: `ws://127.0.0.1:${node.port}/` }));
      },
      publisherSpec() {
        return { url: node.url };
      },
      warnings() {
        return node.laterOutput().split('\n').filter(Boolean).map((l) => `A: ${l}`);
      },
      async stop() {
        return [await node.stop()];
      },
    };
  },
};

// ---------------------------------------------------------------- client half

let WebSocketCtor = null;
const CONNECT_TIMEOUT_MS = 30_000;
const REPLY_TIMEOUT_MS = 30_000;

export const client = {
  /** handlers: { onEvent(room, id=null, data, at), onClose(code) }; `at` = frame arrival, before parsing. */
  async connect(spec, handlers) {
    WebSocketCtor ??= (await import('ws')).default;
    const WebSocket = WebSocketCtor;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(spec.wsUrl, { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS });
      const pending = new Map();
      let nextId = 1;
      let opened = false;
      const stats = { pings: 0, events: 0, errors: 0, closeCode: null };
      const conn = {
        stats,
        get open() {
          return ws.readyState === WebSocket.OPEN;
        },
        subscribe(channel) {
          const id = `s${nextId++}`;
          return new Promise((res, rej) => {
            const timer = setTimeout(() => {
              pending.delete(id);
              rej(new Error(`no reply to subscribe ${channel} in ${REPLY_TIMEOUT_MS} ms`));
            }, REPLY_TIMEOUT_MS);
            pending.set(id, { res, rej, timer });
            ws.send(JSON.stringify({ type: 'subscribe', id, channel }));
          });
        },
        close() {
          return closeSocket(ws);
        },
        terminate() {
          ws.terminate();
        },
      };
      ws.on('ping', () => stats.pings++);
      ws.on('open', () => {
        opened = true;
        resolve(conn);
      });
      ws.on('message', (buf) => {
        const at = performance.now();
        const f = JSON.parse(buf.toString());
        if (f.type === 'event') {
          stats.events++;
          handlers.onEvent(f.channel, null, f.data, at);
        } else if (f.type === 'reply') {
          const p = pending.get(f.id);
          if (!p) return void stats.errors++;
          pending.delete(f.id);
          clearTimeout(p.timer);
          p.res(f);
        }
      });
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
      });
      ws.on('error', (err) => {
        if (!opened) reject(err);
      });
      ws.on('close', (code) => {
        stats.closeCode = code;
        for (const p of pending.values()) {
          clearTimeout(p.timer);
          p.rej(new Error(`closed ${code}`));
        }
        pending.clear();
        if (!opened) reject(new Error(`closed ${code} before open`));
        handlers.onClose?.(code);
      });
    });
  },

  publisher(spec, options) {
    return httpPublisher(spec, options);
  },
};
