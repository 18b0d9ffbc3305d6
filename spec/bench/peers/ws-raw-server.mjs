/**
 * The benchmark's `ws-raw` target (targets/ws-raw.mjs): one process, plain `ws`, an
 * in-memory room map; the upper bound for a Node process with no durability and no
 * second node.
 *
 * - client → `{"type":"subscribe","id":…,"channel":…}`, server → `{"type":"reply","id":…}`;
 * - `POST /publish {room, event, data}` encodes `{"type":"event",channel,event,data}`
 *   once and sends the same buffer to every socket of the room (201);
 * - heartbeat: a WebSocket ping every 25 s, a socket that did not pong is dropped.
 *
 * env: PORT (0). Prints `peer: listening on http://127.0.0.1:<port>` on stderr once ready.
 */
import { WebSocketServer } from 'ws';
import { exitWithParent, publishServer, servePeer } from './common.mjs';

exitWithParent();
const HEARTBEAT_MS = 25_000;
/** room → Set of sockets */
const rooms = new Map();

const server = publishServer((m) => {
  const members = rooms.get(m.room);
  if (!members) return;
  const frame = Buffer.from(JSON.stringify({ type: 'event', channel: m.room, event: m.event, data: m.data }));
  for (const ws of members) ws.send(frame, { binary: false });
});

const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.joined = [];
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('message', (buf) => {
    let f;
    try {
      f = JSON.parse(buf.toString());
    } catch {
      return;
    }
    if (f?.type !== 'subscribe' || typeof f.channel !== 'string') return;
    let set = rooms.get(f.channel);
    if (!set) rooms.set(f.channel, (set = new Set()));
    if (!set.has(ws)) {
      set.add(ws);
      ws.joined.push(f.channel);
    }
    ws.send(JSON.stringify({ type: 'reply', id: f.id }));
  });
  ws.on('close', () => {
    for (const r of ws.joined) {
      const set = rooms.get(r);
      if (!set) continue;
      set.delete(ws);
      if (set.size === 0) rooms.delete(r);
    }
  });
});
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, HEARTBEAT_MS);

servePeer(server, (done) => {
  clearInterval(heartbeat);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close(done);
});
