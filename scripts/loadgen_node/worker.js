'use strict';
// One load-generator worker: raw TCP sockets, a minimal WebSocket client, no npm packages.
//
// Driven by the Python orchestrator (scripts/_loadworkers.py) with one JSON command per stdin
// line; every command gets exactly one JSON reply line on stdout. Receivers only count message
// frames (a few byte compares per frame, no JSON parsing) and parse the embedded send timestamp
// of one frame in `sampleEvery`. Senders parse the marker of every message they receive, to
// recognise the echo of their own messages (closed loop) and measure the round trip; a sender
// whose spec says `receives` also counts and samples every message it gets, as a receiver does.
//
// Commands: init, connect, start, stop, stats, report, reset, go, quit. EOF on stdin = quit.

const net = require('net');
const crypto = require('crypto');
const proto = require('./protocols');
const { Histogram, nowUs } = require('./histogram');

const READ_BUF = Buffer.allocUnsafe(256 * 1024); // one read buffer shared by every socket
const MARKER = Buffer.from('"lg:');
const HANDSHAKE_TIMEOUT_MS = 60000;

const W = {
  cfg: null, // {protocol, host, port, targets: [{host, port}], path, sampleEvery, textSize}
  protocol: null,
  conns: [],
  senders: [],
  deliveries: 0,
  senderDeliveries: 0,
  errorFrames: 0,
  closed: 0,
  errors: [],
  latency: new Histogram(),
  rtt: new Histogram(),
  // Per target (the server process a receiver is connected to): deliveries and latency.
  targetDeliveries: [],
  targetLatency: [],
  run: null, // current sending phase
  quitting: false,
};

function noteError(text) {
  if (W.errors.length < 10) W.errors.push(text);
}

class Conn {
  constructor(spec, index) {
    this.spec = spec; // {room, token, src, target, sender?: {sid, rooms}}
    this.index = index;
    this.target = spec.target || 0;
    const t = W.cfg.targets ? W.cfg.targets[this.target] : W.cfg;
    this.host = t.host;
    this.port = t.port;
    this.sock = null;
    this.pend = null;
    this.state = 'http'; // http -> hello -> ready -> closed
    this.sampleIn = 1 + (index % W.cfg.sampleEvery);
    this.mask = crypto.randomBytes(4);
    this.onReady = null;
    this.sender = null;
    this.joinsLeft = 0;
  }

