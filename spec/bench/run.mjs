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
 *   node spec/bench/run.mjs [--quick] [--scenario fanout,idle,resume] [--target streamgate,socketio,ws-raw]
 *     [--clients 1000] [--channels 100] [--rates 200,2000] [--seconds 10] [--warmup 2]
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
/** Hard bound on the whole run. */
const MAX_TOTAL_MS = 3 * 3600_000;

// ------------------------------------------------------------------ options

const HELP = `usage: node spec/bench/run.mjs [options]      (npm run bench -- [options])
  Needs the compiled dist/ (npm run build) and redis-server on PATH.
  --scenario LIST         fanout,idle,resume (default: all)
  --target LIST           target modules in spec/bench/targets (default: streamgate):
                          streamgate, socketio (2 Socket.IO nodes, Redis Streams adapter),
                          ws-raw (1 plain ws process); e.g. streamgate,socketio,ws-raw
  --clients N             fan-out clients, spread over both nodes (1000)
  --channels R            fan-out channels; clients per channel = N/R (100)
  --rates LIST            publishes per second, one fan-out step each (200,2000)
  --seconds S             fan-out publishing time per step (10)
  --warmup S              unmeasured publishing before each fan-out step (2)
  --idle-connections M    idle connections, all on one node (10000)
  --idle-seconds S        how long they are held (60)
  --resume-events K       events published while the resume client is away (10000)
  --runs N                runs of every step; figures are medians (3)
  --out FILE              JSON results (bench-results.json)
  --publish-auth key|token  HTTP publishes with a server key (default, as a backend does)
                          or with a user token carrying the publish claim
  --quick                 smoke run: 200 clients, 20 channels, 2 s, 1000 idle for 5 s, 1000 resume events, 1 run`;

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
    ? { clients: 200, channels: 20, rates: '200,2000', seconds: 2, warmup: 0.5, idleConnections: 1000, idleSeconds: 5, resumeEvents: 1000, runs: 1 }
    : { clients: 1000, channels: 100, rates: '200,2000', seconds: 10, warmup: 2, idleConnections: 10000, idleSeconds: 60, resumeEvents: 10000, runs: 3 };
  const num = (v, d, name, { min = 0, int = true } = {}) => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n))) throw new Error(`--${name}: expected ${int ? 'an integer' : 'a number'} ≥ ${min}, got ${v}`);
    return n;
  };
  const o = {
    quick: q,
    scenarios: (values.scenario ?? 'fanout,idle,resume').split(',').map((s) => s.trim()).filter(Boolean),
    targets: (values.target ?? 'streamgate').split(',').map((s) => s.trim()).filter(Boolean),
    clients: num(values.clients, defaults.clients, 'clients', { min: 1 }),
    channels: num(values.channels, defaults.channels, 'channels', { min: 1 }),
    rates: (values.rates ?? defaults.rates).split(',').map((r) => num(r.trim(), 0, 'rates', { min: 1 })),
    seconds: num(values.seconds, defaults.seconds, 'seconds', { min: 0.1, int: false }),
    warmup: num(values.warmup, defaults.warmup, 'warmup', { min: 0, int: false }),
    idleConnections: num(values['idle-connections'], defaults.idleConnections, 'idle-connections', { min: 1 }),
    idleSeconds: num(values['idle-seconds'], defaults.idleSeconds, 'idle-seconds', { min: 1, int: false }),
    resumeEvents: num(values['resume-events'], defaults.resumeEvents, 'resume-events', { min: 1 }),
    runs: num(values.runs, defaults.runs, 'runs', { min: 1 }),
    out: resolve(values.out ?? 'bench-results.json'),
    publishAuth: values['publish-auth'] ?? 'key',
  };
  if (!['key', 'token'].includes(o.publishAuth)) throw new Error('--publish-auth: key or token');
  for (const s of o.scenarios) if (!['fanout', 'idle', 'resume'].includes(s)) throw new Error(`--scenario: unknown ${s} (fanout, idle, resume)`);
  for (const t of o.targets) {
    if (!/^[a-z0-9-]+$/.test(t) || !existsSync(join(HERE, 'targets', `${t}.mjs`))) throw new Error(`--target: no module spec/bench/targets/${t}.mjs`);
  }
  if (o.channels > o.clients) throw new Error('--channels must not exceed --clients');
  if (o.idleConnections > 15000) console.error(`note: ${o.idleConnections} idle connections; the open-files limit is ${fileLimit()} per process`);
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

