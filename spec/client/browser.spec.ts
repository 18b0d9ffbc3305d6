/**
 * The SDK in a real browser (Debian's Chromium driven by playwright-core) on the demo
 * page, against real gateways: WebSocket, the fallbacks behind breaking proxies, and
 * resuming after a gateway restart (issue 4, tests).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { DEMO_HTML } from '../../lib/client/demo-page.js';
import { request, startGateway, type TestGateway } from '../support/gateway.js';
import { startProxy, type ProxyOptions, type TestProxy } from '../support/proxy.js';
import { deleteKeysWithPrefix, testRedisUrl, uniquePrefix } from '../support/redis.js';

const CHROMIUM = '/usr/bin/chromium';
const CLAIMS = { sub: 'u1', tid: 't1', channels: ['team:*'], publish: ['team:*'] };

interface DemoState {
  ready: boolean;
  state: string | null;
  transport: string | null;
  events: Array<{ id: string; data: unknown }>;
  states: Array<{ state: string; transport: string | null }>;
  resets: string[];
}

describe('client SDK in Chromium (demo page)', function () {
  this.timeout(30_000);
  let dir: string;
  let context: BrowserContext;
  let files: ProxyOptions['files'];
  const gateways: TestGateway[] = [];
  const proxies: TestProxy[] = [];
  const prefixes: string[] = [];

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      console.warn(`    skipping the browser tests: ${CHROMIUM} is missing (apt-get install -y chromium)`);
      this.skip();
    }
    dir = mkdtempSync(join(tmpdir(), 'sg-browser-'));
    execFileSync(process.execPath, ['scripts/build-client.mjs', '--outdir', join(dir, 'bundle')], { stdio: 'pipe' });
    const bundle = readFileSync(join(dir, 'bundle', 'streamgate.js'));
    files = {
      '/demo': { type: 'text/html; charset=utf-8', body: DEMO_HTML },
      '/demo/streamgate.js': { type: 'text/javascript; charset=utf-8', body: bundle },
    };
    context = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
  });

  after(async () => {
    await context?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    for (const p of prefixes) await deleteKeysWithPrefix(p).catch(() => undefined);
  });

  afterEach(async () => {
    for (const page of context.pages()) await page.close();
    for (const p of proxies.splice(0)) await p.close();
    for (const g of gateways.splice(0)) await g.close();
  });

  async function gateway(options: Parameters<typeof startGateway>[0] = {}): Promise<TestGateway> {
    const g = await startGateway(options);
    gateways.push(g);
    return g;
  }

  /**
   * The page and the API behind one origin. The bundle is always the one just built;
   * the page is the gateway's own `/demo` when it serves one, else the SDK's HTML.
   */
  async function proxyTo(gw: TestGateway, options: Omit<ProxyOptions, 'targetPort'> = {}): Promise<TestProxy> {
    const own = await fetch(`${gw.url}/demo`).then((r) => r.ok && (r.headers.get('content-type') ?? '').includes('html'), () => false);
    const served = own ? { '/demo/streamgate.js': files!['/demo/streamgate.js']! } : files;
    const p = await startProxy({ targetPort: gw.port, files: served, ...options });
    proxies.push(p);
    return p;
  }

  async function openDemo(base: string, query: Record<string, string>): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${base}/demo?${new URLSearchParams(query)}`);
    return page;
  }

  function demo(page: Page): Promise<DemoState> {
    return page.evaluate(() => {
      const d = (window as unknown as { streamgateDemo: { client: { state: string; transport: string | null } | null } & Omit<DemoState, 'state' | 'transport'> }).streamgateDemo;
      return {
        ready: d.ready,
        state: d.client ? d.client.state : null,
        transport: d.client ? d.client.transport : null,
        events: d.events.map((e) => ({ id: e.id, data: e.data })),
        states: d.states.map((s) => ({ state: s.state, transport: s.transport })),
        resets: d.resets,
      };
    });
  }

  async function until(page: Page, pred: (d: DemoState) => boolean, timeoutMs: number, what: string): Promise<DemoState> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = await demo(page);
      if (pred(d)) return d;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(d)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function publish(gw: { url: string }, token: string, channel: string, data: unknown): Promise<string> {
    const r = await request(`${gw.url}/v1/channels/${channel}/events`, { token, body: { event: 'test.added', data } });
    expect(r.status).to.equal(201);
    return r.body.id as string;
  }

  it('receives events over WebSocket and publishes from the form', async () => {
    const gw = await gateway();
    const token = gw.token(CLAIMS);
    const p = await proxyTo(gw);
    const page = await openDemo(p.url, { token, channel: 'team:1' });
    await until(page, (d) => d.ready && d.state === 'connected', 10_000, 'connected');
    expect((await demo(page)).transport).to.equal('websocket');
    expect(await page.textContent('#state')).to.equal('connected');
    expect(await page.textContent('#transport')).to.equal('websocket');

    await publish(gw, token, 'team:1', 'from the server');
    await page.fill('#data', '{"text":"from the page"}');
    await page.click('#publish');
    const d = await until(page, (x) => x.events.length >= 2, 5000, 'two events');
    expect(d.events.map((e) => e.data)).to.deep.equal(['from the server', { text: 'from the page' }]);
    expect(await page.textContent('#pub-result')).to.match(/^published \d+-\d+$/);
    expect(await page.locator('#feed li').count()).to.equal(2);
  });

  it('falls back to SSE behind a proxy that refuses WebSocket upgrades', async () => {
    const gw = await gateway();
    const token = gw.token(CLAIMS);
    const p = await proxyTo(gw, { websocket: 'refuse' });
    const page = await openDemo(p.url, { token, channel: 'team:1' });
    const d = await until(page, (x) => x.ready && x.state === 'connected', 10_000, 'connected');
    expect(d.transport).to.equal('sse');
    expect(d.states.filter((s) => s.state === 'connecting').map((s) => s.transport)).to.deep.equal(['websocket', 'sse']);
    await publish(gw, token, 'team:1', 'over sse');
    const after = await until(page, (x) => x.events.length >= 1, 5000, 'the event');
    expect(after.events.map((e) => e.data)).to.deep.equal(['over sse']);
    expect(p.counts.sse).to.be.at.least(1);
  });

  it('falls back to long-polling behind a proxy that buffers SSE, and remembers it across reloads', async () => {
    const gw = await gateway();
    const token = gw.token(CLAIMS);
    const p = await proxyTo(gw, { websocket: 'refuse', sse: 'buffer' });
    const page = await openDemo(p.url, { token, channel: 'team:1', connect_timeout_ms: '1500' });
    const d = await until(page, (x) => x.ready && x.state === 'connected', 10_000, 'connected');
    expect(d.transport).to.equal('poll');
    expect(d.states.filter((s) => s.state === 'connecting').map((s) => s.transport)).to.deep.equal(['websocket', 'sse', 'poll']);
    await publish(gw, token, 'team:1', 'over poll');
    await until(page, (x) => x.events.length >= 1, 5000, 'the event');

    // The page session remembers: once WebSocket and SSE have failed twice in a row,
    // a reload tries long-polling first.
    await page.reload();
    await until(page, (x) => x.ready && x.transport === 'poll', 10_000, 'connected over poll after the first reload');
    await page.reload();
    const again = await until(page, (x) => x.ready && x.state === 'connected', 10_000, 'connected after the second reload');
    expect(again.transport).to.equal('poll');
    expect(again.states[0]).to.deep.equal({ state: 'connecting', transport: 'poll' });
  });

  it('goes away after the idle time with no mouse or keyboard, and online again on a mouse move', async () => {
    const gw = await gateway();
    const token = gw.token({ ...CLAIMS, sub: 'u9' });
    const p = await proxyTo(gw);
    // The demo page without a token: only the bundle, for a client of the test's own.
    const page = await openDemo(p.url, {});
    await page.waitForFunction(() => typeof (window as unknown as { Streamgate?: unknown }).Streamgate === 'object');
    await page.evaluate((t) => {
      const sg = (window as unknown as { Streamgate: typeof import('../../lib/client/index.js') }).Streamgate;
      const c = sg.connect({ url: location.origin, token: t, idle: { awayAfterMs: 1000 } });
      c.subscribe('team:1', () => undefined);
    }, token);
    const status = async () => (await request(`${gw.url}/v1/presence?users=u9`, { token })).body.users[0].status as string;
    const waitStatus = async (want: string) => {
      const deadline = Date.now() + 5000;
      while ((await status()) !== want) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${want}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await waitStatus('away');
    await page.mouse.move(40, 40);
    await page.mouse.move(80, 60);
    await waitStatus('online');
  });

  it('reconnects after the gateway restarts and receives what it missed, once each', async function () {
    const redisUrl = testRedisUrl();
    const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
    redis.on('error', () => undefined);
    const up = await redis.connect().then(() => true, () => false);
    redis.disconnect();
    if (!up) {
      console.warn(`    skipping: no Redis at ${redisUrl}; events would not survive the restart`);
      this.skip();
    }

    const keyPrefix = uniquePrefix();
    prefixes.push(keyPrefix);
    const gw1 = await startGateway({ redisUrl, keyPrefix });
    const token = gw1.token(CLAIMS);
    const p = await proxyTo(gw1);
    const page = await openDemo(p.url, { token, channel: 'team:1', backoff_ms: '200' });
    await until(page, (x) => x.ready && x.state === 'connected', 10_000, 'connected');
    await publish(gw1, token, 'team:1', 'before');
    await until(page, (x) => x.events.length === 1, 5000, 'the first event');

    await gw1.close();
    await until(page, (x) => x.states.some((s) => s.state === 'reconnecting'), 5000, 'reconnecting');
    const other = await gateway({ redisUrl, keyPrefix });
    const missed = [await publish(other, token, 'team:1', 'missed-1'), await publish(other, token, 'team:1', 'missed-2')];
    const restarted = await gateway({ redisUrl, keyPrefix });
    await restarted.gateway.listen(gw1.port, '127.0.0.1');

    await until(page, (x) => x.state === 'connected' && x.events.length >= 3, 15_000, 'the missed events');
    await publish(restarted, token, 'team:1', 'live');
    await until(page, (x) => x.events.length >= 4, 5000, 'the live event');
    await new Promise((r) => setTimeout(r, 300));
    const final = await demo(page);
    expect(final.events.map((e) => e.data)).to.deep.equal(['before', 'missed-1', 'missed-2', 'live']);
    expect(final.events.slice(1, 3).map((e) => e.id)).to.deep.equal(missed);
    expect(final.resets).to.deep.equal([]);
  });
});
