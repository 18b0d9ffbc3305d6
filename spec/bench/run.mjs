#!/usr/bin/env node
/**
 * `npm run bench`: Streamgate's benchmark (issue 7). Builds nothing: run `npm run build`
 * (or `npm ci`, whose `prepare` builds) first, the targets run the compiled dist/.
 *
 * It starts a private redis-server on a free loopback port, then for every step
 * (scenario × rate × run, interleaved, each target in turn) starts the target's
 * servers afresh (targets/<name>.mjs), drives them from separate load-generator
 * processes (loadgen.mjs, over IPC), reads CPU and memory from /proc, stops
 * everything, and finally prints a table and writes a JSON file.
 *
 *   node spec/bench/run.mjs [--quick] [--scenario fanout,ramp,idle,resume,sse,poll]
 *     [--target streamgate,streamgate-ws,socketio,ws-raw]
 *     [--clients 1000] [--channels 100] [--rates 200,3200] [--seconds 10] [--warmup 2]
 *     [--ramp-start 200] [--ramp-max 12800] [--ramp-seconds 5]
 *     [--sse-clients 1000] [--poll-clients 200] [--stream-rates 200] [--publish-concurrency 16]
 *     [--idle-connections 10000] [--idle-seconds 60] [--resume-events 10000]
 *     [--runs 3] [--out bench-results.json]
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
/** A step whose outside load exceeds this (cores) is retried once. */
const DISTURBED_CORES = 0.25;
/** What `npm run bench` compares when --target is not given: every target, side by side. */
const DEFAULT_TARGETS = 'streamgate,streamgate-ws,socketio,ws-raw';
/** Hard bound on the whole run. */
const MAX_TOTAL_MS = 3 * 3600_000;
const SCENARIOS = ['fanout', 'ramp', 'idle', 'resume', 'sse', 'poll'];
/** Scenarios a target runs only when it says so (`supports.sse: true`): they need its SSE / poll client. */
const OPT_IN_SCENARIOS = new Set(['sse', 'poll']);
/** A ramp level holds while its p99 stays at or under this… */
const RAMP_MAX_P99_MS = 100;
/** …nothing is missing, and the publisher achieves at least this share of the asked rate. */
const RAMP_MIN_PUBLISH_SHARE = 0.9;
/** Pause before each ramp level, after the previous level's deliveries were collected. */
const RAMP_SETTLE_MS = 1000;

// ------------------------------------------------------------------ options

const HELP = `usage: node spec/bench/run.mjs [options]      (npm run bench -- [options])
  Needs the compiled dist/ (npm run build) and redis-server on PATH.
  --scenario LIST         fanout,ramp,idle,resume,sse,poll (default: all)
                          fanout: N WebSocket clients in R channels over 2 nodes, P publishes/s
                            for S s, one step per --rates entry
                          ramp: same clients and servers kept for the whole step, P doubled
                            from --ramp-start to --ramp-max; stops at the first level with
                            p99 > ${RAMP_MAX_P99_MS} ms, a missing delivery, or the publisher under ${RAMP_MIN_PUBLISH_SHARE * 100} % of P;
                            reports the highest P that held with the load generator's and
                            the publisher's CPU and the CPU per delivery at that level
                          idle, resume: see --idle-* and --resume-events
                          sse, poll: the fan-out figures with --sse-clients SSE clients or
                            --poll-clients long-polling clients (GET /v1/sse, /v1/poll,
                            channel and token in the query string; a polling client polls
                            again as soon as an answer arrives); Streamgate only, n/a for
                            every other target
  --target LIST           target modules in spec/bench/targets (default: all four):
                          streamgate (2 nodes, publishes over the HTTP API),
                          streamgate-ws (the same, but publishing from 4 WebSocket
                            connections with a token carrying the publish claim; fanout
                            and ramp only), socketio (2 Socket.IO nodes, Redis Streams
                            adapter), ws-raw (1 plain ws process);
                          e.g. streamgate,streamgate-ws,socketio,ws-raw. Ratios are
                          streamgate / each other column.
  --clients N             fan-out and ramp clients, spread over both nodes (1000)
  --channels R            channels; clients per channel = N/R (100; for sse and poll at
                          most their client count)
  --rates LIST            publishes per second, one fan-out step each (200,3200)
  --seconds S             publishing time per fan-out, sse and poll step (10)
  --warmup S              unmeasured publishing before each fan-out, sse, poll and ramp step (2)
  --ramp-start P          first ramp level, publishes/s (200)
  --ramp-max P            last ramp level: levels are ramp-start × 2^k up to this (12800)
  --ramp-seconds S        publishing time per ramp level (5), after a ${RAMP_SETTLE_MS / 1000} s settle
  --sse-clients N         SSE clients of the sse scenario (1000)
  --poll-clients N        long-polling clients of the poll scenario (200)
  --stream-rates LIST     publishes per second, one sse and one poll step each (200)
  --publish-concurrency C publishes in flight at most (HTTP sockets; the WebSocket
                          publisher spreads them over min(4, C) connections) (16)
  --idle-connections M    idle connections, all on one node (10000)
  --idle-seconds S        how long they are held (60)
  --resume-events K       events published while the resume client is away (10000)
  --runs N                runs of every step; figures are medians (3)
  --out FILE              JSON results (bench-results.json)
  --publish-auth key|token  HTTP publishes with a server key (default, as a backend does)
                          or with a user token carrying the publish claim (streamgate-ws
                          always publishes with such a token: a key cannot open a WebSocket)
  --quick                 smoke run: 200 clients, 20 channels, rates 200,2000, 2 s, ramp 200…3200
                          at 2 s per level, 200 SSE and 50 polling clients, 1000 idle for 5 s,
                          1000 resume events, 1 run (each still overridable)`;

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string' },
      target: { type: 'string' },
      clients: { type: 'string' },
      channels: { type: 'string' },
      rates: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      'idle-connections': { type: 'string' },
      'idle-seconds': { type: 'string' },
      'resume-events': { type: 'string' },
      'ramp-start': { type: 'string' },
      'ramp-max': { type: 'string' },
      'ramp-seconds': { type: 'string' },
      'sse-clients': { type: 'string' },
      'poll-clients': { type: 'string' },
      'stream-rates': { type: 'string' },
      'publish-concurrency': { type: 'string' },
      runs: { type: 'string' },
      out: { type: 'string' },
      'publish-auth': { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const q = values.quick;
  const defaults = q
    ? { clients: 200, channels: 20, rates: '200,2000', seconds: 2, warmup: 0.5, idleConnections: 1000, idleSeconds: 5, resumeEvents: 1000, runs: 1, rampStart: 200, rampMax: 3200, rampSeconds: 2, sseClients: 200, pollClients: 50 }
    : { clients: 1000, channels: 100, rates: '200,3200', seconds: 10, warmup: 2, idleConnections: 10000, idleSeconds: 60, resumeEvents: 10000, runs: 3, rampStart: 200, rampMax: 12800, rampSeconds: 5, sseClients: 1000, pollClients: 200 };
  const num = (v, d, name, { min = 0, int = true } = {}) => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n))) throw new Error(`--${name}: expected ${int ? 'an integer' : 'a number'} ≥ ${min}, got ${v}`);
    return n;
  };
  const o = {
    quick: q,
    scenarios: (values.scenario ?? SCENARIOS.join(',')).split(',').map((s) => s.trim()).filter(Boolean),
    targets: (values.target ?? DEFAULT_TARGETS).split(',').map((s) => s.trim()).filter(Boolean),
    clients: num(values.clients, defaults.clients, 'clients', { min: 1 }),
    channels: num(values.channels, defaults.channels, 'channels', { min: 1 }),
    rates: (values.rates ?? defaults.rates).split(',').map((r) => num(r.trim(), 0, 'rates', { min: 1 })),
    seconds: num(values.seconds, defaults.seconds, 'seconds', { min: 0.1, int: false }),
    warmup: num(values.warmup, defaults.warmup, 'warmup', { min: 0, int: false }),
    idleConnections: num(values['idle-connections'], defaults.idleConnections, 'idle-connections', { min: 1 }),
    idleSeconds: num(values['idle-seconds'], defaults.idleSeconds, 'idle-seconds', { min: 1, int: false }),
    resumeEvents: num(values['resume-events'], defaults.resumeEvents, 'resume-events', { min: 1 }),
    runs: num(values.runs, defaults.runs, 'runs', { min: 1 }),
    rampStart: num(values['ramp-start'], defaults.rampStart, 'ramp-start', { min: 1 }),
    rampMax: num(values['ramp-max'], defaults.rampMax, 'ramp-max', { min: 1 }),
    rampSeconds: num(values['ramp-seconds'], defaults.rampSeconds, 'ramp-seconds', { min: 0.5, int: false }),
    sseClients: num(values['sse-clients'], defaults.sseClients, 'sse-clients', { min: 1 }),
    pollClients: num(values['poll-clients'], defaults.pollClients, 'poll-clients', { min: 1 }),
    streamRates: (values['stream-rates'] ?? '200').split(',').map((r) => num(r.trim(), 0, 'stream-rates', { min: 1 })),
    publishConcurrency: num(values['publish-concurrency'], 16, 'publish-concurrency', { min: 1 }),
    out: resolve(values.out ?? 'bench-results.json'),
    publishAuth: values['publish-auth'] ?? 'key',
  };
  if (!['key', 'token'].includes(o.publishAuth)) throw new Error('--publish-auth: key or token');
  for (const s of o.scenarios) if (!SCENARIOS.includes(s)) throw new Error(`--scenario: unknown ${s} (${SCENARIOS.join(', ')})`);
  if (o.rampMax < o.rampStart) throw new Error('--ramp-max must not be below --ramp-start');
  for (const t of o.targets) {
    if (!/^[a-z0-9-]+$/.test(t) || !existsSync(join(HERE, 'targets', `${t}.mjs`))) throw new Error(`--target: no module spec/bench/targets/${t}.mjs`);
  }
  if (o.channels > o.clients) throw new Error('--channels must not exceed --clients');
  // One load generator holds every client's socket.
  for (const [n, what] of [[o.idleConnections, 'idle connections'], [o.sseClients, 'SSE clients'], [o.clients, 'clients']]) {
    if (n > 15000) console.error(`note: ${n} ${what}; the open-files limit is ${fileLimit()} per process`);
  }
  return o;
}