  open(onReady) {
    this.onReady = onReady;
    const opts = {
      host: this.host,
      port: this.port,
      noDelay: true,
      onread: { buffer: READ_BUF, callback: (n) => this.onRead(n) },
    };
    if (this.spec.src) opts.localAddress = this.spec.src;
    const sock = net.connect(opts);
    this.sock = sock;
    this.timer = setTimeout(() => this.fail('handshake timeout'), HANDSHAKE_TIMEOUT_MS);
    sock.on('connect', () => {
      const key = crypto.randomBytes(16).toString('base64');
      sock.write(
        `GET ${W.cfg.path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
          'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    sock.on('error', (err) => this.lost(`socket error: ${err.code || err.message}`));
    sock.on('close', () => this.lost('closed by server'));
  }

  ready() {
    if (this.state !== 'hello') return;
    this.state = 'ready';
    clearTimeout(this.timer);
    const cb = this.onReady;
    this.onReady = null;
    if (cb) cb(null);
  }

  fail(why) {
    clearTimeout(this.timer);
    if (this.state !== 'closed') {
      this.state = 'closed';
      if (this.sock) this.sock.destroy();
    }
    const cb = this.onReady;
    this.onReady = null;
    if (cb) cb(why);
  }

  lost(why) {
    if (this.state === 'closed') return;
    if (this.onReady) {
      this.fail(why);
      return;
    }
    this.state = 'closed';
    if (!W.quitting) {
      W.closed++;
      noteError(`connection ${this.index}: ${why}`);
    }
  }

  onRead(nread) {
    let s = 0;
    if (this.state === 'http') {
      const b = this.pend === null ? READ_BUF : Buffer.concat([this.pend, READ_BUF.subarray(0, nread)]);
      const end = this.pend === null ? nread : b.length;
      this.pend = null;
      const idx = b.subarray(0, end).indexOf('\r\n\r\n');
      if (idx < 0) {
        this.pend = Buffer.from(b.subarray(0, end));
        return;
      }
      const head = b.toString('latin1', 0, idx);
      if (!head.startsWith('HTTP/1.1 101')) {
        this.fail(`handshake refused: ${head.split('\r\n')[0]}`);
        return;
      }
      this.state = 'hello';
      W.protocol.greet(this);
      if (b !== READ_BUF) {
        this.parse(b, idx + 4, end);
        return;
      }
      s = idx + 4;
    } else if (this.pend !== null) {
      // Complete the one frame split across reads with as few bytes of this read as it needs,
      // rather than copying the whole read behind it.
      let p = this.pend;
      this.pend = null;
      for (;;) {
        const fe = frameEnd(p, 0, p.length);
        if (fe >= 0 && fe <= p.length) break;
        const want = fe < 0 ? 14 : fe - p.length;
        const take = Math.min(want, nread - s);
        if (take <= 0) {
          this.pend = p;
          return;
        }
        p = Buffer.concat([p, READ_BUF.subarray(s, s + take)]);
        s += take;
      }
      if (this.parse(p, 0, p.length) < 0) return;
      if (this.pend !== null) {
        // A 14-byte header grab can overshoot into the next frame: keep parsing from there.
        const rest = this.pend;
        this.pend = null;
        const q = Buffer.concat([rest, READ_BUF.subarray(s, nread)]);
        this.parse(q, 0, q.length);
        return;
      }
    }
    this.parse(READ_BUF, s, nread);
  }

  // Handle every complete frame in b[s:end]; keep a copy of an incomplete tail in `pend`.
  // Returns -1 if the connection closed.
  parse(b, s, end) {
    const isDelivery = W.protocol.isDelivery;
    while (end - s >= 2) {
      const b0 = b[s];
      let len = b[s + 1] & 0x7f;
      let h = 2;
      if (len === 126) {
        if (end - s < 4) break;
        len = (b[s + 2] << 8) | b[s + 3];
        h = 4;
      } else if (len === 127) {
        if (end - s < 10) break;
        len = b.readUInt32BE(s + 2) * 4294967296 + b.readUInt32BE(s + 6);
        h = 10;
      }
      const ps = s + h;
      const pe = ps + len;
      if (pe > end) break;
      const op = b0 & 0x0f;
      if (op === 1 || op === 2) {
        if (isDelivery(b, ps, pe)) {
          if (this.sender !== null) {
            W.senderDeliveries++;
            this.sender.onMessage(b, ps, pe);
          }
          // A receiving sender (the chatty-rooms workload) also counts what it gets, its own
          // echo included: every frame the server sends it is a delivery.
          if (this.sender === null || this.spec.receives) {
            W.deliveries++;
            W.targetDeliveries[this.target]++;
            if (--this.sampleIn === 0) {
              this.sampleIn = W.cfg.sampleEvery;
              const t = sentAt(b, ps, pe);
              if (t > 0) {
                const us = nowUs() - t;
                W.latency.record(us);
                W.targetLatency[this.target].record(us);
              }
            }
          }
        } else {
          W.protocol.onControl(this, b.toString('utf8', ps, pe));
        }
      } else if (op === 9) {
        this.sendFrame(0xa, Buffer.from(b.subarray(ps, pe)));
      } else if (op === 8) {
        const code = len >= 2 ? (b[ps] << 8) | b[ps + 1] : 1005;
        this.lost(`close frame ${code}`);
        this.sock.destroy();
        return -1;
      }
      s = pe;
    }
    if (s < end) this.pend = Buffer.from(b.subarray(s, end));
    return s;
  }

  sendText(text) {
    this.sendFrame(0x1, Buffer.from(text, 'utf8'));
  }

  sendFrame(opcode, payload) {
    if (this.state === 'closed') return;
    const n = payload.length;
    const h = n < 126 ? 2 : n < 65536 ? 4 : 10;
    const frame = Buffer.allocUnsafe(h + 4 + n);
    frame[0] = 0x80 | opcode;
    if (h === 2) frame[1] = 0x80 | n;
    else if (h === 4) {
      frame[1] = 0x80 | 126;
      frame.writeUInt16BE(n, 2);
    } else {
      frame[1] = 0x80 | 127;
      frame.writeUInt32BE(Math.floor(n / 4294967296), 2);
      frame.writeUInt32BE(n >>> 0, 6);
    }
    const m = this.mask;
    m.copy(frame, h);
    const o = h + 4;
    for (let i = 0; i < n; i++) frame[o + i] = payload[i] ^ m[i & 3];
    this.sock.write(frame);
  }
}

// End offset of the frame starting at b[s], or -1 if its header is not complete yet.
function frameEnd(b, s, end) {
  if (end - s < 2) return -1;
  const len = b[s + 1] & 0x7f;
  if (len < 126) return s + 2 + len;
  if (len === 126) return end - s < 4 ? -1 : s + 4 + ((b[s + 2] << 8) | b[s + 3]);
  if (end - s < 10) return -1;
  return s + 10 + b.readUInt32BE(s + 2) * 4294967296 + b.readUInt32BE(s + 6);
}

// The text of a load message: "lg:<sender>:<seq>:<send time in µs>:<padding>".
function findMarker(b, ps, pe) {
  const i = b.subarray(ps, pe).indexOf(MARKER);
  return i < 0 ? -1 : ps + i + MARKER.length;
}

function readInt(b, i, pe) {
  let v = 0;
  for (; i < pe; i++) {
    const c = b[i];
    if (c < 48 || c > 57) break;
    v = v * 10 + (c - 48);
  }
  return [v, i + 1];
}

function sentAt(b, ps, pe) {
  let i = findMarker(b, ps, pe);
  if (i < 0) return -1;
  while (i < pe && b[i] !== 58) i++; // sender id
  i++;
  while (i < pe && b[i] !== 58) i++; // seq
  return readInt(b, i + 1, pe)[0];
}

class Sender {
  constructor(conn) {
    this.conn = conn;
    this.sid = conn.spec.sender.sid;
    this.rooms = conn.spec.sender.rooms;
    this.next = 0;
    this.sent = 0;
    this.echoed = 0;
    this.inflight = 0;
    this.sentPerRoom = {};
    for (const room of this.rooms) this.sentPerRoom[room] = 0;
    this.timer = null;
    this.slot = 0; // its index among this worker's senders (for the staggered open loop)
    this.pad = 'x'.repeat(Math.max(0, W.cfg.textSize - 32));
  }

  canSend() {
    const run = W.run;
    return run !== null && !run.stopped && (run.limit === null || this.sent < run.limit);
  }

  sendOne(now) {
    const room = this.rooms[this.next++ % this.rooms.length];
    const seq = this.sent++;
    this.sentPerRoom[room]++;
    this.inflight++;
    const text = `lg:${this.sid}:${seq}:${Math.round(now)}:${this.pad}`;
    this.conn.sendText(W.protocol.sendFrame(room, text, `${this.sid}-${W.cfg.runId}-${seq}`));
  }

  start() {
    const run = W.run;
    if (run.mode === 'closed') {
      const now = nowUs();
      this.conn.sock.cork();
      for (let i = 0; i < run.window && this.canSend(); i++) this.sendOne(now);
      this.conn.sock.uncork();
    } else {
      // Staggered: sender i of n starts i/n of its period late, so n senders at a low rate
      // send evenly spaced in total instead of all at once each period.
      this.t0 = nowUs() + (run.stagger ? (this.slot * 1e6) / (W.senders.length * run.rate) : 0);
      this.due = 0;
      if (!run.stagger) this.tick();
      else this.timer = setTimeout(() => this.tick(), Math.max(0, (this.t0 - nowUs()) / 1000));
    }
  }

  tick() {
    this.timer = null;
    if (!this.canSend()) return;
    const run = W.run;
    const now = nowUs();
    const owed = Math.floor(((now - this.t0) * run.rate) / 1e6) + 1 - this.due;
    if (owed > 0) {
      this.conn.sock.cork();
      for (let i = 0; i < owed && this.canSend(); i++) {
        this.due++;
        if (this.inflight >= run.maxInflight) {
          run.skipped++;
          continue;
        }
        this.sendOne(now);
      }
      this.conn.sock.uncork();
      const lag = (now - (this.t0 + ((this.due - 1) * 1e6) / run.rate)) / 1000;
      if (lag > run.maxLagMs) run.maxLagMs = lag;
    }
    const nextAt = this.t0 + (this.due * 1e6) / run.rate;
    this.timer = setTimeout(() => this.tick(), Math.max(0, (nextAt - nowUs()) / 1000));
  }

  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  onMessage(b, ps, pe) {
    let i = findMarker(b, ps, pe);
    if (i < 0) return;
    const [sid, j] = readInt(b, i, pe);
    if (sid !== this.sid) return;
    i = j;
    while (i < pe && b[i] !== 58) i++;
    const t = readInt(b, i + 1, pe)[0];
    this.echoed++;
    this.inflight--;
    W.rtt.record(nowUs() - t);
    const run = W.run;
    if (run !== null && run.mode === 'closed' && this.canSend()) this.sendOne(nowUs());
  }
}

function connectAll(specs, concurrency, done) {
  let started = 0;
  let finished = 0;
  let ok = 0;
  const failures = [];
  if (specs.length === 0) {
    done({ ok, failed: 0, errors: failures });
    return;
  }
  const launch = () => {
    if (started >= specs.length) return;
    const conn = new Conn(specs[started], W.conns.length);
    started++;
    W.conns.push(conn);
    conn.open((err) => {
      finished++;
      if (err) {
        if (failures.length < 10) failures.push(err);
      } else {
        ok++;
        if (conn.spec.sender) {
          conn.sender = new Sender(conn);
          conn.sender.slot = W.senders.length;
          W.senders.push(conn.sender);
        }
      }
      if (finished === specs.length) done({ ok, failed: finished - ok, errors: failures });
      else launch();
    });
  };
  for (let i = 0; i < Math.min(concurrency, specs.length); i++) launch();
}

function stats(withHist) {
  let sent = 0;
  let echoed = 0;
  let inflight = 0;
  const sentPerRoom = {};
  for (const s of W.senders) {
    sent += s.sent;
    echoed += s.echoed;
    inflight += s.inflight;
    for (const room in s.sentPerRoom) {
      sentPerRoom[room] = (sentPerRoom[room] || 0) + s.sentPerRoom[room];
    }
  }
  const run = W.run;
  const out = {
    ev: 'stats',
    deliveries: W.deliveries,
    senderDeliveries: W.senderDeliveries,
    sent,
    echoed,
    inflight,
    sentPerRoom,
    errorFrames: W.errorFrames,
    closed: W.closed,
    skipped: run ? run.skipped : 0,
    maxLagMs: run ? run.maxLagMs : 0,
    open: W.conns.filter((c) => c.state === 'ready').length,
    errors: W.errors,
    targetDeliveries: W.targetDeliveries,
  };
  if (withHist) {
    out.latency = W.latency.toJSON();
    out.rtt = W.rtt.toJSON();
    out.targetLatency = W.targetLatency.map((h) => h.toJSON());
  }
  return out;
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function handle(cmd) {
  switch (cmd.cmd) {
    case 'init':
      W.cfg = cmd.config;
      W.protocol = proto.byName(W.cfg.protocol, W);
      W.targetDeliveries = (W.cfg.targets || [W.cfg]).map(() => 0);
      W.targetLatency = W.targetDeliveries.map(() => new Histogram());
      reply({ ev: 'init', pid: process.pid });
      break;
    case 'connect':
      connectAll(cmd.conns, cmd.concurrency || 200, (r) => reply({ ev: 'connected', ...r }));
      break;
    case 'start':
      W.run = {
        mode: cmd.mode,
        window: cmd.window,
        rate: cmd.rate,
        limit: cmd.messages === undefined ? null : cmd.messages,
        maxInflight: cmd.maxInflight || 100000,
        stopped: false,
        skipped: 0,
        maxLagMs: 0,
        stagger: Boolean(cmd.stagger),
      };
      for (const s of W.senders) s.start();
      reply({ ev: 'started' });
      break;
    case 'stop':
      if (W.run !== null) W.run.stopped = true;
      for (const s of W.senders) s.stop();
      reply(stats(false));
      break;
    case 'stats':
      reply(stats(false));
      break;
    case 'report':
      reply(stats(true));
      break;
    case 'reset':
      W.latency = new Histogram();
      W.rtt = new Histogram();
      W.targetLatency = W.targetLatency.map(() => new Histogram());
      reply({ ev: 'reset' });
      break;
    case 'go': // the firehose starts streaming to a connection when it sends something
      for (const c of W.conns) if (c.state === 'ready') c.sendText('go');
      reply({ ev: 'go' });
      break;
    case 'quit':
      quit();
      break;
    default:
      reply({ ev: 'error', error: `unknown command ${cmd.cmd}` });
  }
}

function quit() {
  W.quitting = true;
  for (const s of W.senders) s.stop();
  for (const c of W.conns) if (c.sock) c.sock.destroy();
  reply({ ev: 'bye' });
  process.exit(0);
}

let inbox = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  inbox += chunk;
  let nl;
  while ((nl = inbox.indexOf('\n')) >= 0) {
    const line = inbox.slice(0, nl);
    inbox = inbox.slice(nl + 1);
    if (line.trim()) handle(JSON.parse(line));
  }
});
process.stdin.on('end', quit);
