import { expect } from 'chai';
import { Cursor } from '../../lib/gateway/cursor.js';

describe('cursor', () => {
  it('holds 100 channels in at most 4 KiB, without spelling out their names', () => {
    const c = new Cursor();
    const now = Date.now();
    for (let i = 0; i < 100; i++) c.set(`room:very-long-channel-name-number-${i}-of-a-big-hospital-ward`, `${now + i * 1000}-${i * 37}`);
    const text = c.encode();
    expect(text.length).to.be.at.most(4096);
    expect(text).to.match(/^[A-Za-z0-9_-]+$/);
    expect(Buffer.from(text, 'base64url').toString('latin1')).not.to.include('room:');
    const back = Cursor.decode(text);
    for (let i = 0; i < 100; i++) expect(back.get(`room:very-long-channel-name-number-${i}-of-a-big-hospital-ward`)).to.equal(`${now + i * 1000}-${i * 37}`);
    expect(back.get('room:unknown')).to.equal(undefined);
  });

  it('keeps only the channels of the current set', () => {
    const c = new Cursor();
    c.set('a:1', '1-0');
    c.set('b:1', '2-0');
    c.retain(['b:1']);
    const back = Cursor.decode(c.encode());
    expect(back.get('a:1')).to.equal(undefined);
    expect(back.get('b:1')).to.equal('2-0');
  });

  it('refuses what is not a cursor with bad_request', () => {
    for (const junk of ['!!', 'AAAA', 'Ag', Buffer.from([1, 1, 2, 3]).toString('base64url')]) {
      expect(() => Cursor.decode(junk), junk).to.throw().with.property('code', 'bad_request');
    }
  });
});
