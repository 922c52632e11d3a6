'use strict';
// A firehose WebSocket server for measuring what the receivers can absorb on their own: once a
// connection sends its first frame (the load generator's "go"), it writes pre-built message
// frames to it as fast as the socket takes them. Usage: node firehose.js [port] [host]; prints "listening on HOST:PORT".

const net = require('net');
const crypto = require('crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC11B65';
const FRAMES_PER_CHUNK = 256;

function messageFrame(i) {
  const text = `lg:999:${i}:1:${'x'.repeat(32)}`;
  const payload = Buffer.from(
    JSON.stringify({
      type: 'message',
      room: 'firehose',
      id: i,
      seq: i,
      user: 'firehose',
      text,
      ts: 1764384000000,
      client_id: `999-fh-${i}`,
    }),
  );
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x81, n]) : Buffer.from([0x81, 126, n >> 8, n & 0xff]);
  return Buffer.concat([head, payload]);
}

const chunk = Buffer.concat(Array.from({ length: FRAMES_PER_CHUNK }, (_, i) => messageFrame(i)));

function blast(sock) {
  while (!sock.destroyed && sock.write(chunk));
}

const server = net.createServer({ noDelay: true }, (sock) => {
  let head = '';
  let upgraded = false;
  let blasting = false;
  sock.on('error', () => sock.destroy());
  sock.on('data', (data) => {
    if (upgraded) {
      if (!blasting) {
        blasting = true; // the first client frame says go; later ones are ignored
        sock.on('drain', () => blast(sock));
        blast(sock);
      }
      return;
    }
    head += data.toString('latin1');
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    const key = /sec-websocket-key:\s*(\S+)/i.exec(head.slice(0, end));
    if (!key) {
      sock.destroy();
      return;
    }
    const accept = crypto.createHash('sha1').update(key[1] + GUID).digest('base64');
    sock.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    upgraded = true;
  });
});

const port = Number(process.argv[2] || 0);
const host = process.argv[3] || '127.0.0.1';
server.listen({ port, host, backlog: 4096 }, () => {
  console.log(`firehose listening on ${host}:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
