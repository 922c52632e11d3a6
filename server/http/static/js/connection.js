// The WebSocket (docs/protocol.md): connect, hello with resume, reconnect with backoff and
// jitter, keep-alive, and dispatch of events to the handlers feature modules register with `on`.
//
// - lastSeq[room] is the highest seq received; `hello` resumes from it after any reconnect.
// - A request answered by one event (join, leave, history) is kept until answered and sent again
//   after a reconnect; so are the sends, edits and deletes not yet acknowledged (their modules
//   re-send them from a welcome handler, with the same client_id).
import { setStatus } from "./dom.js";
import { onReset, state } from "./state.js";

const BACKOFF_INITIAL_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PING_EVERY_MS = 15000;

const handlers = new Map(); // event type -> [handler]
const replies = new Map(); // ref -> {frame, callback}
const link = { ws: null, attempt: 0, reconnectTimer: 0, pingTimer: 0, pingSentAt: 0, nextRef: 1 };
const claimed = new Set(["hello", "ping", "typing"]); // ref prefixes whose errors a module handles
let closedForGood = () => {}; // set by the auth module: the token was revoked or expired

onReset(() => replies.clear());

// `handler(event)` runs for every event of `type`, in registration order. Protocol v1 may add
// event types: those nobody registered for are ignored.
export function on(type, handler) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(handler);
}

// Errors whose ref starts with `prefix` are the registering module's to show (or not).
export function claimRefs(prefix) {
  claimed.add(prefix);
}

// True for an error nobody claimed: the page shows it in the error bar.
export function unclaimed(error) {
  const ref = error.ref || "";
  for (const prefix of claimed) if (ref.startsWith(prefix)) return false;
  return true;
}

// `hook(code, reason)` runs when the server closes with 4001: the token no longer works.
export function onUnauthenticated(hook) {
  closedForGood = hook;
}

function dispatch(event) {
  for (const handler of handlers.get(event.type) || []) handler(event);
}

export function connect() {
  clearTimeout(link.reconnectTimer);
  if (link.ws || !state.token) return;
  setStatus("connecting", "connecting…");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  link.ws = ws;
  ws.onopen = () => {
    if (link.ws !== ws) return;
    const hello = { type: "hello", token: state.token, ref: "hello" };
    if (state.lastSeq.size) hello.resume = Object.fromEntries(state.lastSeq);
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (message) => {
    if (link.ws !== ws) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "welcome") welcomed();
    else if (event.type === "pong") link.pingSentAt = 0;
    else if (event.ref && replies.has(event.ref) && isAnswer(event)) return answer(event);
    dispatch(event);
  };
  ws.onclose = (close) => {
    if (link.ws !== ws) return;
    if (close.code === 4001) {
      dropConnection(null, "", false);
      closedForGood(close.code, close.reason);
    } else {
      dropConnection(close.code, close.reason, true);
    }
  };
}

// Joined, left and history answer their request; an error with its ref answers it too.
function isAnswer(event) {
  return ["joined", "left", "history", "error"].includes(event.type);
}

function welcomed() {
  state.connected = true;
  link.attempt = 0;
  setStatus("online", "connected");
  for (const { frame } of replies.values()) send(frame);
  keepAlive();
}

function answer(event) {
  const reply = replies.get(event.ref);
  replies.delete(event.ref);
  reply.callback(event);
}

// Closes the current socket (if any); with `retry`, reconnects after a backoff.
export function dropConnection(code, reason, retry = true) {
  const ws = link.ws;
  link.ws = null;
  state.connected = false;
  clearInterval(link.pingTimer);
  clearTimeout(link.reconnectTimer);
  if (ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.close(1000);
  }
  if (!state.token || !retry) return;
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** link.attempt);
  const delay = cap / 2 + (Math.random() * cap) / 2;
  link.attempt += 1;
  const why = code && code !== 1006 ? ` (${code}${reason ? ": " + reason : ""})` : "";
  setStatus("offline", `offline${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  link.reconnectTimer = setTimeout(connect, delay);
}

export function hasSocket() {
  return link.ws !== null;
}

export function send(frame) {
  if (link.ws && link.ws.readyState === WebSocket.OPEN) link.ws.send(JSON.stringify(frame));
}

// A request answered by one event (joined, left, history, or an error); re-sent after a
// reconnect until answered.
export function request(frame, callback) {
  const ref = "r" + link.nextRef++;
  frame.ref = ref;
  replies.set(ref, { frame, callback });
  if (state.connected) send(frame);
}

// The browser answers the server's Pings itself; this notices a connection that silently died.
function keepAlive() {
  clearInterval(link.pingTimer);
  link.pingSentAt = 0;
  link.pingTimer = setInterval(() => {
    if (link.pingSentAt) {
      dropConnection(null, "no answer"); // the last ping went unanswered for a whole period
    } else {
      link.pingSentAt = Date.now();
      send({ type: "ping", ref: "ping" });
    }
  }, PING_EVERY_MS);
}

// Time-ordered (ms clock first, then randomness, like UUIDv7): the server's client_id index
// then grows at its end instead of at random places, which keeps group commit cheap.
export function newClientId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  const random = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return Date.now().toString(16).padStart(12, "0") + random;
}
