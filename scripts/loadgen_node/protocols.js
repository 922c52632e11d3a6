'use strict';
// The three wire dialects the load generator speaks, behind one small interface:
//   greet(conn)            after the WebSocket handshake
//   isDelivery(b, ps, pe)  is this text payload a fan-out message? (byte compares only)
//   onControl(conn, text)  any other text frame (rare: welcome, joined, acks, errors, pings)
//   sendFrame(room, text, clientId) -> the text of one send request

// `{"type":"message"` : bytes 2 ('t'), 9 ('m') and 10 ('e').
function jsonMessage(b, ps, pe) {
  return pe - ps > 16 && b[ps + 9] === 0x6d && b[ps + 10] === 0x65 && b[ps + 2] === 0x74;
}

function hibiki(W) {
  return {
    greet(conn) {
      conn.sendText(JSON.stringify({ type: 'hello', token: conn.spec.token }));
    },
    isDelivery: jsonMessage,
    onControl(conn, text) {
      const event = JSON.parse(text);
      if (event.type === 'welcome') conn.ready();
      else if (event.type === 'error') {
        W.errorFrames++;
        if (W.errors.length < 10) W.errors.push(`error frame: ${event.code} ${event.message}`);
        if (conn.state === 'hello') conn.fail(`hello refused: ${event.code}`);
      }
    },
    sendFrame(room, text, clientId) {
      return JSON.stringify({ type: 'send', room, text, client_id: clientId });
    },
  };
}

function websocketsPeer(W) {
  return {
    greet(conn) {
      conn.joinsLeft = conn.spec.rooms.length;
      for (const room of conn.spec.rooms) conn.sendText(JSON.stringify({ type: 'join', room }));
    },
    isDelivery: jsonMessage,
    onControl(conn, text) {
      const event = JSON.parse(text);
      if (event.type === 'joined') {
        if (--conn.joinsLeft === 0) conn.ready();
      }
      else if (event.type === 'error') W.errorFrames++;
    },
    sendFrame(room, text) {
      return JSON.stringify({ type: 'send', room, text });
    },
  };
}

// Socket.IO v5 over Engine.IO v4, WebSocket transport only: `0{..}` open, `40` connect,
// `42[...]` event, `43<id>[...]` ack, `2`/`3` ping/pong.
function socketio(W) {
  return {
    greet() {},
    isDelivery(b, ps, pe) {
      return pe - ps > 12 && b[ps] === 0x34 && b[ps + 1] === 0x32 && b[ps + 4] === 0x6d;
    },
    onControl(conn, text) {
      if (text === '2') conn.sendText('3');
      else if (text[0] === '0') conn.sendText('40');
      else if (text.startsWith('40')) {
        conn.joinsLeft = conn.spec.rooms.length;
        conn.spec.rooms.forEach((room, i) => conn.sendText(`42${i}${JSON.stringify(['join', room])}`));
      } else if (text.startsWith('43')) {
        if (--conn.joinsLeft === 0) conn.ready();
      }
      else if (text.startsWith('44') || text === '1') {
        W.errorFrames++;
        if (conn.state === 'hello') conn.fail(`socket.io refused: ${text.slice(0, 80)}`);
      }
    },
    sendFrame(room, text) {
      return `42${JSON.stringify(['send', { room, text }])}`;
    },
  };
}

// The firehose (scripts/loadgen_node/firehose.js) streams message frames from the handshake on.
function firehose() {
  return {
    greet(conn) {
      conn.ready();
    },
    isDelivery: jsonMessage,
    onControl() {},
    sendFrame(room, text) {
      return JSON.stringify({ type: 'send', room, text });
    },
  };
}

const DIALECTS = { hibiki, websockets: websocketsPeer, socketio, firehose };

function byName(name, W) {
  const make = DIALECTS[name];
  if (!make) throw new Error(`unknown protocol ${name}`);
  return make(W);
}

module.exports = { byName };
