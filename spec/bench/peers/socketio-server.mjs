/**
 * One Socket.IO node for the benchmark's `socketio` target (targets/socketio.mjs):
 * Socket.IO 4 on the default settings (heartbeats included), sharing Redis with its
 * peer node through @socket.io/redis-streams-adapter (ioredis client).
 *
 * - a client joins a room with a `join` event (`room` name), acked with `{ok: true}`;
 * - `POST /publish {room, event, data}` emits `event` with `data` to the room (201).
 *
 * env: REDIS_URL, BENCH_STREAM (stream and pub/sub prefix, fresh per step), PORT (0).
 * Prints `peer: listening on http://127.0.0.1:<port>` on stderr once ready.
 */
import { createAdapter } from '@socket.io/redis-streams-adapter';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { exitWithParent, publishServer, servePeer } from './common.mjs';

exitWithParent();
const stream = process.env.BENCH_STREAM || 'socket.io';
const redis = new Redis(process.env.REDIS_URL);
redis.on('error', (err) => console.error(`redis: ${err.message}`));

const server = publishServer((m) => io.to(m.room).emit(m.event, m.data));

const io = new Server(server, { adapter: createAdapter(redis, { streamName: stream, channelPrefix: stream }) });
io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return typeof ack === 'function' && ack({ ok: false });
    socket.join(room);
    if (typeof ack === 'function') ack({ ok: true });
  });
});

servePeer(server, (done) =>
  io.close(() => {
    redis.disconnect();
    done();
  }),
);
