/**
 * Benchmark target `streamgate`: `streamgate serve` nodes (compiled dist/, so run
 * `npm run build` first) sharing the benchmark's private Redis.
 *
 * Every target module exports the same two halves, so other targets (`socketio`,
 * `ws-raw`) are added as more files next to this one:
 *
 * - `server` (used by run.mjs): `start(opts)` starts the target's processes and
 *   resolves to a handle `{ nodes, pids(), clientSpecs(list), publisherSpec(), warnings(), stop() }`.
 *   Specs are plain JSON, passed to the load generator over IPC.
 * - `client` (used by loadgen.mjs): `connect(spec, handlers)` opens one client
 *   connection, answers the target's heartbeats and reports events;
 *   `publisher(spec, options)` publishes through the target's server-side API.
 *
 * Channels are plain names chosen by run.mjs (`bench:<n>`); a target maps them to
 * whatever it calls them (Socket.IO rooms, for instance).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { closeSocket, startServerProcess } from '../peers/common.mjs';

export const name = 'streamgate';

/**
 * The checkout whose bin/, dist/ and config/ run: this repository, or
 * BENCH_STREAMGATE_ROOT (a copy of a build, to benchmark a fixed snapshot while the
 * working tree changes, or another version side by side).
 */
const ROOT = process.env.BENCH_STREAMGATE_ROOT ? process.env.BENCH_STREAMGATE_ROOT : fileURLToPath(new URL('../../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'streamgate');
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 12_000;
const LISTENING_RE = /streamgate: listening on http:\/\/([^\s:]+):(\d+)/;
const TENANT = 'bench';
const TOKEN_TTL_S = 4 * 3600;

// ---------------------------------------------------------------- server half

function nodeEnv({ redisUrl, secret, dir }) {
  return {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    JWT_SECRET: secret,
    STREAMGATE_DATA_DIR: dir,
    STREAMGATE_CONFIG: join(dir, 'config.json'),
  };
}

/** `streamgate keys create` in a node's data dir (before the node starts): the key. */
async function createServerKey({ redisUrl, secret, dir, track }) {
  const child = spawn(process.execPath, [BIN, 'keys', 'create', '--tenant', TENANT, '--label', 'bench'], {
    cwd: ROOT,
    env: nodeEnv({ redisUrl, secret, dir }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  let out = '';
  let errOut = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (errOut += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), START_TIMEOUT_MS);
  const code = await new Promise((resolve) => {
    child.once('error', (err) => {
      errOut += `${err.message}\n`;
      resolve(null);
    });
    child.once('close', (c) => resolve(c));
  });
  clearTimeout(timer);
  const key = out.trim().split('\n').pop();
  if (code !== 0 || !key?.startsWith('sgk_')) throw new Error(`streamgate keys create failed (${code}):\n${errOut}${out}`);
  return key;
}

async function startNode({ label, redisUrl, secret, dir, track }) {
  const node = await startServerProcess({
    label: `node ${label}`,
    args: [BIN, 'serve'],
    cwd: ROOT,
    env: nodeEnv({ redisUrl, secret, dir }),
    listening: LISTENING_RE,
    track,
    stopTimeoutMs: STOP_TIMEOUT_MS,
  });
  return { ...node, label, wsUrl: `ws://127.0.0.1:${node.port}/v1/ws` };
}

export const server = {
  /**
   * opts: { redisUrl, nodes (1 or 2), dir (a fresh temp dir), retentionCount?, track(child) }.
   * Nodes of one start share a fresh Redis key prefix, so steps never see each other's data.
   */
  async start(opts) {
    const secret = randomBytes(32).toString('hex');
    const config = {
      redis: { key_prefix: `bench-${randomUUID()}` },
      limits: { connections_per_ip: 100_000, connections_per_user: 100_000, messages_per_second: 100_000 },
    };
    // Resume needs the channel to keep K events (the default retention is 1,000).
    if (opts.retentionCount) config.defaults = { retention: { count: opts.retentionCount } };
    // BENCH_STREAMGATE_CONFIG: JSON merged over this (e.g. '{"defaults":{"presence":false}}').
    if (process.env.BENCH_STREAMGATE_CONFIG) {
      const extra = JSON.parse(process.env.BENCH_STREAMGATE_CONFIG);
      for (const [k, v] of Object.entries(extra)) config[k] = typeof v === 'object' && v && !Array.isArray(v) ? { ...config[k], ...v } : v;
    }
    const count = opts.nodes ?? 2;
    const nodes = [];
    let serverKey = null;
    try {
      for (let i = 0; i < count; i++) {
        const label = String.fromCharCode(65 + i);
        const dir = join(opts.dir, `node-${label}`);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
        // Node A's database holds a server key: the way a backend publishes.
        if (i === 0) serverKey = await createServerKey({ redisUrl: opts.redisUrl, secret, dir, track: opts.track });
        nodes.push(await startNode({ label, redisUrl: opts.redisUrl, secret, dir, track: opts.track }));
      }
    } catch (err) {
      await Promise.allSettled(nodes.map((n) => n.stop()));
      throw err;
    }
    const { default: jwt } = await import('jsonwebtoken');
    const sign = (claims) => jwt.sign({ tid: TENANT, channels: ['bench:*'], ...claims }, secret, { algorithm: 'HS256', expiresIn: TOKEN_TTL_S });
    return {
      name,
      nodes: nodes.map((n) => ({ label: n.label, pid: n.pid, url: n.url })),
      /** Every server process of the target (Redis is the rig's and counted by it). */
      pids: () => nodes.map((n) => n.pid),
      /** list: [{ node, user }] → one connect spec each (node = index into nodes). */
      clientSpecs(list) {
        return list.map(({ node, user }) => ({ wsUrl: nodes[node].wsUrl, token: sign({ sub: user }) }));
      },
      /**
       * Publishing over HTTP to node A (POST /v1/channels/{channel}/events), as a backend
       * does with a server key (auth 'key'), or with a user token carrying the
       * `publish` claim (auth 'token').
       */
      publisherSpec({ auth = 'key' } = {}) {
        const token = auth === 'key' ? serverKey : sign({ sub: 'bench-publisher', publish: ['bench:*'] });
        return { url: nodes[0].url, token };
      },
      /** Lines the nodes printed after starting (warnings, errors): checked into the results. */
      warnings() {
        return nodes.flatMap((n) => n.laterOutput().split('\n').filter(Boolean).map((l) => `${n.label}: ${l}`));
      },
      async stop() {
        const codes = await Promise.all(nodes.map((n) => n.stop()));
        return codes;
      },
    };
  },
};

// ---------------------------------------------------------------- client half

let WebSocketCtor = null;
async function loadWs() {
  WebSocketCtor ??= (await import('ws')).default;
  return WebSocketCtor;
}

const CONNECT_TIMEOUT_MS = 30_000;
const REPLY_TIMEOUT_MS = 30_000;

export const client = {
  /**
   * Open one connection. handlers: { onEvent(channel, id, data, at), onClose(code) }
   * where `at` is performance.now() when the frame arrived (before parsing).
   * Resolves after the `welcome` frame to { subscribe(channel, since?), close(), stats }.
   */
  async connect(spec, handlers) {
    const WebSocket = await loadWs();
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${spec.wsUrl}?token=${encodeURIComponent(spec.token)}`, { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS });
      const pending = new Map();
      let nextId = 1;
      let welcomed = false;
      const stats = { pings: 0, events: 0, errors: 0, closeCode: null };
      const conn = {
        stats,
        get open() {
          return ws.readyState === WebSocket.OPEN;
        },
        subscribe(channel, since) {
          const id = `s${nextId++}`;
          const frame = { type: 'subscribe', id, channel };
          if (since !== undefined) frame.since = since;
          return new Promise((res, rej) => {
            const timer = setTimeout(() => {
              pending.delete(id);
              rej(new Error(`no reply to subscribe ${channel} in ${REPLY_TIMEOUT_MS} ms`));
            }, REPLY_TIMEOUT_MS);
            pending.set(id, { res, rej, timer });
            ws.send(JSON.stringify(frame));
          });
        },
        close() {
          return closeSocket(ws);
        },
        terminate() {
          ws.terminate();
        },
      };
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error('no welcome in time'));
      }, CONNECT_TIMEOUT_MS);
      ws.on('message', (buf) => {
        const at = performance.now();
        const f = JSON.parse(buf.toString());
        switch (f.type) {
          case 'event':
            stats.events++;
            handlers.onEvent(f.channel, f.id, f.data, at);
            return;
          case 'ping':
            stats.pings++;
            ws.send('{"type":"pong"}');
            return;
          case 'welcome':
            welcomed = true;
            clearTimeout(timer);
            resolve(conn);
            return;
          case 'reply':
          case 'error': {
            const p = pending.get(f.id);
            if (!p) {
              stats.errors++;
              return;
            }
            pending.delete(f.id);
            clearTimeout(p.timer);
            if (f.type === 'reply') p.res(f);
            else p.rej(new Error(`${f.code}: ${f.message}`));
            return;
          }
          default:
        }
      });
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        res.resume();
        reject(new Error(`upgrade refused: HTTP ${res.statusCode}`));
      });
      ws.on('error', (err) => {
        if (!welcomed) {
          clearTimeout(timer);
          reject(err);
        }
      });
      ws.on('close', (code) => {
        stats.closeCode = code;
        clearTimeout(timer);
        for (const p of pending.values()) {
          clearTimeout(p.timer);
          p.rej(new Error(`closed ${code}`));
        }
        pending.clear();
        if (!welcomed) reject(new Error(`closed ${code} before welcome`));
        handlers.onClose?.(code);
      });
    });
  },

  /**
   * A publisher: `publish(channel, data)` resolves to the event id. HTTP POST
   * /v1/channels/{channel}/events over a keep-alive agent with `maxSockets` sockets.
   */
  publisher(spec, { maxSockets = 16 } = {}) {
    const agent = new http.Agent({ keepAlive: true, maxSockets });
    const base = new URL(spec.url);
    const auth = `Bearer ${spec.token}`;
    return {
      publish(channel, data) {
        const body = JSON.stringify({ event: 'bench', data });
        return new Promise((resolve, reject) => {
          const req = http.request(
            {
              agent,
              host: base.hostname,
              port: base.port,
              method: 'POST',
              path: `/v1/channels/${channel}/events`,
              headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: auth },
              timeout: 30_000,
            },
            (res) => {
              let text = '';
              res.setEncoding('utf8');
              res.on('data', (c) => (text += c));
              res.on('end', () => {
                if (res.statusCode !== 201) return reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
                try {
                  resolve(JSON.parse(text).id);
                } catch (err) {
                  reject(err);
                }
              });
              res.on('error', reject);
            },
          );
          req.on('timeout', () => req.destroy(new Error('publish timed out')));
          req.on('error', reject);
          req.end(body);
        });
      },
      close() {
        agent.destroy();
      },
    };
  },
};
