/**
 * The benchmark's load generator: a separate Node process forked by run.mjs, driven
 * over IPC (`{id, cmd, args}` in, `{re, ok, result|error}` out). It never starts
 * servers; it only uses a target module's `client` half (targets/<name>.mjs).
 * run.mjs forks one for the clients and, where a scenario publishes, one for the
 * publisher, so each side's CPU is measured apart.
 *
 * Times are epoch milliseconds with sub-millisecond precision:
 * `performance.timeOrigin + performance.now()`, in the publisher at the publish call
 * and here at frame arrival.
 */
import { setTimeout as sleep } from 'node:timers/promises';

const ORIGIN = performance.timeOrigin;
const now = () => ORIGIN + performance.now();
const MAX_LIFETIME_MS = Number(process.env.BENCH_LOADGEN_MAX_MS || 3_600_000);

let client = null;
/** Connection groups: name → array of { conn, chan } */
const groups = new Map();

// Fan-out tracking, set by `arm`.
let track = null;
let warmupSeen = 0;
let probeSeen = null;
let probeWaiter = null;
const closeCodes = {};

function onFanoutEvent(i, data, at) {
  if (data === null || typeof data !== 'object') return;
  if (data.w) {
    warmupSeen++;
    return;
  }
  if (data.probe) {
    if (probeSeen && !probeSeen[i]) {
      probeSeen[i] = 1;
      probeSeen.count++;
      if (probeWaiter && probeSeen.count >= probeSeen.length) probeWaiter();
    }
    return;
  }
  const t = track;
  if (!t) return;
  // A delivery published for another `arm` (a ramp's earlier level, arriving late) is
  // neither counted nor taken for this level's sequence number.
  if ((data.l ?? null) !== t.tag) {
    t.stale++;
    return;
  }
  const seq = data.seq;
  const chan = t.chanOf[i];
  if (typeof seq !== 'number' || seq < 0 || seq >= t.n || seq % t.R !== chan) {
    t.unexpected++;
    return;
  }
  const slot = (seq - chan) / t.R;
  const seen = t.seen[i];
  if (seen[slot]) {
    t.dupes++;
    return;
  }
  seen[slot] = 1;
  const arrival = ORIGIN + at;
  if (t.latN < t.lat.length) t.lat[t.latN++] = arrival - data.t;
  t.received++;
  if (arrival > t.lastAt) t.lastAt = arrival;
  if (arrival < t.firstAt) t.firstAt = arrival;
  if (t.received === t.expected && t.done) t.done();
}

async function pool(count, concurrency, fn) {
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) {
      const i = next++;
      await fn(i);
    }
  });
  await Promise.all(workers);
}

/**
 * Sums of the connections' own counters (errors, frames other than events; polls for
 * long-polling clients): what a transport did besides delivering.
 */
function clientCounters(group) {
  const sum = {};
  for (const c of groups.get(group) ?? []) {
    if (!c) continue;
    for (const [k, v] of Object.entries(c.conn.stats)) if (typeof v === 'number' && k !== 'closeCode') sum[k] = (sum[k] ?? 0) + v;
  }
  return sum;
}

function pct(sorted, n, p) {
  if (n === 0) return null;
  return sorted[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))];
}

