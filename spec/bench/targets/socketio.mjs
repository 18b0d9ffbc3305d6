/**
 * Benchmark target `socketio`: two Socket.IO 4 nodes (peers/socketio-server.mjs)
 * sharing the benchmark's private Redis through @socket.io/redis-streams-adapter,
 * rooms instead of channels, an HTTP endpoint on node A (`POST /publish
 * {room, event, data}`) that emits to a room: the peer a Node user would use.
 * Clients: socket.io-client, websocket transport only, default heartbeats.
 * Same two halves as targets/streamgate.mjs. No resume (`supports.resume = false`).
 */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { httpPublisher, startPeer } from '../peers/common.mjs';

export const name = 'socketio';
export const supports = { resume: false };
const SCRIPT = fileURLToPath(new URL('../peers/socketio-server.mjs', import.meta.url));

// ---------------------------------------------------------------- server half

export const server = {
  /** opts: { redisUrl, nodes (1 or 2), track(child) }; each start uses a fresh stream name. */
  async start(opts) {
    const stream = `bench-sio-${randomUUID()}`;
    const count = opts.nodes ?? 2;
    const nodes = [];
    try {
      for (let i = 0; i < count; i++) {
        const label = String.fromCharCode(65 + i);
        nodes.push(await startPeer({ label, script: SCRIPT, env: { REDIS_URL: opts.redisUrl, BENCH_STREAM: stream, PORT: '0' }, track: opts.track }));
      }
    } catch (err) {
      await Promise.allSettled(nodes.map((n) => n.stop()));
      throw err;
    }
    return {
      name,
      nodes: nodes.map((n) => ({ label: n.label, pid: n.pid, url: n.url })),
      pids: () => nodes.map((n) => n.pid),
      clientSpecs(list) {
        return list.map(({ node }) => ({ url: nodes[node].url }));
      },
      publisherSpec() {
        return { url: nodes[0].url };
      },
      warnings() {
        return nodes.flatMap((n) => n.laterOutput().split('\n').filter(Boolean).map((l) => `${n.label}: ${l}`));
      },
      async stop() {
        return Promise.all(nodes.map((n) => n.stop()));
      },
    };
  },
};

// ---------------------------------------------------------------- client half

let ioFn = null;
const CONNECT_TIMEOUT_MS = 30_000;
const REPLY_TIMEOUT_MS = 30_000;

export const client = {
  /**
   * handlers: { onEvent(room, id=null, data, at), onClose(reason) }. `at` is taken in the
   * event handler, i.e. after socket.io-client decoded the packet. Resolves on `connect`.
   */
  async connect(spec, handlers) {
    ioFn ??= (await import('socket.io-client')).io;
    return new Promise((resolve, reject) => {
      const socket = ioFn(spec.url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: CONNECT_TIMEOUT_MS });
      const stats = { pings: 0, events: 0, errors: 0, closeCode: null };
      let connected = false;
      const conn = {
        stats,
        get open() {
          return socket.connected;
        },
        subscribe(room) {
          return socket
            .timeout(REPLY_TIMEOUT_MS)
            .emitWithAck('join', room)
            .then((r) => {
              if (!r?.ok) throw new Error(`join ${room} refused`);
              return r;
            });
        },
        close() {
          if (!socket.connected) return Promise.resolve();
          return new Promise((res) => {
            const timer = setTimeout(res, 5000);
            socket.once('disconnect', () => {
              clearTimeout(timer);
              res();
            });
            socket.disconnect();
          });
        },
        terminate() {
          socket.disconnect();
        },
      };
      socket.io.on('ping', () => stats.pings++);
      socket.onAny((event, data) => {
        const at = performance.now();
        stats.events++;
        handlers.onEvent(event, null, data, at);
      });
      socket.once('connect', () => {
        connected = true;
        resolve(conn);
      });
      socket.once('connect_error', (err) => {
        if (!connected) {
          socket.disconnect();
          reject(err);
        }
      });
      socket.on('disconnect', (reason) => {
        stats.closeCode = reason;
        handlers.onClose?.(reason);
      });
    });
  },

  publisher(spec, options) {
    return httpPublisher(spec, options);
  },
};
