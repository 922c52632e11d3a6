'use strict';
// Benchmark peer: Node Socket.IO (v4, Engine.IO v4) doing the same room fan-out as
// scripts/bench_peers/sio_server.py, in the same event dialect (the `socketio` dialect of
// scripts/loadgen_node/protocols.js): event `join` (room name, acknowledged with "ok"), event
// `send` {room, text} => event `message` {type, room, id, seq, user, text, ts} to every member.
// Nothing is stored or authenticated.
//
// With --redis URL, @socket.io/redis-adapter carries each emit to the other processes started
// with the same URL (several processes serve one room); without it, one process on its own.
//
//   node server.js --port 8767 [--host 127.0.0.1] [--redis redis://127.0.0.1:6379/0]
//
// Prints `listening on HOST:PORT` once it accepts connections (--port 0: an ephemeral port).

const http = require('http');
const { Server } = require('socket.io');

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 8767, redis: null };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--host') args.host = value;
    else if (flag === '--port') args.port = Number(value);
    else if (flag === '--redis') args.redis = value;
    else throw new Error(`unknown argument ${flag} (--host, --port, --redis)`);
    i++;
  }
  return args;
}

// The Redis adapter needs two connections: one to publish, one held in subscribe mode.
async function redisAdapter(url) {
  const { createClient } = require('redis');
  const { createAdapter } = require('@socket.io/redis-adapter');
  const pub = createClient({ url });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on('error', (err) => console.error(`redis: ${err.message}`));
  }
  await Promise.all([pub.connect(), sub.connect()]);
  return createAdapter(pub, sub);
}

function serveRooms(io) {
  const seqs = new Map();
  let ids = 0;
  io.on('connection', (socket) => {
    socket.on('join', async (room, ack) => {
      await socket.join(room);
      if (typeof ack === 'function') ack('ok');
    });
    socket.on('send', (data) => {
      const room = data && data.room;
      if (!socket.rooms.has(room)) return;
      const seq = (seqs.get(room) || 0) + 1;
      seqs.set(room, seq);
      const event = {
        type: 'message',
        room,
        id: ++ids,
        seq,
        user: 'peer',
        text: data.text || '',
        ts: Date.now(),
      };
      io.to(room).emit('message', event);
    });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const httpServer = http.createServer();
  const options = { serveClient: false };
  if (args.redis) options.adapter = await redisAdapter(args.redis);
  const io = new Server(httpServer, options);
  serveRooms(io);
  httpServer.listen({ host: args.host, port: args.port, backlog: 4096 }, () => {
    const { address, port } = httpServer.address();
    const via = args.redis ? ` (redis adapter: ${args.redis})` : '';
    console.log(`node socket.io listening on ${address}:${port}${via}`);
  });
  process.on('SIGTERM', () => process.exit(0));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
