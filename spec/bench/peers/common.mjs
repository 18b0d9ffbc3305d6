/**
 * Helpers shared by the targets: starting a server process and waiting for its
 * listening line (every target), and the HTTP publisher that posts `{room, event, data}`
 * to a peer's `POST /publish` (targets/socketio.mjs, targets/ws-raw.mjs).
 */
import { spawn } from 'node:child_process';
import http from 'node:http';

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 8_000;
const LISTENING_RE = /peer: listening on http:\/\/([^\s:]+):(\d+)/;

function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Spawn a server process (`node ...args`) and resolve once it prints its listening line
 * (`listening` captures the port as its second group). Shared by every target.
 */
export async function startServerProcess({ label, args, cwd, env, listening, track, stopTimeoutMs = STOP_TIMEOUT_MS }) {
  // BENCH_NODE_ARGS: extra node flags for the servers, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`.
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-32_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`${label} did not start within ${START_TIMEOUT_MS} ms:\n${output}`)), START_TIMEOUT_MS);
    const onData = () => {
      const m = listening.exec(output);
      if (m) {
        cleanup();
        resolve(Number(m[2]));
      }
    };
    // 'close' (not 'exit'): it comes after the pipes are drained, so the message is complete.
    const onExit = (code, signal) => fail(new Error(`${label} exited (${code ?? signal}) before listening:\n${output}`));
    const onError = (err) => fail(err);
    function cleanup() {
      clearTimeout(timer);
      child.stderr.off('data', onData);
      child.off('close', onExit);
      child.off('error', onError);
    }
    function fail(err) {
      cleanup();
      child.kill('SIGKILL');
      reject(err);
    }
    child.stderr.on('data', onData);
    child.once('close', onExit);
    child.once('error', onError);
  });
  const listenedAt = output.length;
  return {
    label,
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    /** What the process printed after its listening line: warnings, errors. */
    laterOutput: () => output.slice(listenedAt).trim(),
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const gone = exited(child);
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
      await gone;
      clearTimeout(timer);
      return child.exitCode;
    },
  };
}

/** Spawn a peer server script (peers/*-server.mjs) with env. */
export function startPeer({ label, script, env, track }) {
  return startServerProcess({
    label: `peer ${label}`,
    args: [script],
    env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production', ...env },
    listening: LISTENING_RE,
    track,
  });
}

/**
 * A keep-alive JSON poster to `url` with at most `maxSockets` requests in flight:
 * `post(path, body)` resolves to the answer's text when the status is 201.
 */
export function jsonPoster(url, { maxSockets = 16, headers = {} } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const base = new URL(url);
  return {
    post(path, value) {
      const body = JSON.stringify(value);
      return new Promise((resolve, reject) => {
        const req = http.request(
          {
            agent,
            host: base.hostname,
            port: base.port,
            method: 'POST',
            path,
            headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
            timeout: 30_000,
          },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (c) => (text += c));
            res.on('end', () => (res.statusCode === 201 ? resolve(text) : reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`))));
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
}

/** `publish(room, data)` → POST {url}/publish {room, event: 'bench', data}; resolves to null (no event ids). */
export function httpPublisher(spec, { maxSockets = 16 } = {}) {
  const poster = jsonPoster(spec.url, { maxSockets });
  return {
    publish: (room, data) => poster.post('/publish', { room, event: 'bench', data }).then(() => null),
    close: () => poster.close(),
  };
}

/** Server side of a peer: read a JSON body of at most 1 MiB. */
export function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      body += c;
      if (body.length > 1 << 20) req.destroy(new Error('body too large'));
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(body));
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

/**
 * Server side of a peer: the HTTP server whose `POST /publish {room, event, data}`
 * hands the message to `emit` and answers 201 (404 elsewhere, 400 for a bad body).
 */
export function publishServer(emit) {
  return http.createServer(async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/publish') {
      res.writeHead(404).end();
      return;
    }
    let m;
    try {
      m = await readJson(req);
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (typeof m?.room !== 'string' || typeof m.event !== 'string') {
      res.writeHead(400).end();
      return;
    }
    emit(m);
    res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
}

/**
 * Server side of a peer: listen on PORT (0) and say where; on SIGTERM or SIGINT run
 * `close(done)` once and exit when it calls `done`, or after 3 s at the latest.
 */
export function servePeer(server, close) {
  server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
    console.error(`peer: listening on http://127.0.0.1:${server.address().port}`);
  });
  let closing = false;
  const shutdown = () => {
    if (closing) return;
    closing = true;
    setTimeout(() => process.exit(0), 3000).unref();
    close(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

/** Server side of a peer: exit when the parent (the bench) is gone. */
export function exitWithParent() {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 2000).unref();
}

/** Close a `ws` client politely, terminating it when the server does not answer in 5 s. */
export function closeSocket(ws) {
  if (ws.readyState === ws.CLOSED) return Promise.resolve();
  return new Promise((res) => {
    const timer = setTimeout(() => {
      ws.terminate();
      res();
    }, 5000);
    ws.once('close', () => {
      clearTimeout(timer);
      res();
    });
    ws.close(1000, 'bench done');
  });
}