/** One RESP command on a fresh connection (PING, FLUSHALL). */
function redisCommand(port, ...args) {
  return new Promise((res) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (v) => {
      socket.destroy();
      res(v);
    };
    socket.setTimeout(2000, () => done(null));
    socket.once('error', () => done(null));
    socket.on('data', (c) => {
      buf += c.toString();
      if (buf.includes('\r\n')) done(buf.split('\r\n')[0]);
    });
    socket.once('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
  });
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

async function fanoutStep(ctx, rate) {
  const o = ctx.options;
  const N = o.clients;
  const R = o.channels;
  const n = Math.max(1, Math.round(rate * o.seconds));
  return withStep(ctx, async (step) => {
    const h = await step.startTarget({ nodes: 2 });
    const nodeCount = h.nodes.length;
    const channels = Array.from({ length: R }, (_, c) => `bench:${c}`);
    // Client i is in channel i % R on node ⌊i / R⌋ mod 2: each channel's clients alternate nodes.
    const list = Array.from({ length: N }, (_, i) => ({ node: Math.floor(i / R) % nodeCount, user: `u${i}` }));
    const chan = Array.from({ length: N }, (_, i) => i % R);
    const specs = h.clientSpecs(list);
    const lg = await step.loadgen('clients');
    const pub = await step.loadgen('publisher');
    const conn = await lg.call('connect', { specs, channels, chan, concurrency: 100 }, 300_000);
    if (conn.failed) throw new Error(`${conn.failed} of ${N} clients failed to connect/subscribe: ${JSON.stringify(conn.errors)}`);
    const armed = await lg.call('arm', { n, R });
    const pubSpec = h.publisherSpec({ auth: o.publishAuth });
    if (o.warmup > 0) {
      const w = await pub.call('publish', { spec: pubSpec, channels, rate, count: Math.max(1, Math.round(rate * o.warmup)), kind: 'warmup' }, 300_000);
      if (w.failed) throw new Error(`warm-up publishes failed: ${JSON.stringify(w.errors)}`);
      await sleep(500);
    }
    const groups = { ...serverGroups(h), redis: [ctx.redis.pid], loadgen: [lg.pid], publisher: [pub.pid] };
    const s0 = snapshot(groups);
    const p = await pub.call('publish', { spec: pubSpec, channels, rate, count: n, kind: 'fanout', timeoutMs: o.seconds * 5000 + 60_000 }, o.seconds * 5000 + 90_000);
    const c = await lg.call('collect', { timeoutMs: 10_000 }, 60_000);
    const s1 = snapshot(groups);
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
        expected: c.expected,
        received: c.received,
        unexpected: c.unexpected,
        clientsPerChannel: armed.perChannel,
        connectMs: conn.ms,
        cpuSeconds: d.cpu,
        sysSeconds: d.sys,
        windowS,
        meanLatency: c.latency.mean,
      },
      outsideCores: d.outsideCores,
      irqCores: d.irqCores,
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

const FIGURES = {
  fanout: [
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
  return s.scenario === 'fanout' ? `fanout@${s.rate}` : s.scenario;
}

function blockTitle(key, o) {
  if (key.startsWith('fanout@')) {
    const rate = Number(key.slice(7));
    const oneNode = o.targets.includes('ws-raw') ? ' (ws-raw: 1 node)' : '';
    return `fanout  P=${rate}/s  N=${o.clients} clients, R=${o.channels} channels (${o.clients / o.channels} per channel), 2 nodes${oneNode}, ${o.seconds} s → expected ${rate * (o.clients / o.channels)} deliveries/s`;
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
    const header = ['  figure'.padEnd(36), ...targets.map((t) => t.padStart(12)), ...others.map((t) => `${base}/${t}`.padStart(21)), '   runs'];
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
      lines.push(['  ' + label.padEnd(34), ...cells.map((x) => x.padStart(12)), ...ratios.map((x) => x.padStart(21)), '   ' + runs].join(''));
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
    }
  }
  return { summary, text: lines.join('\n') };
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
      const rates = scenario === 'fanout' ? o.rates : [null];
      for (const rate of rates) for (const target of targets) plan.push({ run, scenario, rate, target });
    }
  }
  const results = [];
  let index = 0;
  for (const item of plan) {
    index++;
    if (modules[item.target].supports?.[item.scenario] === false) {
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
      console.error(`bench: ${label} ${r.error ? `FAILED: ${r.error.split('\n')[0]}` : `done in ${entry.seconds.toFixed(1)} s; ${brief(item.scenario, r.figures)}; outside ${fmt(r.outsideCores, 2)} cores${disturbed ? ' (disturbed)' : ''}`}`);
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

function brief(scenario, f) {
  if (!f) return '';
  if (scenario === 'fanout') return `${fmt(f.deliveriesPerSec, 0)} deliveries/s, p99 ${fmt(f.p99, 1)} ms, missing ${f.missing}, dup ${f.duplicates}, ${fmt(f.cpuPerDeliveryUs, 1)} µs CPU/delivery`;
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
