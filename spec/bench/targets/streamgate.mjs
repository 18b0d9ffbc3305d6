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
 *   Streamgate's client half also has `connectSse` and `connectPoll` (the `sse` and
 *   `poll` scenarios, which only targets with `supports.sse` / `supports.poll` run).
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
import { closeSocket, jsonPoster, startServerProcess } from '../peers/common.mjs';

export const name = 'streamgate';
/** Scenarios that run only where a target says so (run.mjs): SSE and long-polling clients. */
export const supports = { sse: true, poll: true };

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
      /**
       * list: [{ node, user }] → one connect spec each (node = index into nodes); `url` is
       * the node's HTTP base, for SSE and long-polling clients.
       */
      clientSpecs(list) {
        return list.map(({ node, user }) => ({ wsUrl: nodes[node].wsUrl, url: nodes[node].url, token: sign({ sub: user }) }));
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
/** A held poll ends by itself after 25 s (PROTOCOL §6 default); give up on it 15 s later. */
const POLL_GIVE_UP_MS = 40_000;
/** After a failed poll (refused, reset), wait this long before polling again with the same cursor. */
const POLL_RETRY_MS = 100;

/**
 * One keep-alive agent for every SSE stream and poll of this load generator. An open
 * stream or a held poll occupies a socket, so the pool is unbounded (the fd limit and
 * the nodes' connections_per_ip, raised in the bench config, are the real bounds);
 * keep-alive lets each polling client reuse its socket from one poll to the next.
 */
let streamAgent = null;
function httpAgent() {
  streamAgent ??= new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 4096 });
  return streamAgent;
}

/** `/v1/sse` or `/v1/poll` with the channels and the token in the query (PROTOCOL §5, §6). */
function streamPath(path, spec, extra = '') {
  return `${path}?channels=${encodeURIComponent(spec.channels.join(','))}&token=${encodeURIComponent(spec.token)}${extra}`;
}

/**
 * A frame other than an event (presence, typing, reset…): counted, in total and per
 * `type.action`, so the results show what else a transport carried.
 */
function countOther(stats, f) {
  stats.otherFrames++;
  const k = `other.${f?.type}${f?.action ? `.${f.action}` : ''}`;
  stats[k] = (stats[k] ?? 0) + 1;
}