function fileLimit() {
  try {
    return execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim();
  } catch {
    return '?';
  }
}

// ------------------------------------------------------------------ processes

const children = new Set();
let tmpRoot = null;
let stopping = false;

function track(child) {
  children.add(child);
  // A spawn failure is reported by whoever waits for the child; it must not crash the rig.
  child.on('error', () => undefined);
  child.once('exit', () => children.delete(child));
  return child;
}

function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => child.once('exit', () => res()));
}

async function stopChild(child, signal = 'SIGTERM', graceMs = 8000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = exited(child);
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

async function cleanupAll() {
  await Promise.allSettled([...children].map((c) => stopChild(c, 'SIGTERM', 5000)));
  if (tmpRoot) rmSync(tmpRoot, { recursive: true, force: true });
}

function installSignalHandlers() {
  const onSignal = (sig) => {
    if (stopping) return;
    stopping = true;
    console.error(`\nbench: ${sig}, stopping every process it started…`);
    cleanupAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('exit', () => {
    for (const c of children) c.kill('SIGKILL');
  });
}

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/**
 * One RESP command on a fresh connection; `parse(buffer)` returns the answer once the
 * reply is complete (undefined while more must come). Null on errors or after 2 s.
 */
function redisRequest(port, args, parse) {
  return new Promise((res) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    const done = (v) => {
      socket.destroy();
      res(v);
    };
    socket.setTimeout(2000, () => done(null));
    socket.once('error', () => done(null));
    socket.on('data', (c) => {
      buf = Buffer.concat([buf, c]);
      const v = parse(buf);
      if (v !== undefined) done(v);
    });
    socket.once('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
  });
}

/** A simple command (PING, FLUSHALL): its reply's first line. */
function redisCommand(port, ...args) {
  return redisRequest(port, args, (buf) => {
    const eol = buf.indexOf('\r\n');
    return eol < 0 ? undefined : buf.subarray(0, eol).toString();
  });
}

/** `INFO <section>` of the private Redis as { key: value } (a bulk reply read whole), or null. */
function redisInfo(port, section) {
  return redisRequest(port, ['INFO', section], (buf) => {
    const eol = buf.indexOf('\r\n');
    if (eol < 0) return undefined;
    const len = Number(buf.subarray(1, eol).toString());
    if (buf.length < eol + 2 + len) return undefined;
    const out = {};
    for (const line of buf.subarray(eol + 2, eol + 2 + len).toString().split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
    }
    return out;
  });
}

/**
 * Where Redis spent its time between two `INFO commandstats`: the commands with the
 * most microseconds, with calls and µs per call (Lua scripts count their inner commands too).
 */
function commandStatsDelta(a, b, top = 8) {
  if (!a || !b) return null;
  const parse = (v) => Object.fromEntries((v ?? '').split(',').map((kv) => kv.split('=')).map(([k, x]) => [k, Number(x)]));
  const rows = [];
  for (const [k, v] of Object.entries(b)) {
    if (!k.startsWith('cmdstat_')) continue;
    const now = parse(v);
    const before = parse(a[k]);
    const calls = now.calls - (before.calls ?? 0);
    const usec = now.usec - (before.usec ?? 0);
    if (calls > 0) rows.push({ command: k.slice(8), calls, usec, usecPerCall: Math.round((usec / calls) * 10) / 10 });
  }
  return rows.sort((x, y) => y.usec - x.usec).slice(0, top);
}

async function startRedis(dir) {
  const port = await freePort();
  const child = track(
    spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxclients', '20000', '--loglevel', 'warning'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let output = '';
  child.stdout.on('data', (c) => (output = (output + c).slice(-4000)));
  child.stderr.on('data', (c) => (output = (output + c).slice(-4000)));
  const spawnError = new Promise((res) => child.once('error', res));
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const failed = await Promise.race([spawnError, sleep(20).then(() => null)]);
    if (failed) throw new Error(`cannot start redis-server: ${failed.message}`);
    if (child.exitCode !== null) throw new Error(`redis-server exited:\n${output}`);
    if ((await redisCommand(port, 'PING')) === '+PONG') return { port, url: `redis://127.0.0.1:${port}`, pid: child.pid, child };
  }
  throw new Error(`redis-server did not answer on port ${port}:\n${output}`);
}

/** A forked load generator; `call(cmd, args)` is one IPC request. */
async function forkLoadgen(role, target) {
  const child = track(
    fork(join(HERE, 'loadgen.mjs'), [role], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, BENCH_LOADGEN_MAX_MS: String(MAX_TOTAL_MS) },
      execArgv: [],
    }),
  );
  let nextId = 1;
  const pending = new Map();
  child.on('message', (m) => {
    const p = pending.get(m?.re);
    if (!p) return;
    pending.delete(m.re);
    clearTimeout(p.timer);
    if (m.ok) p.res(m.result);
    else p.rej(new Error(`loadgen ${role}: ${m.error}`));
  });
  child.once('exit', (code, signal) => {
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.rej(new Error(`loadgen ${role} exited (${code ?? signal})`));
    }
    pending.clear();
  });
  const lg = {
    pid: child.pid,
    role,
    call(cmd, args = {}, timeoutMs = 120_000) {
      return new Promise((res, rej) => {
        const id = nextId++;
        const timer = setTimeout(() => {
          pending.delete(id);
          rej(new Error(`loadgen ${role}: ${cmd} took more than ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { res, rej, timer });
        child.send({ id, cmd, args });
      });
    },
    async stop() {
      if (child.connected) child.send({ cmd: 'exit' });
      await Promise.race([exited(child), sleep(5000)]);
      await stopChild(child, 'SIGKILL', 1000);
    },
  };
  await lg.call('init', { target });
  return lg;
}

// ------------------------------------------------------------------ /proc

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* 100 on Linux */
}

/** [user, sys] clock ticks of a process (all its threads), from /proc/<pid>/stat. */
function procUserSys(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return [Number(f[11]), Number(f[12])]; // fields 14 (utime) and 15 (stime)
  } catch {
    return null;
  }
}

/** user+sys clock ticks of a process. */
function procTicks(pid) {
  const t = procUserSys(pid);
  return t ? t[0] + t[1] : null;
}

/** Resident memory in KiB from /proc/<pid>/status. */
function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Busy ticks of the whole machine: user+nice+system+irq+softirq+steal from /proc/stat. */
function machineTicks() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = line;
  return { busy: user + nice + system + irq + softirq + steal, softirq: irq + softirq };
}

/** groups: { name: [pid, …] } → a CPU snapshot. The rig itself (this process) is always counted as ours. */
function snapshot(groups) {
  const ticks = {};
  const sys = {};
  for (const [name, pids] of Object.entries(groups)) {
    ticks[name] = 0;
    sys[name] = 0;
    for (const p of pids) {
      const t = procUserSys(p) ?? [0, 0];
      ticks[name] += t[0] + t[1];
      sys[name] += t[1];
    }
  }
  ticks.rig = procTicks(process.pid) ?? 0;
  return { at: performance.now(), machine: machineTicks(), ticks, sys };
}

/** CPU seconds per group between two snapshots, and the outside load in cores. */
function cpuDelta(a, b) {
  const wall = (b.at - a.at) / 1000;
  const cpu = {};
  const sys = {};
  let ours = 0;
  for (const k of Object.keys(b.ticks)) {
    const d = b.ticks[k] - a.ticks[k];
    cpu[k] = d / CLK_TCK;
    ours += d;
    if (k in b.sys) sys[k] = (b.sys[k] - a.sys[k]) / CLK_TCK;
  }
  const busy = b.machine.busy - a.machine.busy;
  const outside = Math.max(0, busy - ours) / CLK_TCK;
  return { wall, cpu, sys, machineBusyCores: busy / CLK_TCK / wall, outsideCores: outside / wall, irqCores: (b.machine.softirq - a.machine.softirq) / CLK_TCK / wall };
}

/**
 * Before a step: wait (at most maxMs) for a 2-second window in which the processes
 * outside the benchmark use at most DISTURBED_CORES. Resolves to the last window's load.
 */
async function waitQuiet(redisPid, maxMs = 90_000) {
  const end = performance.now() + maxMs;
  for (;;) {
    const a = snapshot({ redis: [redisPid] });
    await sleep(2000);
    const load = cpuDelta(a, snapshot({ redis: [redisPid] })).outsideCores;
    if (load <= DISTURBED_CORES || performance.now() >= end) return load;
  }
}

// ------------------------------------------------------------------ steps

function compareIds(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  return am < bm ? -1 : am > bm ? 1 : as < bs ? -1 : as > bs ? 1 : 0;
}

/** One CPU group per server process (server0, server1, …) plus their sum. */
function serverGroups(h) {
  return Object.fromEntries(h.pids().map((pid, i) => [`server${i}`, [pid]]));
}

function serversCpu(cpu) {
  return Object.entries(cpu).reduce((a, [k, v]) => (k.startsWith('server') ? a + v : a), 0);
}

function stepDir() {
  return mkdtempSync(join(tmpRoot, 'step-'));
}

async function withStep(ctx, fn) {
  const started = [];
  const lgs = [];
  let handle = null;
  const step = {
    async startTarget(opts) {
      handle = await ctx.module.server.start({ redisUrl: ctx.redis.url, dir: stepDir(), track, ...opts });
      started.push(handle);
      return handle;
    },
    async loadgen(role) {
      const lg = await forkLoadgen(role, ctx.target);
      lgs.push(lg);
      return lg;
    },
  };
  try {
    const result = await fn(step);
    if (handle) {
      const w = handle.warnings();
      if (w.length) result.serverOutput = w.slice(-20);
    }
    return result;
  } finally {
    await Promise.allSettled(lgs.map((l) => l.stop()));
    const codes = await Promise.allSettled(started.map((h) => h.stop()));
    for (const c of codes) if (c.status === 'rejected') console.error(`bench: stopping target: ${c.reason}`);
    await redisCommand(ctx.redis.port, 'FLUSHALL');
  }
}

/**
 * What fanout, sse, poll and ramp share: the target's 2 nodes, N clients of `transport`
 * ('ws', 'sse', 'poll') in R channels, a clients load generator and a publisher one.
 * Client i is in channel i % R on node ⌊i / R⌋ mod 2: each channel's clients alternate nodes.
 */
async function fanoutRig(ctx, step, { N, R, transport }) {
  const o = ctx.options;
  const h = await step.startTarget({ nodes: 2 });
  const nodeCount = h.nodes.length;
  const channels = Array.from({ length: R }, (_, c) => `bench:${c}`);
  const list = Array.from({ length: N }, (_, i) => ({ node: Math.floor(i / R) % nodeCount, user: `u${i}` }));
  const chan = Array.from({ length: N }, (_, i) => i % R);
  const specs = h.clientSpecs(list);
  const lg = await step.loadgen('clients');
  const pub = await step.loadgen('publisher');
  const conn = await lg.call('connect', { specs, channels, chan, concurrency: 100, transport }, 300_000);
  if (conn.failed) throw new Error(`${conn.failed} of ${N} ${transport} clients failed to connect/subscribe: ${JSON.stringify(conn.errors)}`);
  return { h, lg, pub, channels, R, N, transport, connectMs: conn.ms, pubSpec: h.publisherSpec({ auth: o.publishAuth }) };
}

/** Unmeasured publishing at `rate` for `seconds` (code paths compiled, sockets opened), then a short pause. */
async function warmup(ctx, rig, rate, seconds) {
  const o = ctx.options;
  const w = await rig.pub.call('publish', { spec: rig.pubSpec, channels: rig.channels, rate, count: Math.max(1, Math.round(rate * seconds)), concurrency: o.publishConcurrency, kind: 'warmup' }, 300_000);
  if (w.failed) throw new Error(`warm-up publishes failed: ${JSON.stringify(w.errors)}`);
  await sleep(500);
}

/**
 * One measured publishing window on an armed rig: n publishes at `rate` (payloads tagged
 * `tag`, as armed), every expected delivery collected (or 10 s after the last publish),
 * CPU of every group from /proc over the whole window. → the fan-out figures.
 */
async function measureLevel(ctx, rig, { rate, n, seconds, tag = null }) {
  const o = ctx.options;
  const { lg, pub } = rig;
  const groups = { ...serverGroups(rig.h), redis: [ctx.redis.pid], loadgen: [lg.pid], publisher: [pub.pid] };
  const stats0 = await redisInfo(ctx.redis.port, 'commandstats');
  const s0 = snapshot(groups);
  const p = await pub.call(
    'publish',
    { spec: rig.pubSpec, channels: rig.channels, rate, count: n, concurrency: o.publishConcurrency, kind: 'fanout', tag, timeoutMs: seconds * 5000 + 60_000 },
    seconds * 5000 + 90_000,
  );
  const c = await lg.call('collect', { timeoutMs: 10_000 }, 60_000);
  const s1 = snapshot(groups);
  const stats1 = await redisInfo(ctx.redis.port, 'commandstats');
  const d = cpuDelta(s0, s1);
  const nodesCpu = serversCpu(d.cpu);
  const serverCpu = nodesCpu + d.cpu.redis;
  const spanS = c.lastAt && p.startedAt ? (c.lastAt - p.startedAt) / 1000 : null;
  const windowS = d.wall;
  return {
    figures: {
      deliveriesPerSec: spanS ? c.received / spanS : 0,
      p50: c.latency.p50,
      p90: c.latency.p90,
      p99: c.latency.p99,
      max: c.latency.max,
      missing: c.missing,
      duplicates: c.dupes,
      cpuPerDeliveryUs: c.received ? (serverCpu * 1e6) / c.received : null,
      serverCores: serverCpu / windowS,
      nodeCores: nodesCpu / windowS,
      nodeACores: d.cpu.server0 / windowS,
      redisCores: d.cpu.redis / windowS,
      loadgenCores: d.cpu.loadgen / windowS,
      publisherCores: d.cpu.publisher / windowS,
      publishRate: p.achievedRate,
    },
    detail: {
      published: p.ok,
      publishFailed: p.failed,
      publishErrors: p.errors,
      publishMaxLagMs: p.maxLagMs,
      publishDurationMs: p.durationMs,
      publishRoundTripMs: p.meanRoundTripMs,
      publishCapped: p.capped,
      publishConcurrency: o.publishConcurrency,
      expected: c.expected,
      received: c.received,
      unexpected: c.unexpected,
      stale: c.stale,
      clientCounters: c.clients,
      cpuSeconds: d.cpu,
      sysSeconds: d.sys,
      windowS,
      meanLatency: c.latency.mean,
      redisCommands: commandStatsDelta(stats0, stats1),
    },
    outsideCores: d.outsideCores,
    irqCores: d.irqCores,
  };
}

/** fanout (transport 'ws'), sse and poll: one rate, fresh servers and clients. */
async function fanoutStep(ctx, rate, transport = 'ws') {
  const o = ctx.options;
  const N = transport === 'sse' ? o.sseClients : transport === 'poll' ? o.pollClients : o.clients;
  const R = Math.min(o.channels, N);
  const n = Math.max(1, Math.round(rate * o.seconds));
  return withStep(ctx, async (step) => {
    const rig = await fanoutRig(ctx, step, { N, R, transport });
    const armed = await rig.lg.call('arm', { n, R });
    if (o.warmup > 0) await warmup(ctx, rig, rate, o.warmup);
    const m = await measureLevel(ctx, rig, { rate, n, seconds: o.seconds });
    return { ...m, detail: { ...m.detail, transport, clients: N, channels: R, clientsPerChannel: armed.perChannel, connectMs: rig.connectMs } };
  });
}

function rampLevels(o) {
  const levels = [];
  for (let p = o.rampStart; p <= o.rampMax; p *= 2) levels.push(p);
  return levels;
}

/** Why a ramp level did not hold ([] if it held): codes for the JSON, text for people. */
function rampFailures(m, rate) {
  const f = m.figures;
  const codes = [];
  const text = [];
  if (f.p99 === null || f.p99 > RAMP_MAX_P99_MS) {
    codes.push('p99');
    text.push(`p99 ${fmt(f.p99, 1)} ms > ${RAMP_MAX_P99_MS}`);
  }
  if (f.missing > 0) {
    codes.push('missing');
    text.push(`${f.missing} of ${m.detail.expected} missing${m.detail.publishFailed ? ` (${m.detail.publishFailed} publishes failed)` : ''}`);
  }
  if (f.publishRate === null || f.publishRate < RAMP_MIN_PUBLISH_SHARE * rate) {
    codes.push('publisher');
    // Capped: every one of the publishes in flight was waiting for its answer when the next was due.
    const why = m.detail.publishCapped
      ? ` (answers took ${fmt(m.detail.publishRoundTripMs, 1)} ms on average with at most ${m.detail.publishConcurrency} in flight)`
      : '';
    text.push(`publisher ${fmt(f.publishRate, 0)}/s < ${RAMP_MIN_PUBLISH_SHARE * 100} % of ${rate}${why}`);
  }
  return { codes, text: text.join(', ') };
}

/**
 * ramp: the fan-out rig (WebSocket clients) kept for the whole step, P doubled level by
 * level until one does not hold. Each level is armed with its own tag, so a late
 * delivery from the level before is never counted for (or missing from) this one; a
 * level disturbed by outside load is measured again once, after waiting for quiet.
 */
async function rampStep(ctx) {
  const o = ctx.options;
  const N = o.clients;
  const R = o.channels;
  const levels = rampLevels(o);
  return withStep(ctx, async (step) => {
    const rig = await fanoutRig(ctx, step, { N, R, transport: 'ws' });
    if (o.warmup > 0) await warmup(ctx, rig, levels[0], o.warmup);
    const done = [];
    let held = null;
    let stop = null;
    let tag = 0;
    for (const rate of levels) {
      const n = Math.max(1, Math.round(rate * o.rampSeconds));
      let m = null;
      for (let attempt = 1; attempt <= 2; attempt++) {
        await rig.lg.call('arm', { n, R, tag: ++tag });
        await sleep(RAMP_SETTLE_MS);
        m = await measureLevel(ctx, rig, { rate, n, seconds: o.rampSeconds, tag });
        m.attempt = attempt;
        m.disturbed = m.outsideCores > DISTURBED_CORES;
        if (!m.disturbed || attempt === 2) break;
        console.error(`bench:   ramp P=${rate}: outside load ${fmt(m.outsideCores, 2)} cores, measuring the level again`);
        await waitQuiet(ctx.redis.pid, 30_000);
      }
      const failed = rampFailures(m, rate);
      const level = { rate, attempt: m.attempt, disturbed: m.disturbed, held: failed.codes.length === 0, stopCodes: failed.codes, stopReason: failed.text || null, figures: m.figures, detail: m.detail, outsideCores: m.outsideCores, irqCores: m.irqCores };
      done.push(level);
      console.error(`bench:   ramp P=${rate}: ${brief('fanout', m)}; loadgen ${fmt(m.figures.loadgenCores, 2)}, publisher ${fmt(m.figures.publisherCores, 2)} cores${level.held ? '' : `; did not hold: ${failed.text}`}`);
      if (!level.held) {
        stop = level;
        break;
      }
      held = level;
    }
    const hf = held?.figures ?? {};
    return {
      figures: {
        heldP: held ? held.rate : 0,
        stopP: stop ? stop.rate : null,
        heldDeliveriesPerSec: hf.deliveriesPerSec ?? null,
        heldP99: hf.p99 ?? null,
        heldCpuPerDeliveryUs: hf.cpuPerDeliveryUs ?? null,
        heldServerCores: hf.serverCores ?? null,
        heldLoadgenCores: hf.loadgenCores ?? null,
        heldPublisherCores: hf.publisherCores ?? null,
        heldPublishRate: hf.publishRate ?? null,
        stopP99: stop ? stop.figures.p99 : null,
        stopLoadgenCores: stop ? stop.figures.loadgenCores : null,
        stopPublisherCores: stop ? stop.figures.publisherCores : null,
      },
      detail: {
        levels: done,
        stopCodes: stop ? stop.stopCodes : [],
        stopReason: stop ? `P=${stop.rate}: ${stop.stopReason}` : `every level held up to --ramp-max ${o.rampMax}`,
        clients: N,
        channels: R,
        connectMs: rig.connectMs,
      },
      // The step counts as disturbed when any level it kept was.
      outsideCores: Math.max(...done.map((l) => l.outsideCores ?? 0)),
      irqCores: Math.max(...done.map((l) => l.irqCores ?? 0)),
    };
  });
}

async function idleStep(ctx) {
  const o = ctx.options;
  const M = o.idleConnections;
  const R = o.channels;
  return withStep(ctx, async (step) => {
    const h = await step.startTarget({ nodes: 1 });
    const pid = h.pids()[0];
    const channels = Array.from({ length: R }, (_, c) => `bench:${c}`);
    const lg = await step.loadgen('clients');
    // Ten connections opened and closed first, so one-time work (code paths compiled,
    // buffers first allocated) is not charged to the M connections.
    const warmN = 10;
    const warm = await lg.call('connect', { group: 'warm', specs: h.clientSpecs(Array.from({ length: warmN }, (_, i) => ({ node: 0, user: `w${i}` }))), channels, chan: Array.from({ length: warmN }, (_, i) => i % R) });
    if (warm.failed) throw new Error(`warm-up connections failed: ${JSON.stringify(warm.errors)}`);
    await lg.call('closeAll', { group: 'warm' });
    await sleep(1000);
    const specs = h.clientSpecs(Array.from({ length: M }, (_, i) => ({ node: 0, user: `u${i}` })));
    const rssBefore = rssKiB(pid);
    const groups = () => ({ ...serverGroups(h), redis: [ctx.redis.pid], loadgen: [lg.pid] });
    const s0 = snapshot(groups());
    const conn = await lg.call('connect', { specs, channels, chan: Array.from({ length: M }, (_, i) => i % R), concurrency: 200 }, 600_000);
    if (conn.failed) throw new Error(`${conn.failed} of ${M} connections failed: ${JSON.stringify(conn.errors)}`);
    const s1 = snapshot(groups());
    const rssConnected = rssKiB(pid);
    let rssPeak = rssConnected;
    const rssSeries = [];
    const holdStart = performance.now();
    const holdEnd = holdStart + o.idleSeconds * 1000;
    while (performance.now() < holdEnd) {
      await sleep(Math.min(5000, holdEnd - performance.now()));
      const rss = rssKiB(pid) ?? 0;
      rssSeries.push([Math.round((performance.now() - holdStart) / 1000), rss]);
      rssPeak = Math.max(rssPeak, rss);
    }
    const s2 = snapshot(groups());
    const rssAfter = rssKiB(pid);
    const status = await lg.call('status', {});
    // Every connection must still be open and subscribed: one probe event per channel.
    await lg.call('probeArm', {});
    const pr = await lg.call('publish', { spec: h.publisherSpec({ auth: o.publishAuth }), channels, count: R, rate: 0, kind: 'probe' });
    const probe = await lg.call('probeWait', { timeoutMs: 30_000 });
    await lg.call('closeAll', {}, 120_000);
    const dc = cpuDelta(s0, s1);
    const dh = cpuDelta(s1, s2);
    return {
      figures: {
        rssBeforeMiB: rssBefore / 1024,
        rssAfterMiB: rssAfter / 1024,
        kbPerConnection: (rssAfter - rssBefore) / M,
        kbPerConnectionAtConnect: (rssConnected - rssBefore) / M,
        holdNodeCores: serversCpu(dh.cpu) / dh.wall,
        connectPerSec: (M * 1000) / conn.ms,
        connectCpuUs: (serversCpu(dc.cpu) * 1e6) / M,
        stillOpen: status.open,
        probeReceived: probe.got,
      },
      detail: {
        connections: M,
        rssKiB: { before: rssBefore, connected: rssConnected, peak: rssPeak, after: rssAfter },
        rssDuringHoldKiB: rssSeries,
        pingsAnswered: status.pings,
        closeCodes: status.closeCodes,
        probePublished: pr.ok,
        holdSeconds: dh.wall,
        holdCpuSeconds: dh.cpu,
        connectMs: conn.ms,
      },
      outsideCores: dh.outsideCores,
      irqCores: dh.irqCores,
    };
  });
}

async function resumeStep(ctx) {
  const K = ctx.options.resumeEvents;
  return withStep(ctx, async (step) => {
    const h = await step.startTarget({ nodes: 2, retentionCount: K + 1000 });
    const channel = `bench:resume-${randomUUID().slice(0, 8)}`;
    // The client lives on the second node; publishes go to the first.
    const [spec] = h.clientSpecs([{ node: h.nodes.length - 1, user: 'resumer' }]);
    const pubSpec = h.publisherSpec({ auth: ctx.options.publishAuth });
    const lg = await step.loadgen('clients');
    const pub = await step.loadgen('publisher');
    await lg.call('resumeOpen', { spec, channel });
    const seed = await pub.call('publish', { spec: pubSpec, channels: [channel], count: 1, kind: 'seq' });
    if (seed.failed) throw new Error(`seed publish failed: ${JSON.stringify(seed.errors)}`);
    const first = await lg.call('resumeWaitFirst', {});
    await lg.call('resumeAway');
    const p = await pub.call('publish', { spec: pubSpec, channels: [channel], count: K, rate: 0, concurrency: 16, kind: 'seq' }, 600_000);
    if (p.failed) throw new Error(`${p.failed} of ${K} publishes failed: ${JSON.stringify(p.errors)}`);
    const groups = { ...serverGroups(h), redis: [ctx.redis.pid], loadgen: [lg.pid] };
    const s0 = snapshot(groups);
    const back = await lg.call('resumeBack', { spec, channel, since: first.id, expect: K, timeoutMs: 120_000 }, 200_000);
    const s1 = snapshot(groups);
    const d = cpuDelta(s0, s1);
    const expectedIds = [...p.ids].sort(compareIds);
    const got = back.events.map(([id]) => id);
    const gotSet = new Set(got);
    const expSet = new Set(expectedIds);
    let missing = 0;
    for (const id of expectedIds) if (!gotSet.has(id)) missing++;
    const duplicates = got.length - gotSet.size;
    const unexpected = [...gotSet].filter((id) => !expSet.has(id)).length;
    let outOfOrder = 0;
    for (let i = 1; i < got.length; i++) if (compareIds(got[i - 1], got[i]) >= 0) outOfOrder++;
    return {
      figures: {
        resumeMs: back.allMs,
        eventsPerSec: back.allMs ? (K * 1000) / back.allMs : null,
        replyMs: back.replyMs,
        missing,
        duplicates,
        outOfOrder,
        serverCpuMs: (serversCpu(d.cpu) + d.cpu.redis) * 1000,
      },
      detail: {
        events: K,
        received: back.received,
        unexpected,
        recovered: back.recovered,
        closeCode: back.closeCode,
        publishRate: p.achievedRate,
        cpuSeconds: d.cpu,
        windowS: d.wall,
      },
      outsideCores: d.outsideCores,
      irqCores: d.irqCores,
    };
  });
}

// ------------------------------------------------------------------ report

const FANOUT_FIGURES = [
    ['deliveriesPerSec', 'deliveries/s', 0],
    ['p50', 'latency p50 (ms)', 2],
    ['p90', 'latency p90 (ms)', 2],
    ['p99', 'latency p99 (ms)', 2],
    ['max', 'latency max (ms)', 1],
    ['missing', 'missing deliveries', 0],
    ['duplicates', 'duplicate deliveries', 0],
    ['cpuPerDeliveryUs', 'server CPU / delivery (µs)', 1],
    ['serverCores', 'server CPU, nodes+redis (cores)', 2],
    ['nodeACores', '  of which node A (cores)', 2],
    ['redisCores', '  of which redis (cores)', 2],
    ['loadgenCores', 'load generator CPU (cores)', 2],
    ['publisherCores', 'publisher CPU (cores)', 2],
    ['publishRate', 'publishes/s achieved', 0],
];

const FIGURES = {
  fanout: FANOUT_FIGURES,
  sse: FANOUT_FIGURES,
  poll: FANOUT_FIGURES,
  ramp: [
    ['heldP', 'highest P that held (publishes/s)', 0],
    ['heldLoadgenCores', '  load generator CPU there (cores)', 2],
    ['heldPublisherCores', '  publisher CPU there (cores)', 2],
    ['heldCpuPerDeliveryUs', '  server CPU / delivery there (µs)', 1],
    ['heldServerCores', '  server CPU, nodes+redis (cores)', 2],
    ['heldDeliveriesPerSec', '  deliveries/s there', 0],
    ['heldP99', '  latency p99 there (ms)', 2],
    ['heldPublishRate', '  publishes/s achieved there', 0],
    ['stopP', 'first P that did not hold', 0],
    ['stopP99', '  latency p99 there (ms)', 1],
    ['stopLoadgenCores', '  load generator CPU there (cores)', 2],
    ['stopPublisherCores', '  publisher CPU there (cores)', 2],
  ],
  idle: [
    ['stillOpen', 'connections open at end', 0],
    ['probeReceived', 'probe received after hold', 0],
    ['rssBeforeMiB', 'node RSS before (MiB)', 1],
    ['rssAfterMiB', 'node RSS after hold (MiB)', 1],
    ['kbPerConnection', 'RSS per connection (KB)', 2],
    ['kbPerConnectionAtConnect', '  right after connecting (KB)', 2],
    ['holdNodeCores', 'node CPU during hold (cores)', 4],
    ['connectPerSec', 'connects+subscribes/s', 0],
    ['connectCpuUs', 'node CPU per connect (µs)', 0],
  ],
  resume: [
    ['resumeMs', 'time to all K events (ms)', 0],
    ['eventsPerSec', 'replayed events/s', 0],
    ['replyMs', 'subscribe reply (ms)', 1],
    ['missing', 'missing events', 0],
    ['duplicates', 'duplicate events', 0],
    ['outOfOrder', 'out of order', 0],
    ['serverCpuMs', 'server CPU, nodes+redis (ms)', 0],
  ],
};

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return x.toFixed(digits);
}

function blockKey(s) {
  return s.rate ? `${s.scenario}@${s.rate}` : s.scenario;
}

function blockTitle(key, o) {
  const oneNode = o.targets.includes('ws-raw') ? ' (ws-raw: 1 node)' : '';
  const [scenario, rateText] = key.split('@');
  const rate = Number(rateText);
  if (scenario === 'fanout') {
    return `fanout  P=${rate}/s  N=${o.clients} WebSocket clients, R=${o.channels} channels (${o.clients / o.channels} per channel), 2 nodes${oneNode}, ${o.seconds} s → expected ${rate * (o.clients / o.channels)} deliveries/s`;
  }
  if (scenario === 'sse' || scenario === 'poll') {
    const N = scenario === 'sse' ? o.sseClients : o.pollClients;
    const R = Math.min(o.channels, N);
    const who = scenario === 'sse' ? 'SSE clients (GET /v1/sse)' : 'long-polling clients (GET /v1/poll, polling again at once)';
    return `${scenario}  P=${rate}/s  N=${N} ${who}, R=${R} channels (${fmt(N / R, 1)} per channel), 2 nodes, ${o.seconds} s → expected ${fmt(rate * (N / R), 0)} deliveries/s (Streamgate only)`;
  }
  if (scenario === 'ramp') {
    const levels = rampLevels(o);
    return `ramp  P=${levels.join(',')}/s, ${o.rampSeconds} s per level, same servers and N=${o.clients} clients in R=${o.channels} channels, 2 nodes${oneNode}; a level holds with p99 ≤ ${RAMP_MAX_P99_MS} ms, nothing missing, publisher ≥ ${RAMP_MIN_PUBLISH_SHARE * 100} % of P`;
  }
  if (key === 'idle') return `idle  ${o.idleConnections} connections on one node, each subscribed to 1 of ${o.channels} channels, held ${o.idleSeconds} s`;
  return `resume  ${o.resumeEvents} events published while the client was away; reconnect to the other node, subscribe with since (Streamgate only)`;
}

function summarize(results, o) {
  const blocks = new Map();
  for (const r of results) {
    if (!r.final) continue;
    const key = blockKey(r);
    if (!blocks.has(key)) blocks.set(key, { scenario: r.scenario, targets: new Map() });
    const b = blocks.get(key);
    if (!b.targets.has(r.target)) b.targets.set(r.target, []);
    b.targets.get(r.target).push(r);
  }
  const summary = {};
  const lines = [];
  for (const [key, b] of blocks) {
    // Columns in --target order; ratios are streamgate / each other target (or the first / the rest).
    const targets = o.targets.filter((t) => b.targets.has(t));
    const base = targets.includes('streamgate') ? 'streamgate' : targets[0];
    const others = targets.filter((t) => t !== base);
    const na = (t) => b.targets.get(t).every((r) => r.na);
    summary[key] = {};
    lines.push('', blockTitle(key, o));
    const w = Object.fromEntries(targets.map((t) => [t, Math.max(12, t.length + 2)]));
    const rw = Object.fromEntries(others.map((t) => [t, Math.max(21, base.length + t.length + 3)]));
    const header = ['  figure'.padEnd(36), ...targets.map((t) => t.padStart(w[t])), ...others.map((t) => `${base}/${t}`.padStart(rw[t])), '   runs'];
    lines.push(header.join(''));
    for (const [fig, label, digits] of FIGURES[b.scenario]) {
      const meds = Object.fromEntries(targets.map((t) => [t, na(t) ? null : median(b.targets.get(t).map((r) => r.figures?.[fig] ?? null))]));
      for (const t of targets) {
        summary[key][t] ??= {};
        summary[key][t][fig] = na(t) ? 'n/a' : meds[t];
      }
      const cells = targets.map((t) => (na(t) ? 'n/a' : fmt(meds[t], digits)));
      const ratios = others.map((t) => (na(t) || na(base) ? 'n/a' : meds[base] !== null && meds[t] ? fmt(meds[base] / meds[t], 2) : '—'));
      const runs = targets
        .filter((t) => !na(t))
        .map((t) => b.targets.get(t).map((r) => (r.error ? 'ERR' : fmt(r.figures?.[fig], digits))).join(' '))
        .join(' | ');
      lines.push(['  ' + label.padEnd(34), ...cells.map((x, i) => x.padStart(w[targets[i]])), ...ratios.map((x, i) => x.padStart(rw[others[i]])), '   ' + runs].join(''));
    }
    for (const t of targets) {
      if (na(t)) {
        lines.push(`  ${t}: n/a (the scenario does not apply to this target)`);
        continue;
      }
      const rs = b.targets.get(t);
      const outside = rs.map((r) => fmt(r.outsideCores, 2)).join(' ');
      const retried = rs.filter((r) => r.attempt > 1).length;
      const disturbed = rs.filter((r) => r.disturbed).length;
      const errors = rs.filter((r) => r.error).length;
      lines.push(`  ${t}: outside load (cores) per run: ${outside}; retried ${retried}, still disturbed ${disturbed}, errors ${errors}`);
      for (const r of rs) if (r.error) lines.push(`    run ${r.run} error: ${r.error.split('\n')[0]}`);
      for (const r of rs) {
        const note = r.error ? null : runNote(b.scenario, r);
        if (note) lines.push(`    run ${r.run}: ${note}`);
      }
    }
  }
  return { summary, text: lines.join('\n') };
}

/** A line per run under a block's table, for what a median cannot show. */
function runNote(scenario, r) {
  if (scenario === 'ramp') {
    if (!r.detail?.stopReason) return null;
    // Late deliveries of a level (or of a disturbed attempt) that arrived during the next: not counted there.
    const stale = r.detail.levels.reduce((a, l) => a + (l.detail.stale ?? 0), 0);
    return `stopped: ${r.detail.stopReason}${stale ? `; ${stale} late deliveries of earlier levels (not counted)` : ''}`;
  }
  if (scenario === 'sse' || scenario === 'poll') {
    const c = r.detail?.clientCounters;
    if (!c) return null;
    const polls = scenario === 'poll' ? `polls ${c.polls ?? 0} (${c.emptyPolls ?? 0} empty), ` : '';
    const kinds = Object.entries(c)
      .filter(([k]) => k.startsWith('other.'))
      .map(([k, v]) => `${k.slice(6)} ${v}`)
      .join(', ');
    return `${polls}client-side errors ${c.errors ?? 0}, frames other than events ${c.otherFrames ?? 0}${kinds ? ` (${kinds})` : ''}, deliveries not of this step ${r.detail.stale ?? 0}`;
  }
  return null;
}

/** sse and poll need the target's SSE / poll client (opt-in); any other scenario runs unless the target opts out. */
function supported(mod, scenario) {
  return OPT_IN_SCENARIOS.has(scenario) ? mod.supports?.[scenario] === true : mod.supports?.[scenario] !== false;
}

// ------------------------------------------------------------------ main

async function main() {
  const o = parseOptions(process.argv.slice(2));
  if (!existsSync(join(ROOT, 'dist', 'lib', 'cli', 'main.js'))) {
    throw new Error('dist/ is missing: run `npm run build` (or `npm ci`) first; the benchmark runs the compiled code');
  }
  installSignalHandlers();
  const overall = setTimeout(() => {
    console.error(`bench: more than ${MAX_TOTAL_MS / 60000} minutes, giving up`);
    stopping = true;
    cleanupAll().finally(() => process.exit(1));
  }, MAX_TOTAL_MS);
  overall.unref();
  tmpRoot = mkdtempSync(join(tmpdir(), 'sg-bench-'));
  const startedAt = new Date();
  const modules = {};
  for (const t of o.targets) modules[t] = await import(new URL(`./targets/${t}.mjs`, import.meta.url).href);
  const redisDir = join(tmpRoot, 'redis');
  mkdirSync(redisDir, { recursive: true });
  const redis = await startRedis(redisDir);
  console.error(`bench: private redis-server on port ${redis.port} (pid ${redis.pid}); ${cpus().length} CPUs, Node ${process.version}, CLK_TCK ${CLK_TCK}`);

  // The plan: runs outermost, so every scenario, rate and target is spread over the whole run.
  const plan = [];
  for (let run = 1; run <= o.runs; run++) {
    const targets = o.targets.map((_, i) => o.targets[(i + run - 1) % o.targets.length]);
    for (const scenario of o.scenarios) {
      const rates = scenario === 'fanout' ? o.rates : OPT_IN_SCENARIOS.has(scenario) ? o.streamRates : [null];
      for (const rate of rates) for (const target of targets) plan.push({ run, scenario, rate, target });
    }
  }
  const results = [];
  let index = 0;
  for (const item of plan) {
    index++;
    if (!supported(modules[item.target], item.scenario)) {
      results.push({ ...item, attempt: 1, na: true, final: true, figures: null, outsideCores: null });
      console.error(`bench: [${index}/${plan.length}] ${item.target} ${item.scenario} run ${item.run}: n/a for this target`);
      continue;
    }
    for (let attempt = 1; attempt <= 2 && !stopping; attempt++) {
      const ctx = { options: o, redis, target: item.target, module: modules[item.target] };
      const label = `[${index}/${plan.length}] ${item.target} ${item.scenario}${item.rate ? ` P=${item.rate}` : ''} run ${item.run}${attempt > 1 ? ' (retry)' : ''}`;
      const q0 = performance.now();
      const quiet = await waitQuiet(redis.pid);
      if (stopping) return;
      const waited = (performance.now() - q0) / 1000;
      console.error(`bench: ${label} …${waited > 3 ? ` (waited ${waited.toFixed(0)} s for outside load to drop; now ${quiet.toFixed(2)} cores)` : ''}`);
      const t0 = performance.now();
      let r;
      try {
        if (item.scenario === 'fanout') r = await fanoutStep(ctx, item.rate);
        else if (item.scenario === 'sse' || item.scenario === 'poll') r = await fanoutStep(ctx, item.rate, item.scenario);
        else if (item.scenario === 'ramp') r = await rampStep(ctx);
        else if (item.scenario === 'idle') r = await idleStep(ctx);
        else r = await resumeStep(ctx);
      } catch (err) {
        if (stopping) return;
        r = { error: String(err?.stack ?? err), figures: null, outsideCores: null };
      }
      if (stopping) return;
      const entry = { ...item, attempt, seconds: (performance.now() - t0) / 1000, outsideBefore: quiet, quietWaitS: waited, ...r };
      const disturbed = typeof r.outsideCores === 'number' && r.outsideCores > DISTURBED_CORES;
      entry.disturbed = disturbed;
      entry.final = !disturbed || attempt === 2;
      results.push(entry);
      console.error(`bench: ${label} ${r.error ? `FAILED: ${r.error.split('\n')[0]}` : `done in ${entry.seconds.toFixed(1)} s; ${brief(item.scenario, r)}; outside ${fmt(r.outsideCores, 2)} cores${disturbed ? ' (disturbed)' : ''}`}`);
      if (entry.final) break;
    }
  }

  await stopChild(redis.child);
  const { summary, text } = summarize(results, o);
  const header = [
    `Streamgate benchmark — ${startedAt.toISOString()}; ${cpus().length} × ${cpus()[0]?.model ?? '?'}; Node ${process.version}`,
    `median of ${o.runs} run(s) per figure; runs interleaved; "outside load" = machine CPU (/proc/stat) not used by the benchmark's processes; a step over ${DISTURBED_CORES} cores is retried once`,
  ].join('\n');
  console.log(`${header}\n${text}\n`);
  const json = {
    meta: {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? null,
      clkTck: CLK_TCK,
      command: `node spec/bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
      disturbedCores: DISTURBED_CORES,
      git: gitState(),
      streamgateRoot: process.env.BENCH_STREAMGATE_ROOT ?? ROOT,
    },
    options: o,
    summary,
    steps: results,
  };
  writeFileSync(o.out, JSON.stringify(json, null, 2));
  console.error(`bench: results written to ${o.out}`);
  const failed = results.filter((r) => r.final && r.error).length;
  if (failed) process.exitCode = 1;
}

/** What was measured: the commit, and whether the working tree differed from it. */
function gitState() {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'lib', 'config', 'bin'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
    return { head, dirty };
  } catch {
    return null;
  }
}

function brief(scenario, r) {
  const f = r?.figures;
  if (!f) return '';
  if (scenario === 'ramp') return `highest P that held ${f.heldP} (loadgen ${fmt(f.heldLoadgenCores, 2)}, publisher ${fmt(f.heldPublisherCores, 2)} cores, ${fmt(f.heldCpuPerDeliveryUs, 1)} µs CPU/delivery); ${r.detail.stopReason}`;
  if (scenario === 'fanout' || scenario === 'sse' || scenario === 'poll') return `${fmt(f.deliveriesPerSec, 0)} deliveries/s, p99 ${fmt(f.p99, 1)} ms, missing ${f.missing}, dup ${f.duplicates}, ${fmt(f.cpuPerDeliveryUs, 1)} µs CPU/delivery`;
  if (scenario === 'idle') return `${fmt(f.kbPerConnection, 2)} KB/conn, open ${f.stillOpen}, probe ${f.probeReceived}, hold CPU ${fmt(f.holdNodeCores, 3)} cores`;
  return `${fmt(f.resumeMs, 0)} ms to all events, missing ${f.missing}, dup ${f.duplicates}, out of order ${f.outOfOrder}`;
}

main()
  .catch(async (err) => {
    console.error(`bench: ${err?.stack ?? err}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    if (!stopping) await cleanupAll();
  });
