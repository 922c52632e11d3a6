// Shared state of the page: who is logged in, the connection's progress, the rooms and the
// current one. Each feature module keeps its own state beside it and clears it in a reset hook.
export const TOKEN_KEY = "hibiki.token";
export const USER_KEY = "hibiki.user";

export const state = {
  token: null,
  user: null,
  connected: false, // welcome received on the current WebSocket
  current: null, // the open room's name
  stuck: true, // the message list is scrolled to its end: keep it there
  rooms: new Map(), // name -> {name, member}
  lastSeq: new Map(), // room -> highest seq received (messages, edits and deletes alike)
};

const resetHooks = [];

// `hook()` runs on logout, so the next user of the page starts from nothing.
export function onReset(hook) {
  resetHooks.push(hook);
}

export function resetState() {
  state.rooms.clear();
  state.lastSeq.clear();
  state.current = null;
  state.connected = false;
  for (const hook of resetHooks) hook();
}

export function roomEntry(name) {
  if (!state.rooms.has(name)) state.rooms.set(name, { name, member: false });
  return state.rooms.get(name);
}

// Highest seq seen in `room`: what `hello.resume` asks the server to continue from.
export function sawSeq(room, seq) {
  const last = state.lastSeq.get(room);
  if (last === undefined || seq > last) state.lastSeq.set(room, seq);
}
