import { expect } from 'chai';
import { mayPublish, maySubscribe } from '../../lib/auth/rules.js';
import type { ServerPrincipal, UserPrincipal } from '../../lib/auth/principal.js';
import { isValidChannel, matchesAny, namespaceOf } from '../../lib/protocol/channel.js';
import { compareIds } from '../../lib/protocol/event-id.js';

const user = (over: Partial<UserPrincipal> = {}): UserPrincipal => ({
  kind: 'user', tenant: 't', userId: 'u1', roles: [], channels: [], publish: [], expiresAt: Date.now() + 60_000, ...over,
});
const server: ServerPrincipal = { kind: 'server', tenant: 't', keyId: 'k' };

describe('channel names and patterns', () => {
  it('accepts the channel alphabet, 1 to 128 characters', () => {
    for (const ok of ['team:1', 'tenant', 'goal:', 'a.b@c_d-e:f', 'x'.repeat(128)]) expect(isValidChannel(ok), ok).to.equal(true);
    for (const bad of ['', 'x'.repeat(129), 'team 1', 'team/1', 'tëam', 'a*', '{s1}', 42]) expect(isValidChannel(bad), String(bad)).to.equal(false);
  });

  it('takes the namespace before the first colon', () => {
    expect(namespaceOf('room:1:2')).to.equal('room');
    expect(namespaceOf('tenant')).to.equal('tenant');
    expect(namespaceOf('goal:')).to.equal('goal');
  });

  it('matches exact names and prefix* patterns of one or more characters', () => {
    expect(matchesAny(['goal:*'], 'goal:1')).to.equal(true);
    expect(matchesAny(['goal:*'], 'goal:a:b')).to.equal(true);
    expect(matchesAny(['goal:*'], 'goal:')).to.equal(false);
    expect(matchesAny(['goal:*'], 'goals:1')).to.equal(false);
    expect(matchesAny(['team:1'], 'team:1')).to.equal(true);
    expect(matchesAny(['team:1'], 'team:10')).to.equal(false);
    expect(matchesAny(undefined, 'team:1')).to.equal(false);
  });

  it('compares event ids as numbers, not strings', () => {
    expect(compareIds('1-9', '1-10')).to.equal(-1);
    expect(compareIds('9-0', '10-0')).to.equal(-1);
    expect(compareIds('5-5', '5-5')).to.equal(0);
  });
});

describe('channel rules (PROTOCOL §3)', () => {
  it('user:<id>: only that user subscribes; nobody publishes from a client', () => {
    expect(maySubscribe(user(), 'user:u1')).to.equal(true);
    expect(maySubscribe(user(), 'user:u2')).to.equal(false);
    expect(mayPublish(user({ publish: ['user:*'] }), 'user:u1')).to.equal(false);
  });

  it('dm:<a>:<b>: both parties subscribe and publish, nobody else', () => {
    for (const ch of ['dm:u1:u2', 'dm:u2:u1']) {
      expect(maySubscribe(user(), ch)).to.equal(true);
      expect(mayPublish(user(), ch)).to.equal(true);
    }
    expect(maySubscribe(user(), 'dm:u2:u3')).to.equal(false);
    expect(maySubscribe(user({ channels: ['dm:*'] }), 'dm:u2:u3')).to.equal(false);
    expect(maySubscribe(user(), 'dm:u1')).to.equal(false);
    expect(maySubscribe(user(), 'dm:u1:u2:u3')).to.equal(false);
  });

  it('tenant: every user subscribes; nobody publishes from a client', () => {
    expect(maySubscribe(user(), 'tenant')).to.equal(true);
    expect(mayPublish(user({ publish: ['tenant'] }), 'tenant')).to.equal(false);
  });

  it('other namespaces follow the channels and publish claims', () => {
    const u = user({ channels: ['team:*'], publish: ['team:1'] });
    expect(maySubscribe(u, 'team:9')).to.equal(true);
    expect(mayPublish(u, 'team:9')).to.equal(false);
    expect(mayPublish(u, 'team:1')).to.equal(true);
    expect(maySubscribe(u, 'goal:1')).to.equal(false);
  });

  it('server keys may do everything in their tenant', () => {
    for (const ch of ['user:u1', 'tenant', 'dm:a:b', 'anything:1']) {
      expect(maySubscribe(server, ch)).to.equal(true);
      expect(mayPublish(server, ch)).to.equal(true);
    }
  });
});
