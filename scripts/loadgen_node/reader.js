'use strict';
// Opens N plain TCP connections to HOST:PORT and reads everything sent on them, as the load
// generator's receivers do (libuv, data discarded), until the other end closes them all.
// Used by bench_floor.py so its send() floor is measured against receivers like the real ones.
// Usage: node reader.js PORT COUNT [HOST]; prints "ready" once every connection is open.

const net = require('net');

const port = Number(process.argv[2]);
const count = Number(process.argv[3]);
const host = process.argv[4] || '127.0.0.1';
let open = 0;
let live = 0;

for (let i = 0; i < count; i++) {
  const sock = net.connect({ port, host, noDelay: true }, () => {
    live++;
    if (++open === count) process.stdout.write('ready\n');
  });
  sock.on('data', () => {});
  sock.on('error', () => {});
  sock.on('close', () => {
    if (--live === 0 && open === count) process.exit(0);
  });
}