const commands = {
  async init({ target }) {
    ({ client } = await import(new URL(`./targets/${target}.mjs`, import.meta.url).href));
    return { pid: process.pid };
  },

  /**
   * Open specs.length connections in `group`; connection i subscribes to channels[chan[i]].
   * transport 'ws' (default): `client.connect` then a subscribe; 'sse' / 'poll':
   * `client.connectSse` / `client.connectPoll`, which subscribe through the query string.
   */
  async connect({ group = 'main', specs, channels, chan, concurrency = 100, subscribe = true, transport = 'ws' }) {
    const open =
      transport === 'ws'
        ? (spec, handlers) => client.connect(spec, handlers)
        : transport === 'sse' || transport === 'poll'
          ? (spec, handlers, i) => {
              const fn = transport === 'sse' ? client.connectSse : client.connectPoll;
              if (!fn) throw new Error(`this target has no ${transport} client`);
              return fn({ ...spec, channels: [channels[chan[i]]] }, handlers);
            }
          : null;
    if (!open) throw new Error(`connect: unknown transport ${transport}`);
    if (transport !== 'ws') subscribe = false;
    const list = new Array(specs.length);
    groups.set(group, list);
    let failed = 0;
    const errors = {};
    const t0 = now();
    await pool(specs.length, concurrency, async (i) => {
      try {
        const conn = await open(
          specs[i],
          {
            onEvent: group === 'main' ? (_channel, _id, data, at) => onFanoutEvent(i, data, at) : () => undefined,
            onClose: (code) => {
              closeCodes[code] = (closeCodes[code] ?? 0) + 1;
            },
          },
          i,
        );
        try {
          if (subscribe) await conn.subscribe(channels[chan[i]]);
        } catch (err) {
          conn.terminate();
          throw err;
        }
        list[i] = { conn, chan: chan[i] };
      } catch (err) {
        failed++;
        const msg = String(err?.message ?? err).slice(0, 120);
        errors[msg] = (errors[msg] ?? 0) + 1;
      }
    });
    return { connected: specs.length - failed, failed, errors, ms: now() - t0 };
  },

  /**
   * Start counting fan-out deliveries: seqs 0..n-1, seq s goes to channel s % R. `tag`
   * (a ramp level) must match the payload's `l` (publish's `tag`): deliveries of an
   * earlier arm that arrive late count as `stale`, never for this one.
   */
  arm({ group = 'main', n, R, tag = null }) {
    const list = groups.get(group);
    const chanOf = new Int32Array(list.length);
    const seen = new Array(list.length);
    const perChannel = new Array(R).fill(0);
    for (let i = 0; i < list.length; i++) {
      chanOf[i] = list[i] ? list[i].chan : -1;
      seen[i] = new Uint8Array(Math.ceil(n / R) + 1);
      if (list[i]) perChannel[list[i].chan]++;
    }
    let expected = 0;
    for (let s = 0; s < n; s++) expected += perChannel[s % R];
    track = { n, R, tag, group, chanOf, seen, expected, received: 0, dupes: 0, unexpected: 0, stale: 0, lat: new Float64Array(expected), latN: 0, firstAt: Infinity, lastAt: 0, done: null };
    return { expected, perChannel: [Math.min(...perChannel), Math.max(...perChannel)] };
  },

  /** Wait until every expected delivery arrived or timeoutMs passed; then the figures. */
  async collect({ timeoutMs = 10_000, settleMs = 200 }) {
    const t = track;
    if (t.received < t.expected) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        t.done = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const completeAt = now();
    // A short settle catches duplicates that trail the last expected delivery.
    await sleep(settleMs);
    const lat = t.lat.subarray(0, t.latN).sort();
    const n = t.latN;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += lat[i];
    return {
      expected: t.expected,
      received: t.received,
      missing: t.expected - t.received,
      dupes: t.dupes,
      unexpected: t.unexpected,
      stale: t.stale,
      clients: clientCounters(t.group),
      warmupSeen,
      firstAt: t.firstAt === Infinity ? null : t.firstAt,
      lastAt: t.lastAt || null,
      completeAt,
      latency: { p50: pct(lat, n, 0.5), p90: pct(lat, n, 0.9), p99: pct(lat, n, 0.99), max: n ? lat[n - 1] : null, mean: n ? sum / n : null },
    };
  },

  /**
   * Publish `count` events round-robin over `channels`, paced at `rate`/s (0: as fast as
   * `concurrency` allows). kind: fanout ({seq,t}), warmup ({w,seq,t}), probe ({probe,t}),
   * seq ({seq,t}, ids returned in seq order). `tag` (a ramp level) goes into fanout
   * payloads as `l`, for `arm`. The publisher may be a promise (a WebSocket publisher
   * connects first); pacing starts once it is ready.
   */
  async publish({ spec, channels, count, rate = 0, concurrency = 16, kind = 'fanout', tag = null, timeoutMs = 120_000 }) {
    const pub = await client.publisher(spec, { maxSockets: concurrency });
    const R = channels.length;
    const ids = kind === 'seq' ? new Array(count).fill(null) : null;
    let issued = 0;
    let done = 0;
    let ok = 0;
    let inflight = 0;
    let maxLagMs = 0;
    // Round trips (publish call to its answer), and how often a due publish waited for
    // one of the `concurrency` in flight to finish: a paced rate not reached with
    // capped > 0 means slow answers, not a busy publisher.
    let rttSum = 0;
    let capped = 0;
    const errors = {};
    const startedAt = now();
    let endedAt = startedAt;
    let timer = null;
    let finish;
    const finished = new Promise((resolve) => (finish = resolve));
    const deadline = setTimeout(() => finish(), timeoutMs);
    const send = (seq) => {
      inflight++;
      const t = now();
      if (rate > 0) maxLagMs = Math.max(maxLagMs, t - (startedAt + (seq * 1000) / rate));
      const data = kind === 'warmup' ? { w: 1, seq, t } : kind === 'probe' ? { probe: 1, t } : tag === null ? { seq, t } : { seq, t, l: tag };
      pub.publish(channels[seq % R], data).then(
        (id) => {
          ok++;
          if (ids) ids[seq] = id;
        },
        (err) => {
          const msg = String(err?.message ?? err).slice(0, 160);
          errors[msg] = (errors[msg] ?? 0) + 1;
        },
      ).finally(() => {
        rttSum += now() - t;
        inflight--;
        done++;
        if (done === count) {
          endedAt = now();
          finish();
        } else pump();
      });
    };
    const pump = () => {
      if (timer) {
        clearTimeout(timer);
        timer = null;
      }
      const due = rate > 0 ? Math.min(count, Math.floor(((now() - startedAt) * rate) / 1000) + 1) : count;
      while (issued < due && inflight < concurrency) send(issued++);
      if (issued < due) capped++;
      if (issued < count && issued >= due) {
        const nextAt = startedAt + (issued * 1000) / rate;
        timer = setTimeout(pump, Math.max(0, nextAt - now()));
      }
    };
    if (count > 0) pump();
    else finish();
    await finished;
    clearTimeout(deadline);
    if (timer) clearTimeout(timer);
    await pub.close();
    const durationMs = endedAt - startedAt;
    return {
      count,
      issued,
      ok,
      failed: count - ok,
      errors,
      startedAt,
      endedAt,
      durationMs,
      achievedRate: durationMs > 0 ? (ok * 1000) / durationMs : null,
      maxLagMs,
      meanRoundTripMs: done ? rttSum / done : null,
      capped,
      ids,
    };
  },

  /** Connections still open, heartbeats answered, close codes seen. */
  status({ group = 'main' }) {
    const list = groups.get(group) ?? [];
    let open = 0;
    let pings = 0;
    for (const c of list) {
      if (!c) continue;
      if (c.conn.open) open++;
      pings += c.conn.stats.pings;
    }
    return { total: list.length, open, pings, closeCodes: { ...closeCodes } };
  },

  probeArm({ group = 'main' }) {
    const list = groups.get(group) ?? [];
    probeSeen = new Uint8Array(list.length);
    probeSeen.count = 0;
    return { armed: list.length };
  },

  /** Wait until every connection of the group saw a probe event. */
  async probeWait({ timeoutMs = 30_000 }) {
    if (probeSeen.count < probeSeen.length) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        probeWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    probeWaiter = null;
    return { got: probeSeen.count, of: probeSeen.length };
  },

  async closeAll({ group = 'main', concurrency = 500 }) {
    const list = groups.get(group) ?? [];
    await pool(list.length, concurrency, async (i) => {
      if (list[i]) await list[i].conn.close();
    });
    groups.delete(group);
    return { closed: list.length };
  },

  // ---- resume: one client, away while events are published, then back with `since`.

  async resumeOpen({ spec, channel }) {
    const log = [];
    const conn = await client.connect(spec, { onEvent: (_c, id, data, at) => log.push([id, data?.seq ?? null, at]) });
    const reply = await conn.subscribe(channel);
    groups.set('resume', [{ conn, log }]);
    return { recovered: reply.recovered, position: reply.position };
  },

  async resumeWaitFirst({ timeoutMs = 10_000 }) {
    const { log } = groups.get('resume')[0];
    const end = now() + timeoutMs;
    while (log.length === 0 && now() < end) await sleep(5);
    if (log.length === 0) throw new Error('the away client never got its first event');
    return { id: log[log.length - 1][0], received: log.length };
  },

  async resumeAway() {
    const [{ conn }] = groups.get('resume');
    await conn.close();
    groups.delete('resume');
    return {};
  },

  /** Reconnect, subscribe with `since`, time until `expect` events arrived. */
  async resumeBack({ spec, channel, since, expect, timeoutMs = 120_000, settleMs = 300 }) {
    const log = [];
    let waiter = null;
    const conn = await client.connect(spec, {
      onEvent: (_c, id, data, at) => {
        log.push([id, data?.seq ?? null, at]);
        if (log.length === expect && waiter) waiter();
      },
    });
    const t0 = performance.now();
    const reply = await conn.subscribe(channel, since);
    const tReply = performance.now();
    if (log.length < expect) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const complete = log.length >= expect;
    const allMs = complete ? log[expect - 1][2] - t0 : null;
    await sleep(settleMs);
    const closeCode = conn.stats.closeCode;
    await conn.close();
    return {
      replyMs: tReply - t0,
      allMs,
      complete,
      received: log.length,
      recovered: reply.recovered,
      position: reply.position,
      closeCode,
      events: log.map(([id, seq]) => [id, seq]),
    };
  },
};

async function shutdown(code) {
  const closing = [];
  for (const list of groups.values()) for (const c of list) if (c) closing.push(Promise.resolve(c.conn.terminate?.()));
  await Promise.allSettled(closing);
  process.exit(code);
}

if (!process.send) {
  process.stderr.write('loadgen.mjs is forked by run.mjs (npm run bench); it is not run by hand\n');
  process.exit(2);
}

process.on('message', async (msg) => {
  if (msg?.cmd === 'exit') return shutdown(0);
  const fn = commands[msg?.cmd];
  try {
    if (!fn) throw new Error(`unknown command ${msg?.cmd}`);
    const result = await fn(msg.args ?? {});
    process.send({ re: msg.id, ok: true, result });
  } catch (err) {
    process.send({ re: msg.id, ok: false, error: String(err?.stack ?? err) });
  }
});
// The parent went away (crash, SIGKILL): never outlive it.
process.on('disconnect', () => shutdown(1));
// Ctrl-C reaches the whole process group; run.mjs decides when this process ends.
process.on('SIGINT', () => undefined);
setTimeout(() => {
  process.stderr.write('loadgen: maximum lifetime reached, exiting\n');
  shutdown(3);
}, MAX_LIFETIME_MS).unref();
