/**
 * Fan-out frames are built once as whole WebSocket frames and written to each socket
 * as they are (lib/gateway/shared-frame.ts): every length encoding of RFC 6455 §5.2
 * (7-bit, 16-bit, 64-bit) must reach a real `ws` client intact, in order, and mixed
 * with the session's own frames (replies, pings).
 */
import { expect } from 'chai';
import { SharedFrame } from '../../lib/gateway/shared-frame.js';
import { connect } from '../support/ws-client.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';

describe('WebSocket shared frames', function () {
  let g: TestGateway;

  before(async () => {
    g = await startGateway({ override: { limits: { max_message_bytes: 300_000 } } });
  });
  after(async () => {
    await g.close();
  });

  it('encodes the 7-bit, 16-bit and 64-bit payload lengths', () => {
    for (const n of [0, 1, 125, 126, 127, 65535, 65536, 70000]) {
      const f = new SharedFrame('x'.repeat(n)).wsFrame;
      expect(f[0]).to.equal(0x81);
      if (n < 126) {
        expect(f[1]).to.equal(n);
        expect(f.length).to.equal(2 + n);
      } else if (n < 65536) {
        expect(f[1]).to.equal(126);
        expect(f.readUInt16BE(2)).to.equal(n);
        expect(f.length).to.equal(4 + n);
      } else {
        expect(f[1]).to.equal(127);
        expect(Number(f.readBigUInt64BE(2))).to.equal(n);
        expect(f.length).to.equal(10 + n);
      }
    }
  });

  it('events of every frame size reach every subscriber intact and in order', async () => {
    const token = g.token({ sub: 'ann', tid: 'acme', channels: ['team:*'], publish: ['team:*'] });
    const key = await g.serverKey('acme');
    const clients = await Promise.all([0, 1, 2].map(() => connect(g.url, token)));
    for (const c of clients) expect((await c.request({ type: 'subscribe', id: 's', channel: 'team:frames' })).type).to.equal('reply');
    // Data sizes around the 125/126 and 65535/65536 boundaries of the whole frame text.
    const sizes = [1, 40, 60, 80, 100, 65_300, 65_400, 65_500, 65_600, 200_000];
    for (const [i, size] of sizes.entries()) {
      const res = await request(`${g.url}/v1/channels/team:frames/events`, { token: key, body: { event: 'sized', data: { i, s: 'é'.repeat(Math.floor(size / 2)) } } });
      expect(res.status, JSON.stringify(res.body)).to.equal(201);
      // A session's own frame between fan-out frames: a reply goes through ws's writer.
      if (i % 3 === 0) await clients[0]!.request({ type: 'subscribe', id: `again-${i}`, channel: 'team:frames' });
    }
    for (const c of clients) {
      await c.next((f) => f.type === 'event' && f.data.i === sizes.length - 1, 10_000);
      const got = c.events('team:frames').map((f) => f.data);
      expect(got.map((d) => d.i)).to.deep.equal(sizes.map((_, i) => i));
      for (const d of got) expect(d.s).to.equal('é'.repeat(Math.floor(sizes[d.i]! / 2)));
      await c.close();
    }
  });
});
