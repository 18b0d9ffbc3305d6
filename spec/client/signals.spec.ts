/**
 * The SDK's presence, idle/away, typing, receipts and room endings over each transport
 * against a real gateway (issue 5 items 1, 5, 6, 7, the SDK parts): what one user's
 * client shows of another's, frames over WebSocket and HTTP routes over SSE and polling.
 */
import { expect } from 'chai';
import WebSocket from 'ws';
import {
  type ActivitySource,
  type ConnectOptions,
  type EventFrame,
  type PresenceEvent,
  type ReceiptEvent,
  type StreamgateClientError,
  type TransportName,
  type TypingEvent,
  type UnsubscribedInfo,
} from '../../lib/client/index.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { sdkClients } from '../support/sdk-clients.js';

const TENANT = 't1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `pred` every 20 ms, at most `timeoutMs`. */
async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

const clients = sdkClients();
const watch = (options: Partial<ConnectOptions> & { url: string; token: string }) => clients.watch(options);

const ids = (users: Array<{ id: string }>) => users.map((u) => u.id).sort();

describe('client SDK: presence, typing, receipts, rooms', function () {
  let gw: TestGateway;
  const token = (sub: string, extra: Record<string, unknown> = {}) =>
    gw.token({ sub, tid: TENANT, name: sub.toUpperCase(), channels: ['team:*', 'eval:*'], publish: ['team:*'], ...extra });
  const user = (sub: string, transport: TransportName, options: Partial<ConnectOptions> = {}) =>
    watch({ url: gw.url, token: token(sub), transports: [transport], ...options });

  beforeEach(async () => {
    // A short grace so leaves come quickly; receipts on `team` too.
    gw = await startGateway({ override: { presence: { grace_ms: 300 }, namespaces: { team: { receipts: true }, eval: { anonymous: true } } } });
  });
  afterEach(async () => {
    clients.closeAll();
    await gw.close();
  });

  for (const transport of ['websocket', 'sse', 'poll'] as const) {
    it(`${transport}: keeps the member list from members, join, update and leave; members() and presence() answer`, async () => {
      const { client: ann, errors } = user('ann', transport);
      const changes: string[][] = [];
      const events: PresenceEvent[] = [];
      const sub = ann.subscribe('team:1', () => undefined, { onMembers: (m) => changes.push(ids(m)), onPresence: (e) => events.push(e) });
      await sub.ready;
      await waitFor(() => ids(sub.members()).includes('ann'), 5000, 'ann in her own list');

      const { client: bo } = user('bo', 'websocket');
      await bo.subscribe('team:1', () => undefined).ready;
      await waitFor(() => ids(sub.members()).includes('bo'), 5000, 'the join of bo');
      expect(events.some((e) => e.action === 'join' && e.user.id === 'bo' && e.user.name === 'BO')).to.equal(true);

      await bo.setPresence({ status: 'busy', customStatus: 'in theatre' });
      await waitFor(() => sub.members().some((m) => m.id === 'bo' && m.status === 'busy'), 5000, 'the update of bo');
      expect(sub.members().find((m) => m.id === 'bo')).to.include({ customStatus: 'in theatre', name: 'BO' });
      expect(sub.memberCount()).to.equal(2);

      const asked = await ann.members('team:1');
      expect(ids(asked.members)).to.deep.equal(['ann', 'bo']);
      expect(asked.count).to.equal(2);

      bo.close();
      await waitFor(() => !ids(sub.members()).includes('bo'), 5000, 'the leave of bo');
      expect(changes.at(-1)).to.deep.equal(['ann']);
      const [a, b] = await ann.presence(['ann', 'bo']);
      expect(a).to.include({ id: 'ann', status: 'online' });
      expect(b).to.include({ id: 'bo', status: 'offline', customStatus: 'in theatre' });
      expect(b!.lastSeen).to.be.a('string');
      expect(errors).to.deep.equal([]);
    });
  }

  for (const transport of ['websocket', 'sse'] as const) {
    it(`${transport}: in an anonymous namespace keeps only the count`, async () => {
      const { client: ann } = user('ann', transport);
      const counts: number[] = [];
      const sub = ann.subscribe('eval:9', () => undefined, { onPresence: (e) => e.action === 'count' && counts.push(e.count) });
      await sub.ready;
      await waitFor(() => sub.memberCount() === 1, 5000, 'ann counted');
      const { client: bo } = user('bo', 'websocket');
      await bo.subscribe('eval:9', () => undefined).ready;
      await waitFor(() => sub.memberCount() === 2, 5000, 'two present');
      expect(sub.members()).to.deep.equal([]);
      expect(counts).to.include(2);
      bo.close();
      await waitFor(() => sub.memberCount() === 1, 5000, 'bo gone');
      expect(await ann.members('eval:9')).to.deep.equal({ members: [], count: 1 });
    });
  }

  for (const transport of ['websocket', 'sse'] as const) {
    it(`${transport}: asks for the member list again after a reconnect (who left and joined meanwhile)`, async () => {
      const proxy: TestProxy = await startProxy({ targetPort: gw.port });
      try {
        const { client: ann, states } = watch({ url: proxy.url, token: token('ann'), transports: [transport], backoff: { baseMs: 100, maxMs: 200 } });
        const sub = ann.subscribe('team:1', () => undefined);
        const { client: bo } = user('bo', 'websocket');
        await bo.subscribe('team:1', () => undefined).ready;
        await waitFor(() => ids(sub.members()).join() === 'ann,bo', 5000, 'ann and bo');

        proxy.refuse = true;
        proxy.dropAll();
        await waitFor(() => states.some((s) => s.state === 'reconnecting'), 5000, 'reconnecting');
        bo.close();
        const { client: cy } = user('cy', 'websocket');
        await cy.subscribe('team:1', () => undefined).ready;
        // bo's leave is announced while ann is away.
        await sleep(1600);
        expect(ids(sub.members())).to.include('bo');
        proxy.refuse = false;

        await waitFor(() => ids(sub.members()).join() === 'ann,cy', 8000, 'the list asked again: ann and cy');
        expect(ann.state).to.equal('connected');
      } finally {
        await proxy.close();
      }
    });
  }

  for (const transport of ['websocket', 'sse'] as const) {
    it(`${transport}: goes away after the idle time and online again on activity (injected activity source)`, async () => {
      let poke: (() => void) | null = null;
      const source: ActivitySource = {
        listen(onActivity) {
          poke = onActivity;
          return () => (poke = null);
        },
      };
      const { client: bo } = user('bo', 'websocket');
      const statuses: string[] = [];
      const seen = bo.subscribe('team:1', () => undefined, {
        onPresence: (e) => e.action !== 'count' && e.user.id === 'ann' && statuses.push(e.user.status),
      });
      await seen.ready;
      // Longer than the server's 2-updates-per-second window, so no update is coalesced away.
      const { client: ann } = user('ann', transport, { idle: { awayAfterMs: 1000, source } });
      await ann.subscribe('team:1', () => undefined).ready;
      await waitFor(() => seen.members().some((m) => m.id === 'ann' && m.status === 'away'), 5000, 'ann away');
      expect((await bo.presence(['ann']))[0]!.status).to.equal('away');
      expect(poke).to.be.a('function');

      poke!();
      await waitFor(() => seen.members().some((m) => m.id === 'ann' && m.status === 'online'), 5000, 'ann online again');
      expect(statuses.slice(-2)).to.deep.equal(['away', 'online']);
      // Activity keeps her online; silence makes her away again.
      await sleep(600);
      poke!();
      await sleep(600);
      expect(seen.members().find((m) => m.id === 'ann')!.status).to.equal('online');
      await waitFor(() => seen.members().some((m) => m.id === 'ann' && m.status === 'away'), 5000, 'ann away again');

      // A status of the application's own is not overruled by idleness.
      await ann.setPresence({ status: 'busy' });
      await waitFor(() => seen.members().some((m) => m.id === 'ann' && m.status === 'busy'), 5000, 'ann busy');
      poke!();
      await sleep(300);
      expect(seen.members().find((m) => m.id === 'ann')!.status).to.equal('busy');

      // awayAfterMs 0: off, the source is never listened to.
      let listened = false;
      user('cy', transport, { idle: { awayAfterMs: 0, source: { listen: () => ((listened = true), () => undefined) } } });
      expect(listened).to.equal(false);
    });
  }

  for (const transport of ['websocket', 'sse', 'poll'] as const) {
    it(`${transport}: typing both ways: one start per 2 s while typing, stop at once, not echoed`, async () => {
      const { client: ann } = user('ann', transport);
      const annSees: TypingEvent[] = [];
      const annSub = ann.subscribe('team:1', () => undefined, { onTyping: (e) => annSees.push(e) });
      const { client: bo } = user('bo', 'websocket');
      const boSees: TypingEvent[] = [];
      bo.on('typing', (e) => boSees.push(e));
      const boSub = bo.subscribe('team:1', () => undefined);
      await Promise.all([annSub.ready, boSub.ready]);
      // Signals reach ann once her stream is live with the channel (her own join shows it).
      await waitFor(() => ids(annSub.members()).includes('bo') && ids(annSub.members()).includes('ann'), 5000, 'both present');

      for (let i = 0; i < 5; i++) await bo.typing('team:1', true);
      await waitFor(() => ids(annSub.typing()).join() === 'bo', 5000, 'bo typing at ann');
      await bo.typing('team:1', false);
      await waitFor(() => annSub.typing().length === 0, 5000, 'bo stopped');
      expect(annSees.map((e) => `${e.user.id}:${e.state}${e.expired ? ':expired' : ''}`)).to.deep.equal(['bo:start', 'bo:stop']);

      await ann.typing('team:1', true);
      await waitFor(() => ids(boSub.typing()).join() === 'ann', 5000, 'ann typing at bo');
      await ann.typing('team:1', true);
      await ann.typing('team:1', false);
      await waitFor(() => boSub.typing().length === 0, 5000, 'ann stopped');
      expect(boSees.map((e) => `${e.user.id}:${e.state}`)).to.deep.equal(['ann:start', 'ann:stop']);
      expect(annSub.typing()).to.deep.equal([]);
      expect(annSees.some((e) => e.user.id === 'ann')).to.equal(false);
    });
  }

  it('typing expires by itself 3 s after the last start when no stop comes', async () => {
    // A wire that loses every typing stop: only the SDK's own expiry can end the indicator.
    class NoStops extends WebSocket {
      constructor(url: string) {
        super(url);
        const emit = this.emit.bind(this);
        this.emit = ((name: string, ...args: unknown[]) => {
          if (name === 'message' && String(args[0]).includes('"typing"') && String(args[0]).includes('"stop"')) return true;
          return emit(name, ...args);
        }) as typeof this.emit;
      }
    }
    const { client: ann } = watch({ url: gw.url, token: token('ann'), transports: ['websocket'], WebSocket: NoStops });
    const seen: TypingEvent[] = [];
    const sub = ann.subscribe('team:1', () => undefined, { onTyping: (e) => seen.push(e) });
    const { client: bo } = user('bo', 'websocket');
    await Promise.all([sub.ready, bo.subscribe('team:1', () => undefined).ready]);
    await bo.typing('team:1', true);
    await waitFor(() => sub.typing().length === 1, 5000, 'bo typing');
    const started = Date.now();
    await waitFor(() => sub.typing().length === 0, 5000, 'the indicator expired');
    expect(Date.now() - started).to.be.within(2500, 3600);
    expect(seen.at(-1)).to.deep.include({ state: 'stop', expired: true });
  });

  for (const transport of ['websocket', 'sse'] as const) {
    it(`${transport}: autoAck sends one ack per channel per second with the latest id; markRead brings unread to 0`, async () => {
      const channel = 'dm:ann:bo';
      const { client: ann, errors } = user('ann', transport, { autoAck: true });
      const got: EventFrame[] = [];
      const sub = ann.subscribe(channel, (e) => got.push(e));
      const { client: bo } = user('bo', 'websocket');
      const receipts: ReceiptEvent[] = [];
      bo.on('receipt', (r) => receipts.push(r));
      await Promise.all([sub.ready, bo.subscribe(channel, () => undefined).ready]);
      await waitFor(() => ids(sub.members()).includes('ann'), 5000, 'ann live on the channel');

      const published: string[] = [];
      for (let i = 0; i < 10; i++) published.push((await bo.publish(channel, 'message.sent', { n: i })).id);
      await waitFor(() => got.length === 10, 5000, 'ten events at ann');
      const last = published.at(-1)!;
      await waitFor(() => receipts.some((r) => r.kind === 'delivered' && r.until === last), 5000, 'the delivered receipt of the last event');
      await sleep(1200);
      const delivered = receipts.filter((r) => r.kind === 'delivered');
      expect(delivered.length).to.be.within(1, 2);
      expect(delivered.every((r) => r.user.id === 'ann' && r.channel === channel)).to.equal(true);

      const before = await ann.unread();
      expect(before.find((u) => u.channel === channel)?.unread).to.equal(10);
      await ann.markRead(channel);
      await waitFor(() => receipts.some((r) => r.kind === 'read' && r.until === last), 5000, 'the read receipt');
      const after = await ann.unread();
      expect(after.find((u) => u.channel === channel)?.unread).to.equal(0);
      // Her own events are never acknowledged by herself.
      await ann.publish(channel, 'message.sent', { n: 'mine' });
      await sleep(1200);
      expect(receipts.filter((r) => r.kind === 'delivered')).to.have.length(delivered.length);
      expect(errors).to.deep.equal([]);
    });
  }

  for (const transport of ['websocket', 'sse', 'poll'] as const) {
    it(`${transport}: a member removed from a room loses the subscription at once, without a reconnect`, async () => {
      const created = await request(`${gw.url}/v1/rooms`, { token: token('ann'), body: { name: 'Ward 7' } });
      expect(created.status).to.equal(201);
      const room = `room:${created.body.id as string}`;
      expect((await request(`${gw.url}/v1/rooms/${created.body.id}/members`, { token: token('ann'), body: { user_id: 'bo' } })).status).to.equal(201);

      const { client: bo, states, errors } = user('bo', transport);
      const roomEvents: EventFrame[] = [];
      const ended: Error[] = [];
      const unsubscribed: UnsubscribedInfo[] = [];
      bo.on('unsubscribed', (u) => unsubscribed.push(u));
      const sub = bo.subscribe(room, (e) => roomEvents.push(e), { onError: (e) => ended.push(e) });
      const team: EventFrame[] = [];
      const teamSub = bo.subscribe('team:1', (e) => team.push(e));
      await Promise.all([sub.ready, teamSub.ready]);
      const { client: ann } = user('ann', 'websocket');
      await ann.publish(room, 'note.added', { text: 'bed 4' });
      await waitFor(() => roomEvents.length === 1, 5000, 'the first room event');

      const removed = await request(`${gw.url}/v1/rooms/${created.body.id}/members/bo`, { method: 'DELETE', token: token('ann') });
      expect(removed.status).to.equal(204);
      await waitFor(() => ended.length === 1, 5000, 'the subscription ended');
      expect((ended[0] as StreamgateClientError).code).to.equal('unsubscribed');
      expect(unsubscribed).to.have.length(1);
      expect(unsubscribed[0]!.channel).to.equal(room);
      if (transport === 'poll' && unsubscribed[0]!.reason !== 'removed from the room') {
        // Removed while the next poll was on its way: that poll is refused and the SDK finds out which channel.
        expect(unsubscribed[0]!.reason).to.equal('no longer a member');
      } else {
        expect(unsubscribed[0]!.reason).to.equal('removed from the room');
        expect(roomEvents.at(-1)!.event).to.equal('member.removed');
      }

      await ann.publish(room, 'note.added', { text: 'after' });
      await ann.publish('team:1', 'note.added', { text: 'still here' });
      await waitFor(() => team.length === 1, 5000, 'the other channel goes on');
      await sleep(300);
      expect(roomEvents.map((e) => e.event).filter((e) => e !== 'member.removed')).to.deep.equal(['note.added']);
      expect(states.map((s) => s.state)).to.deep.equal(['connecting', 'connected']);
      expect(errors).to.deep.equal([]);
    });
  }

  for (const transport of ['websocket', 'poll'] as const) {
    it(`${transport}: a room left while offline ends its subscription as unsubscribed on the next connection`, async () => {
      const proxy = await startProxy({ targetPort: gw.port });
      try {
        const created = await request(`${gw.url}/v1/rooms`, { token: token('ann'), body: { name: 'Ward 11' } });
        const id = created.body.id as string;
        expect((await request(`${gw.url}/v1/rooms/${id}/members`, { token: token('ann'), body: { user_id: 'bo' } })).status).to.equal(201);
        const { client: bo, states } = watch({ url: proxy.url, token: token('bo'), transports: [transport], backoff: { baseMs: 100, maxMs: 200 } });
        const ended: UnsubscribedInfo[] = [];
        bo.on('unsubscribed', (u) => ended.push(u));
        const team: EventFrame[] = [];
        await Promise.all([bo.subscribe(`room:${id}`, () => undefined).ready, bo.subscribe('team:1', (e) => team.push(e)).ready]);
        await waitFor(() => bo.state === 'connected', 5000, 'connected');

        proxy.refuse = true;
        proxy.dropAll();
        await waitFor(() => states.some((s) => s.state === 'reconnecting'), 5000, 'reconnecting');
        expect((await request(`${gw.url}/v1/rooms/${id}/members/bo`, { method: 'DELETE', token: token('ann') })).status).to.equal(204);
        proxy.refuse = false;

        await waitFor(() => ended.length === 1, 8000, 'the subscription ended');
        expect(ended[0]).to.deep.equal({ channel: `room:${id}`, reason: 'no longer a member' });
        await request(`${gw.url}/v1/channels/team:1/events`, { token: token('ann'), body: { event: 'note.added', data: 1 } });
        await waitFor(() => team.length === 1 && bo.state === 'connected', 5000, 'the other channel goes on');
      } finally {
        await proxy.close();
      }
    });
  }

  for (const transport of ['websocket', 'sse', 'poll'] as const) {
    it(`${transport}: an old removal in a replay does not end the subscription of a member invited again`, async () => {
      const created = await request(`${gw.url}/v1/rooms`, { token: token('ann'), body: { name: 'Ward 9' } });
      const id = created.body.id as string;
      const members = `${gw.url}/v1/rooms/${id}/members`;
      expect((await request(members, { token: token('ann'), body: { user_id: 'bo' } })).status).to.equal(201);
      expect((await request(`${members}/bo`, { method: 'DELETE', token: token('ann') })).status).to.equal(204);
      expect((await request(members, { token: token('ann'), body: { user_id: 'bo' } })).status).to.equal(201);

      const { client: bo, errors } = user('bo', transport);
      const events: EventFrame[] = [];
      const ended: Error[] = [];
      const sub = bo.subscribe(`room:${id}`, (e) => events.push(e), { since: '0-0', onError: (e) => ended.push(e) });
      await sub.ready;
      await waitFor(() => events.some((e) => e.event === 'member.removed'), 5000, 'the replayed removal');
      const { client: ann } = user('ann', 'websocket');
      await ann.publish(`room:${id}`, 'note.added', { text: 'welcome back' });
      await waitFor(() => events.some((e) => e.event === 'note.added'), 5000, 'a live event after the replay');
      expect(ended).to.deep.equal([]);
      expect(errors).to.deep.equal([]);
    });
  }

  it('websocket: this user\'s member.removed ends the subscription even when no unsubscribed frame comes', async () => {
    class NoUnsubscribed extends WebSocket {
      constructor(url: string) {
        super(url);
        const emit = this.emit.bind(this);
        this.emit = ((name: string, ...args: unknown[]) => {
          if (name === 'message' && String(args[0]).includes('"unsubscribed"')) return true;
          return emit(name, ...args);
        }) as typeof this.emit;
      }
    }
    const created = await request(`${gw.url}/v1/rooms`, { token: token('ann'), body: { name: 'Ward 10' } });
    const id = created.body.id as string;
    expect((await request(`${gw.url}/v1/rooms/${id}/members`, { token: token('ann'), body: { user_id: 'bo' } })).status).to.equal(201);
    const { client: bo } = watch({ url: gw.url, token: token('bo'), transports: ['websocket'], WebSocket: NoUnsubscribed });
    const ended: Error[] = [];
    await bo.subscribe(`room:${id}`, () => undefined, { onError: (e) => ended.push(e) }).ready;
    expect((await request(`${gw.url}/v1/rooms/${id}/members/bo`, { method: 'DELETE', token: token('ann') })).status).to.equal(204);
    await waitFor(() => ended.length === 1, 5000, 'the subscription ended');
    expect((ended[0] as StreamgateClientError).code).to.equal('unsubscribed');
  });

  it('websocket: deleting the room ends every member\'s subscription with its reason', async () => {
    const created = await request(`${gw.url}/v1/rooms`, { token: token('ann'), body: { name: 'Ward 8' } });
    const room = `room:${created.body.id as string}`;
    const { client: ann } = user('ann', 'websocket');
    const ended: UnsubscribedInfo[] = [];
    ann.on('unsubscribed', (u) => ended.push(u));
    await ann.subscribe(room, () => undefined).ready;
    expect((await request(`${gw.url}/v1/rooms/${created.body.id}`, { method: 'DELETE', token: token('ann') })).status).to.equal(204);
    await waitFor(() => ended.length === 1, 5000, 'ended');
    expect(ended[0]).to.deep.equal({ channel: room, reason: 'the room was deleted' });
    expect(ann.state).to.equal('connected');
  });

  it('refuses bad input with bad_request before sending, and presence-off channels with forbidden', async () => {
    const { client: ann } = user('ann', 'websocket');
    const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: StreamgateClientError) => e.code);
    expect(await code(ann.setPresence({}))).to.equal('bad_request');
    expect(await code(ann.setPresence({ status: 'asleep' as 'away' }))).to.equal('bad_request');
    expect(await code(ann.presence([]))).to.equal('bad_request');
    expect(await code(ann.markRead('team:1'))).to.equal('bad_request');
    expect(await code(ann.typing('bad channel!', true))).to.equal('bad_request');
    const ok = ann.subscribe('team:1', () => undefined);
    await ok.ready;
    // `user:` has no presence: the same refusal over the frame and the route.
    expect(await code(ann.members('user:ann'))).to.equal('forbidden');
    const sse = user('bo', 'sse');
    await sse.client.subscribe('team:1', () => undefined).ready;
    expect(await code(sse.client.members('user:bo'))).to.equal('forbidden');
  });
});
