import { expect } from 'chai';
import { signUserToken } from '../../lib/auth/tokens.js';
import { compareIds } from '../../lib/protocol/event-id.js';
import { request, TEST_SECRET } from '../support/gateway.js';
import { killAllNodes, startNode, type NodeProcess } from '../support/node-process.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';
import { connect, type Frame, type TestClient } from '../support/ws-client.js';

const TENANT = 'acme';

function token(sub: string, channels: string[], publish: string[] = []): string {
  return signUserToken(TEST_SECRET, { sub, tid: TENANT, channels, publish });
}

/** Rejects with `what` when `work` takes longer than `ms`. */
function within<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

const sortIds = (ids: string[]) => [...ids].sort(compareIds);

describe('several gateway processes on one Redis', function () {
  this.timeout(60_000);
  let prefix: string;
  let clients: TestClient[];

  beforeEach(() => {
    prefix = uniquePrefix();
    clients = [];
  });
  afterEach(async () => {
    // A client whose node hangs must not hang the suite.
    await Promise.all(clients.map((c) => within(c.close(), 5000, 'closing a client').catch(() => c.ws.terminate())));
    await killAllNodes();
    await deleteKeysWithPrefix(prefix);
  });

  const startNodes = (n: number): Promise<NodeProcess[]> =>
    Promise.all(Array.from({ length: n }, () => startNode({ redisUrl: testRedisUrl(), keyPrefix: prefix, secret: TEST_SECRET })));

  async function client(url: string, jwt: string): Promise<TestClient> {
    const c = await connect(url, jwt);
    clients.push(c);
    return c;
  }

  it('a client on node B receives what node A acknowledged, over HTTP and WebSocket, with the acknowledged id', async () => {
    const [a, b] = await startNodes(2);
    const reader = await client(b!.url, token('bo', ['team:*']));
    const sub = await reader.request({ type: 'subscribe', channel: 'team:1' });
    expect(sub).to.include({ type: 'reply', ok: true, channel: 'team:1', recovered: true });

    const viaHttp = await request(`${a!.url}/v1/channels/team:1/events`, {
      token: token('ann', [], ['team:*']),
      body: { event: 'goal.updated', data: { n: 1 } },
    });
    expect(viaHttp.status, JSON.stringify(viaHttp.body)).to.equal(201);
    const first = await reader.next((f) => f.type === 'event' && f.id === viaHttp.body.id);
    expect(first).to.include({ channel: 'team:1', event: 'goal.updated' });
    expect(first.data).to.deep.equal({ n: 1 });
    expect(first.publisher).to.deep.equal({ id: 'ann' });

    const writer = await client(a!.url, token('cy', ['team:*'], ['team:*']));
    const ack = await writer.request({ type: 'publish', channel: 'team:1', event: 'goal.updated', data: { n: 2 } });
    expect(ack, JSON.stringify(ack)).to.include({ type: 'reply', ok: true, channel: 'team:1' });
    const second = await reader.next((f) => f.type === 'event' && f.id === ack.event_id);
    expect(second.data).to.deep.equal({ n: 2 });
    expect(second.publisher).to.deep.equal({ id: 'cy' });

    expect(reader.events('team:1').map((e) => e.id)).to.deep.equal([viaHttp.body.id, ack.event_id]);
  });

  it('clients of a SIGKILLed node resume on another node and end with every acknowledged event once, in order', async () => {
    const started = Date.now();
    const [a, b] = await startNodes(2);
    const LOAD = 1000;
    const KILL_AFTER = 300;

    /** A client that, like the SDK, reconnects elsewhere and resumes each channel from the last id it saw. */
    interface ResumingClient {
      name: string;
      channels: string[];
      connections: TestClient[];
      /** Each channel's position when first subscribed: where to resume if nothing arrived. */
      start: Map<string, string>;
      firstClose?: number;
      resumeReplies: Frame[];
      resumed?: Promise<void>;
    }
    const received = (rc: ResumingClient, channel: string): Frame[] => rc.connections.flatMap((c) => c.events(channel));

    async function open(rc: ResumingClient, url: string, resume: boolean): Promise<void> {
      const c = await client(url, token(rc.name, ['load:*']));
      for (const channel of rc.channels) {
        const since = resume ? (received(rc, channel).at(-1)?.id ?? rc.start.get(channel)) : undefined;
        const reply = await c.request({ type: 'subscribe', channel, ...(since === undefined ? {} : { since }) });
        expect(reply, JSON.stringify(reply)).to.include({ type: 'reply', ok: true });
        if (resume) rc.resumeReplies.push(reply);
        else rc.start.set(channel, reply.position ?? '0-0');
      }
      rc.connections.push(c);
    }

    const fleet: ResumingClient[] = [
      ...Array.from({ length: 6 }, (_, i) => ({ name: `load-${i}`, channels: ['load:1'] })),
      ...Array.from({ length: 2 }, (_, i) => ({ name: `both-${i}`, channels: ['load:1', 'load:2'] })),
    ].map((c) => ({ ...c, connections: [], start: new Map(), resumeReplies: [] }));
    for (const rc of fleet) {
      await open(rc, a!.url, false);
      rc.resumed = rc.connections[0]!.closed.then(async ({ code }) => {
        rc.firstClose = code;
        await open(rc, b!.url, true);
      });
      // A failed resume is reported by the assertions below, not as an unhandled rejection.
      rc.resumed.catch(() => undefined);
    }

    // 1,000 events on load:1 and every fourth step one on load:2, four publishes at a time, through node B.
    const plan: string[] = [];
    for (let i = 0; i < LOAD; i++) plan.push('load:1', ...(i % 4 === 3 ? ['load:2'] : []));
    const acked = new Map<string, string[]>([['load:1', []], ['load:2', []]]);
    // Ids are unique per channel, not across channels (each shard log counts its own).
    const stepOf = new Map<string, number>();
    const publisher = token('publisher', [], ['load:*']);
    let nextStep = 0;
    let killed: Promise<void> | undefined;
    let ackedBeforeKill = 0;
    const worker = async () => {
      while (nextStep < plan.length) {
        const step = nextStep++;
        const channel = plan[step]!;
        const res = await request(`${b!.url}/v1/channels/${channel}/events`, { token: publisher, body: { event: 'tick', data: { step } } });
        if (res.status !== 201) throw new Error(`publish ${step} answered ${res.status}: ${JSON.stringify(res.body)}`);
        acked.get(channel)!.push(res.body.id as string);
        stepOf.set(`${channel} ${res.body.id}`, step);
        if (!killed && acked.get('load:1')!.length >= KILL_AFTER) {
          ackedBeforeKill = acked.get('load:1')!.length;
          killed = a!.kill();
        }
      }
    };
    await within(Promise.all(Array.from({ length: 4 }, worker)), 30_000, 'publishing');
    await killed;
    await within(Promise.all(fleet.map((rc) => rc.resumed)), 10_000, 'resuming on node B');

    for (const [channel, ids] of acked) {
      expect(new Set(ids).size, `${channel}: distinct acknowledged ids`).to.equal(channel === 'load:1' ? LOAD : LOAD / 4);
    }
    for (const rc of fleet) {
      const current = rc.connections.at(-1)!;
      for (const channel of rc.channels) {
        const expected = sortIds(acked.get(channel)!);
        await current.next((f) => f.type === 'event' && f.channel === channel && f.id === expected.at(-1), 15_000);
        const events = received(rc, channel);
        const raw = events.map((e) => e.id as string);
        for (let i = 1; i < raw.length; i++) {
          expect(compareIds(raw[i]!, raw[i - 1]!), `${rc.name} ${channel}: ${raw[i]} arrived after ${raw[i - 1]}`).to.be.at.least(0);
        }
        const once = raw.filter((id, i) => i === 0 || id !== raw[i - 1]);
        expect(once.length, `${rc.name} ${channel}: events after de-duplication`).to.equal(expected.length);
        expect(once, `${rc.name} ${channel}: every acknowledged id, in order`).to.deep.equal(expected);
        const wrong = events.filter((e) => e.data?.step !== stepOf.get(`${channel} ${e.id}`));
        expect(wrong, `${rc.name} ${channel}: events whose data is not what was published under their id`).to.deep.equal([]);
      }
      // The drop really happened mid-stream: some events came from A, the rest after resuming on B.
      expect(rc.firstClose, `${rc.name}: close code seen when node A died`).to.equal(1006);
      expect(rc.connections).to.have.length(2);
      expect(rc.connections[0]!.events('load:1').length, `${rc.name}: events from node A`).to.be.above(0);
      expect(rc.connections[1]!.events('load:1').length, `${rc.name}: events from node B`).to.be.above(0);
      for (const reply of rc.resumeReplies) expect(reply.recovered, `${rc.name}: recovered on resume`).to.equal(true);
    }
    expect(ackedBeforeKill).to.be.at.least(KILL_AFTER);
    expect(Date.now() - started).to.be.below(60_000);
  });

  it('SIGTERM closes client sessions with 1001, exits 0 within 10 s, and loses no acknowledged publish', async () => {
    const [c, d] = await startNodes(2);
    const watchers = await Promise.all(['w1', 'w2', 'w3'].map((name) => client(c!.url, token(name, ['team:*']))));
    for (const w of watchers) expect(await w.request({ type: 'subscribe', channel: 'team:1' })).to.include({ ok: true });

    // Four publishers keep requests in flight against node C until it is gone.
    type Outcome = { status: number; id?: string } | { error: string };
    const outcomes: Outcome[] = [];
    const publisher = token('publisher', [], ['team:*']);
    const MAX_REQUESTS = 5000;
    let pending = 0;
    let exitedAt = 0;
    let reachedAcks!: () => void;
    const enoughAcks = new Promise<void>((resolve) => (reachedAcks = resolve));
    const acks = () => outcomes.filter((o) => 'status' in o && o.status === 201).length;
    const loop = async () => {
      while (!exitedAt && outcomes.length + pending < MAX_REQUESTS) {
        pending++;
        try {
          const res = await request(`${c!.url}/v1/channels/team:1/events`, { token: publisher, body: { event: 'tick', data: outcomes.length } });
          outcomes.push({ status: res.status, id: res.body?.id });
        } catch (err) {
          const cause = (err as { cause?: { code?: string; message?: string } }).cause;
          outcomes.push({ error: cause?.code ?? cause?.message ?? String(err) });
          return;
        } finally {
          pending--;
        }
        if (acks() >= 50) reachedAcks();
      }
    };
    const loops = Promise.all(Array.from({ length: 4 }, loop));
    await within(enoughAcks, 10_000, '50 acknowledged publishes');

    const inFlightAtSigterm = pending;
    const t0 = Date.now();
    const code = await c!.stop();
    exitedAt = Date.now();
    await within(loops, 10_000, 'publishers ending');

    expect(code, c!.output()).to.equal(0);
    expect(exitedAt - t0).to.be.below(10_000);
    expect(c!.output()).to.include('SIGTERM, shutting down');
    for (const w of watchers) expect((await within(w.closed, 1000, 'client close')).code).to.equal(1001);
    expect(inFlightAtSigterm, 'publishes in flight when SIGTERM arrived').to.be.above(0);

    const odd = outcomes.filter((o) => 'status' in o && o.status !== 201);
    expect(odd, 'answers other than 201 during shutdown').to.deep.equal([]);
    const ackedIds = outcomes.flatMap((o) => ('status' in o && o.id ? [o.id] : []));
    expect(ackedIds.length).to.be.at.least(50);

    const history: string[] = [];
    let since = '0-0';
    for (;;) {
      const page = await request(`${d!.url}/v1/channels/team:1/events?since=${since}&limit=1000`, { token: token('auditor', ['team:*']) });
      expect(page.status).to.equal(200);
      expect(page.body.recovered).to.equal(true);
      history.push(...page.body.events.map((e: Frame) => e.id as string));
      if (page.body.events.length < 1000) break;
      since = history.at(-1)!;
    }
    const stored = new Set(history);
    expect(ackedIds.filter((id) => !stored.has(id)), 'acknowledged ids missing from history').to.deep.equal([]);
  });
});