/** Read a refused stream request's body into an Error. */
function refused(res, reject) {
  let text = '';
  res.setEncoding('utf8');
  res.on('data', (c) => (text += c));
  res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`)));
  res.on('error', reject);
}

/**
 * Split an SSE text stream into messages (blank-line separated) and hand each to
 * onMessage(eventName, dataText). Comments (`:`), `retry:` and `id:` lines are skipped:
 * the benchmark never reconnects, so it needs no cursor.
 */
function sseParser(onMessage) {
  let buf = '';
  return (chunk) => {
    buf += chunk;
    for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      let data = null;
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? '' : line.slice(line[i + 1] === ' ' ? i + 2 : i + 1);
        if (field === 'event') event = value;
        else if (field === 'data') data = data === null ? value : `${data}\n${value}`;
      }
      if (data !== null) onMessage(event, data);
    }
  };
}

export const client = {
  /**
   * Open one connection. handlers: { onEvent(channel, id, data, at), onClose(code) }
   * where `at` is performance.now() when the frame arrived (before parsing).
   * Resolves after the `welcome` frame to { subscribe(channel, since?), request(type,
   * fields), close(), stats }. `request` sends any client frame with a fresh `id` and
   * resolves to its `reply` (rejects on `error`): targets/streamgate-ws.mjs publishes with it.
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
          return conn.request('subscribe', since === undefined ? { channel } : { channel, since });
        },
        request(type, fields) {
          const id = `r${nextId++}`;
          return new Promise((res, rej) => {
            if (ws.readyState !== WebSocket.OPEN) return rej(new Error(`${type}: connection closed (${stats.closeCode})`));
            const timer = setTimeout(() => {
              pending.delete(id);
              rej(new Error(`no reply to ${type} ${fields.channel ?? ''} in ${REPLY_TIMEOUT_MS} ms`));
            }, REPLY_TIMEOUT_MS);
            pending.set(id, { res, rej, timer });
            ws.send(JSON.stringify({ type, id, ...fields }));
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
   * One SSE client (GET /v1/sse), subscribed to spec.channels through the query string.
   * spec: { url, token, channels }; handlers as for `connect` (`at` is the arrival of the
   * chunk that completed the message). Resolves after the `welcome` frame to
   * { close(), terminate(), open, stats }. The node fetched the channels' positions
   * before the welcome and subscribes from them, so nothing published after the
   * welcome is missed even though the subscriptions complete after it.
   */
  connectSse(spec, handlers) {
    const base = new URL(spec.url);
    return new Promise((resolve, reject) => {
      const stats = { pings: 0, events: 0, errors: 0, otherFrames: 0, closeCode: null };
      let welcomed = false;
      let ended = false;
      let req = null;
      const conn = {
        stats,
        get open() {
          return !ended;
        },
        close() {
          ended = true;
          req.destroy();
          return Promise.resolve();
        },
        terminate() {
          conn.close();
        },
      };
      const timer = setTimeout(() => req.destroy(new Error('no welcome in time')), CONNECT_TIMEOUT_MS);
      const finish = (code) => {
        clearTimeout(timer);
        if (stats.closeCode === null) stats.closeCode = code;
        const wasOpen = !ended;
        ended = true;
        if (!welcomed) reject(new Error(`SSE stream ended before welcome (${stats.closeCode})`));
        else if (wasOpen) handlers.onClose?.(stats.closeCode);
      };
      let at = 0;
      const parse = sseParser((event, text) => {
        if (event === 'event') {
          const f = JSON.parse(text);
          stats.events++;
          handlers.onEvent(f.channel, f.id, f.data, at);
        } else if (event === 'welcome') {
          welcomed = true;
          clearTimeout(timer);
          resolve(conn);
        } else if (event === 'close') {
          stats.closeCode = JSON.parse(text).code;
        } else if (event === 'error') {
          stats.errors++;
        } else countOther(stats, JSON.parse(text));
      });
      req = http.get({ agent: httpAgent(), host: base.hostname, port: base.port, path: streamPath('/v1/sse', spec), headers: { accept: 'text/event-stream' } }, (res) => {
        if (res.statusCode !== 200) {
          clearTimeout(timer);
          ended = true;
          return refused(res, reject);
        }
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          at = performance.now();
          try {
            parse(chunk);
          } catch {
            // A frame that is not JSON: counted, never a crash of the load generator.
            stats.errors++;
          }
        });
        res.on('error', () => undefined);
        res.on('close', () => finish('end'));
      });
      req.on('error', (err) => {
        if (!welcomed) {
          clearTimeout(timer);
          ended = true;
          reject(err);
        }
      });
    });
  },

  /**
   * One long-polling client (GET /v1/poll), subscribed to spec.channels through the query
   * string. It first polls without a cursor (answered at once with the current cursor),
   * then resolves to { close(), terminate(), open, stats } and loops: poll with its
   * cursor, report the events, poll again at once, so a delivery's latency includes
   * the poll round trip. `at` is when an answer arrived in full. A failed poll (refused,
   * reset) is counted in stats.errors and retried with the same cursor after a pause.
   */
  async connectPoll(spec, handlers) {
    const base = new URL(spec.url);
    const stats = { pings: 0, events: 0, errors: 0, otherFrames: 0, polls: 0, emptyPolls: 0, lastError: null, closeCode: null };
    let closed = false;
    let current = null;
    const poll = (cursor) =>
      new Promise((resolve, reject) => {
        const path = streamPath('/v1/poll', spec, cursor ? `&cursor=${encodeURIComponent(cursor)}` : '');
        const req = http.get({ agent: httpAgent(), host: base.hostname, port: base.port, path }, (res) => {
          if (res.statusCode !== 200) return refused(res, reject);
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            const at = performance.now();
            try {
              resolve([JSON.parse(text), at]);
            } catch (err) {
              reject(err);
            }
          });
          res.on('error', reject);
        });
        req.setTimeout(POLL_GIVE_UP_MS, () => req.destroy(new Error('poll not answered in time')));
        req.on('error', reject);
        current = req;
      });
    const [first] = await poll(null);
    let cursor = first.cursor;
    const loop = (async () => {
      while (!closed) {
        try {
          const [answer, at] = await poll(cursor);
          stats.polls++;
          if (answer.frames.length === 0) stats.emptyPolls++;
          for (const f of answer.frames) {
            if (f.type === 'event') {
              stats.events++;
              handlers.onEvent(f.channel, f.id, f.data, at);
            } else countOther(stats, f);
          }
          cursor = answer.cursor;
        } catch (err) {
          if (closed) break;
          stats.errors++;
          stats.lastError = String(err?.message ?? err).slice(0, 160);
          await new Promise((r) => setTimeout(r, POLL_RETRY_MS));
        }
      }
      stats.closeCode = 'closed';
      handlers.onClose?.(stats.closeCode);
    })();
    return {
      stats,
      get open() {
        return !closed;
      },
      close() {
        closed = true;
        current?.destroy();
        return loop;
      },
      terminate() {
        closed = true;
        current?.destroy();
      },
    };
  },

  /**
   * A publisher: `publish(channel, data)` resolves to the event id. HTTP POST
   * /v1/channels/{channel}/events over a keep-alive agent with `maxSockets` sockets.
   */
  publisher(spec, { maxSockets = 16 } = {}) {
    const poster = jsonPoster(spec.url, { maxSockets, headers: { authorization: `Bearer ${spec.token}` } });
    return {
      publish: async (channel, data) => JSON.parse(await poster.post(`/v1/channels/${channel}/events`, { event: 'bench', data })).id,
      close: () => poster.close(),
    };
  },
};
