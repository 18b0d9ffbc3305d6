/**
 * The publish fast lane of `gateway.listen` (lib/http/fast-lane.ts) must answer
 * exactly as the Express route does when the router is mounted in a host app: the same
 * requests go down both ways and the answers are compared.
 */
import { expect } from 'chai';
import express from 'express';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import jwt from 'jsonwebtoken';
import { startGateway, TEST_SECRET, type TestGateway } from '../support/gateway.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** One raw HTTP request: exact headers, optional chunked body (no Content-Length). */
function send(url: string, opts: { headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean; method?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: Record<string, string | number> = { ...opts.headers };
    if (opts.body !== undefined && !opts.chunked) headers['content-length'] = Buffer.byteLength(opts.body);
    const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: opts.method ?? 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('error', reject);
    if (opts.chunked && opts.body !== undefined) {
      const buf = Buffer.from(opts.body);
      for (let i = 0; i < buf.length; i += 16 * 1024) req.write(buf.subarray(i, i + 16 * 1024));
    }
    req.end(opts.chunked ? undefined : opts.body);
  });
}

describe('HTTP fast lane (publish, poll) and Express routes answer alike', function () {
  let g: TestGateway;
  let host: Server;
  let hostUrl: string;
  let key: string;
  let ann: string;
  let viewer: string;

  before(async () => {
    g = await startGateway();
    key = await g.serverKey('acme');
    ann = g.token({ sub: 'ann', tid: 'acme', channels: ['team:*'], publish: ['team:*'] });
    viewer = g.token({ sub: 'vic', tid: 'acme', channels: ['team:*'] });
    const app = express();
    app.use('/rt', g.gateway.router);
    host = createServer(app);
    await new Promise<void>((r) => host.listen(0, '127.0.0.1', () => r()));
    hostUrl = `http://127.0.0.1:${(host.address() as AddressInfo).port}/rt`;
  });
  after(async () => {
    await new Promise<void>((r) => host.close(() => r()));
    await g.close();
  });

  const json = { 'content-type': 'application/json' };
  const bearer = (credential: string) => ({ authorization: `Bearer ${credential}`, ...json });
  const expired = () => jwt.sign({ sub: 'ann', tid: 'acme', publish: ['team:*'], exp: Math.floor(Date.now() / 1000) - 10 }, TEST_SECRET);
  const event = (extra: object = {}) => JSON.stringify({ event: 'note', data: { n: 1 }, ...extra });

  const cases: Array<[string, () => { path?: string; headers?: Record<string, string>; body?: string; chunked?: boolean }, number, string | null]> = [
    ['a server key publish', () => ({ headers: bearer(key), body: event() }), 201, null],
    ['a user token with the publish claim', () => ({ headers: bearer(ann), body: event() }), 201, null],
    ['an idempotent repeat', () => ({ headers: bearer(key), body: event({ idempotency_key: 'same-key' }) }), 201, null],
    ['no credentials', () => ({ headers: json, body: event() }), 401, 'unauthorized'],
    ['a server key in the URL', () => ({ path: `?token=${encodeURIComponent(key)}`, headers: json, body: event() }), 401, 'unauthorized'],
    ['a wrong server key', () => ({ headers: bearer(`${key.slice(0, -4)}AAAA`), body: event() }), 401, 'unauthorized'],
    ['an expired token', () => ({ headers: bearer(expired()), body: event() }), 401, 'unauthorized'],
    ['a token signed with another secret', () => ({ headers: bearer(jwt.sign({ sub: 'x', tid: 'acme' }, 'another-secret-long-enough-to-be-accepted')), body: event() }), 401, 'unauthorized'],
    ['a user without the publish right', () => ({ headers: bearer(viewer), body: event() }), 403, 'forbidden'],
    ['a text/plain body', () => ({ headers: { authorization: `Bearer ${key}`, 'content-type': 'text/plain' }, body: event() }), 400, 'bad_request'],
    ['no body at all', () => ({ headers: bearer(key) }), 400, 'bad_request'],
    ['malformed JSON', () => ({ headers: bearer(key), body: '{"event": "x",' }), 400, 'bad_request'],
    ['an empty JSON body', () => ({ headers: bearer(key), body: '' }), 400, 'bad_request'],
    ['a JSON array', () => ({ headers: bearer(key), body: '[1,2]' }), 400, 'bad_request'],
    ['an unknown field', () => ({ headers: bearer(key), body: event({ colour: 'red' }) }), 400, 'bad_request'],
    ['a latin-1 body', () => ({ headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json; charset=latin1' }, body: event() }), 400, 'bad_request'],
    ['a body over max_message_bytes', () => ({ headers: bearer(key), body: event({ data: 'x'.repeat(70 * 1024) }) }), 413, 'too_large'],
    ['a chunked body over max_message_bytes', () => ({ headers: bearer(key), body: event({ data: 'x'.repeat(70 * 1024) }), chunked: true }), 413, 'too_large'],
    ['a chunked body within the limit', () => ({ headers: bearer(key), body: event(), chunked: true }), 201, null],
    ['a body starting with a byte order mark', () => ({ headers: bearer(key), body: `\ufeff${event()}` }), 201, null],
    ['charset=utf8 (body-parser refuses it)', () => ({ headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json; charset=utf8' }, body: event() }), 400, 'bad_request'],
    ['a repeated ?token= parameter', () => ({ path: `?token=${ann}&token=${ann}`, headers: json, body: event() }), 401, 'unauthorized'],
    ['UTF-8 JSON with a charset', () => ({ headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json; charset=UTF-8' }, body: event({ data: 'héllo ✓' }) }), 201, null],
  ];

  for (const [name, build, status, code] of cases) {
    it(`${name}: ${status}${code ? ` ${code}` : ''} both ways`, async () => {
      const c = build();
      const channelPath = `/v1/channels/team%3Alane/events${c.path ?? ''}`;
      const lane = await send(g.url + channelPath, c);
      const routed = await send(hostUrl + channelPath, c);
      for (const [way, a] of [['fast lane', lane], ['router', routed]] as const) {
        expect(a.status, `${way}: ${JSON.stringify(a.body)}`).to.equal(status);
        if (code) {
          expect(a.body.error.code, way).to.equal(code);
          expect(a.body.error.message, way).to.be.a('string').and.not.empty;
        } else {
          expect(a.body).to.have.keys('id', 'channel', 'timestamp');
          expect(a.body.channel).to.equal('team:lane');
        }
        expect(String(a.headers['content-type'])).to.match(/^application\/json; charset=utf-8/);
      }
      // Express adds an ETag to what res.json sends; the lane does not: proof the lane
      // answered. (Errors are written alike both ways; the lane takes a request by its
      // method, path and headers alone, so the 201 cases prove it takes these paths.)
      if (status === 201) {
        expect(lane.headers.etag, 'answered by the lane').to.equal(undefined);
        expect(routed.headers.etag, 'answered by Express').to.be.a('string');
      }
      if (code === 'unauthorized' || code === 'too_large') expect(lane.body.error.message).to.equal(routed.body.error.message);
    });
  }

  it('a UTF-16 body is for body-parser to decode: the lane hands it to Express', async () => {
    const body = Buffer.from(event(), 'utf16le');
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json; charset=utf-16le' };
    const lane = await send(`${g.url}/v1/channels/team%3Alane/events`, { headers, body });
    const routed = await send(`${hostUrl}/v1/channels/team%3Alane/events`, { headers, body });
    expect(lane.status).to.equal(routed.status);
    expect(lane.headers.etag === undefined).to.equal(routed.headers.etag === undefined);
  });

  it('an idempotent repeat answers the first id on both ways', async () => {
    const body = event({ idempotency_key: `k-${Date.now()}` });
    const first = await send(`${g.url}/v1/channels/team%3Alane/events`, { headers: bearer(key), body });
    const again = await send(`${hostUrl}/v1/channels/team%3Alane/events`, { headers: bearer(key), body });
    expect(first.status).to.equal(201);
    expect(again.body.id).to.equal(first.body.id);
  });

  it('the lane counts its requests in streamgate_http_requests_total', async () => {
    await send(`${g.url}/v1/channels/team%3Alane/events`, { headers: bearer(key), body: event() });
    const metrics = await send(`${g.url}/metrics`, { method: 'GET' });
    expect(metrics.body).to.match(/streamgate_http_requests_total\{method="POST",route="\/v1\/channels\/:channel\/events",status="201"\} \d+/);
  });

  it('long-polls through the lane and through the router alike, counted under /v1/poll', async () => {
    const t = g.token({ sub: 'pol', tid: 'acme', channels: ['team:*'] });
    const paths = [`/v1/poll?channels=team:lanepoll&token=${t}`, `/v1/poll?channels=team:lanepoll&token=bad`, '/v1/poll'];
    for (const path of paths) {
      const lane = await send(g.url + path, { method: 'GET' });
      const routed = await send(hostUrl + path, { method: 'GET' });
      expect(lane.status, path).to.equal(routed.status);
      if (lane.status === 200) expect(Object.keys(lane.body).sort()).to.deep.equal(Object.keys(routed.body).sort());
      else expect(lane.body.error.code).to.equal(routed.body.error.code);
    }
    const metrics = await send(`${g.url}/metrics`, { method: 'GET' });
    expect(metrics.body).to.match(/streamgate_http_requests_total\{method="GET",route="\/v1\/poll",status="200"\} \d+/);
    expect(metrics.body).to.match(/streamgate_http_requests_total\{method="GET",route="\/v1\/poll",status="401"\} \d+/);
  });

  it('leaves requests it cannot answer alike to Express: a trailing slash, a gzip body', async () => {
    const slash = await send(`${g.url}/v1/channels/team%3Alane/events/`, { headers: bearer(key), body: event() });
    expect(slash.status).to.equal(201);
    expect(slash.headers.etag, 'answered by Express').to.be.a('string');
    const { gzipSync } = await import('node:zlib');
    const gz = await send(`${g.url}/v1/channels/team%3Alane/events`, { headers: { ...bearer(key), 'content-encoding': 'gzip' }, body: gzipSync(event()) });
    expect(gz.status).to.equal(201);
  });
});
