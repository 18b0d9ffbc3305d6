/**
 * Benchmark target `streamgate-ws`: the `streamgate` target (same nodes, same Redis,
 * same clients: both halves come from ./streamgate.mjs) except for the publisher, which
 * publishes from WebSocket client connections instead of the HTTP API, as an app
 * whose users publish does. It opens PUBLISH_CONNECTIONS connections to node A with a
 * user token carrying the `publish` claim (`publish: ['bench:*']`) and sends
 * `{"type":"publish","id","channel","event","data"}` frames; each publish resolves
 * with the `event_id` of the `reply` carrying its id, and rejects on an `error`
 * (PROTOCOL §4). The per-connection frame rate limit is raised in the bench config
 * (`messages_per_second: 100000`), so the pacing is the load generator's alone.
 *
 * Idle, resume, SSE and long-poll would measure nothing the `streamgate` column does not
 * (the publisher plays no part there, or publishes before the measurement): n/a.
 */
import { client as streamgateClient, server as streamgateServer } from './streamgate.mjs';

export const name = 'streamgate-ws';
export const supports = { idle: false, resume: false, sse: false, poll: false };

/**
 * WebSocket connections the publisher spreads its publishes over (round robin): a few,
 * so one connection's in-order processing on the node does not serialise them all,
 * as the HTTP publisher's keep-alive sockets do not.
 */
const PUBLISH_CONNECTIONS = 4;

// ---------------------------------------------------------------- server half

export const server = {
  /** As streamgate's, with a publisher spec for WebSocket publishing to node A. */
  async start(opts) {
    const h = await streamgateServer.start(opts);
    return {
      ...h,
      name,
      /** `auth` is ignored: a server key cannot open a WebSocket, so always a user token. */
      publisherSpec() {
        const { url, token } = h.publisherSpec({ auth: 'token' });
        return { url, token, wsUrl: `${url.replace(/^http/, 'ws')}/v1/ws`, connections: PUBLISH_CONNECTIONS };
      },
    };
  },
};

// ---------------------------------------------------------------- client half

export const client = {
  connect(spec, handlers) {
    return streamgateClient.connect(spec, handlers);
  },

  /**
   * Resolves (once every connection got its `welcome`) to { publish(channel, data) →
   * event id, close() }. `maxSockets` (the load generator's publish concurrency) bounds
   * the connection count too, so a concurrency of 1 keeps publishes in one order.
   */
  async publisher(spec, { maxSockets = 16 } = {}) {
    const count = Math.max(1, Math.min(spec.connections ?? PUBLISH_CONNECTIONS, maxSockets));
    const opened = await Promise.allSettled(Array.from({ length: count }, () => streamgateClient.connect({ wsUrl: spec.wsUrl, token: spec.token }, { onEvent: () => undefined })));
    const conns = opened.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    const failed = opened.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.allSettled(conns.map((c) => c.close()));
      throw new Error(`publisher connection: ${failed.reason?.message ?? failed.reason}`);
    }
    let next = 0;
    return {
      async publish(channel, data) {
        const conn = conns[next++ % conns.length];
        const reply = await conn.request('publish', { channel, event: 'bench', data });
        if (typeof reply.event_id !== 'string') throw new Error(`publish reply without event_id: ${JSON.stringify(reply).slice(0, 200)}`);
        return reply.event_id;
      },
      close() {
        return Promise.allSettled(conns.map((c) => c.close()));
      },
    };
  },
};
