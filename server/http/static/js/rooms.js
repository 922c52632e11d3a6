// The room list (sidebar, a drawer on a phone), joining, leaving, creating (public or private,
// with a topic) and opening rooms, each room's settings and the user's role in it (GET
// /api/rooms, `room_updated`), being removed from one, and who is online in the open room.
// Feature modules add to each room's row (`onRoomRow`) and hear when a room is opened
// (`onRoomOpened`) or its settings change (`onRoomInfo`).
import { api } from "./api.js";
import { $, button, el } from "./dom.js";
import { showError, showNotice } from "./errors.js";
import { on, request } from "./connection.js";
import { onReset, roomEntry, state } from "./state.js";

const online = new Map(); // room -> Set of user names
const rowDecorators = [];
const openedHooks = [];
const leftHooks = [];
const joinedHooks = [];
const listedHooks = [];
const infoHooks = [];
const INFO = ["visibility", "topic", "slow_mode", "owner", "role"]; // kept in each room's entry
let welcomedBefore = false; // a welcome came on an earlier connection

onReset(() => {
  online.clear();
  welcomedBefore = false;
  setDrawer(false);
});

// `decorate(room, item)` adds to a member room's <li> each time the list is drawn.
export function onRoomRow(decorate) {
  rowDecorators.push(decorate);
}

// `hook(name)` runs when the user opens a room (or none: null).
export function onRoomOpened(hook) {
  openedHooks.push(hook);
}

// `hook(name)` runs when the user is no longer in a room: drop what is kept of it.
export function onRoomLeft(hook) {
  leftHooks.push(hook);
}

// `hook(event)` runs when the user joined a room (the `joined` event, answer or not).
export function onRoomJoined(hook) {
  joinedHooks.push(hook);
}

// `hook(info)` runs for each room of GET /api/rooms the user is a member of.
export function onRoomListed(hook) {
  listedHooks.push(hook);
}

// `hook(name)` runs when a room's settings or the user's role in it are (re)learnt.
export function onRoomInfo(hook) {
  infoHooks.push(hook);
}

function adoptInfo(name, info) {
  const room = roomEntry(name);
  for (const key of INFO) if (key in info) room[key] = info[key];
  for (const hook of infoHooks) hook(name);
}

// Asks the server for one room's settings and the user's role (after a role change, say).
export async function refreshRoom(name) {
  try {
    adoptInfo(name, await api("GET", "/api/rooms/" + encodeURIComponent(name)));
    renderRooms();
  } catch {
    // Gone or no longer visible: a `removed` or `left` says so.
  }
}

// Applies a `room_updated` event to the room's entry.
export function roomUpdated(event) {
  const { visibility, topic, slow_mode, owner } = event;
  adoptInfo(event.room, { visibility, topic, slow_mode, owner: owner || null });
  renderRooms();
}

export async function refreshRooms(baseline) {
  const data = await api("GET", "/api/rooms");
  for (const info of data.rooms) {
    const room = roomEntry(info.name);
    room.member = info.member;
    adoptInfo(info.name, info);
    if (info.member) for (const hook of listedHooks) hook(info);
    // Everything after this moment is delivered live or on resume; older is history.
    if (baseline && info.member && !state.lastSeq.has(info.name)) {
      state.lastSeq.set(info.name, info.last_seq);
    }
  }
  renderRooms();
}

export function installRooms() {
  on("welcome", onWelcome);
  on("joined", (event) => joinedRoom(event, false)); // joined on another connection or over HTTP
  on("left", (event) => leftRoom(event.room));
  on("presence", onPresence);
  on("removed", onRemoved);
  on("room_created", (event) => {
    roomEntry(event.room); // someone made a public room: list it (joining is a click)
    renderRooms();
  });
  $("refresh-rooms").addEventListener("click", () =>
    refreshRooms(false).catch((error) => showError(error.code)),
  );
  $("create-room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createRoom($("new-room-name").value.trim(), $("new-room-private").checked, $("new-room-topic").value);
  });
  $("leave-button").addEventListener("click", () => state.current && leaveRoom(state.current));
  $("rooms-toggle").addEventListener("click", () => setDrawer(!drawerOpen()));
}

function onWelcome(welcome) {
  const rooms = new Set(welcome.rooms || []);
  for (const [name, room] of state.rooms) {
    if (room.member && !rooms.has(name)) {
      room.member = false;
      state.lastSeq.delete(name);
    }
  }
  for (const name of rooms) roomEntry(name).member = true;
  online.clear(); // refreshed by joining the current room again
  if (welcomedBefore) refreshRooms(false).catch(() => null); // rooms made while away
  welcomedBefore = true;
  if (state.current && rooms.has(state.current)) joinRoom(state.current, false);
  else selectRoom([...rooms].sort()[0] || null);
  renderRooms();
}

export function joinRoom(name, select) {
  request({ type: "join", room: name }, (event) => {
    if (event.type === "error") return showError(event.code === "banned" ? "banned_join" : event.code);
    joinedRoom(event, select);
  });
}

function leaveRoom(name) {
  request({ type: "leave", room: name }, (event) => {
    if (event.type === "error") return showError(event.code);
    leftRoom(name);
  });
}

function joinedRoom(event, select) {
  const name = event.room;
  roomEntry(name).member = true;
  if (!state.lastSeq.has(name)) state.lastSeq.set(name, event.last_seq);
  online.set(name, new Set(event.online || []));
  for (const hook of joinedHooks) hook(event);
  if (!("visibility" in roomEntry(name))) refreshRoom(name); // invited, or joined elsewhere
  if (select) selectRoom(name);
  else if (name === state.current) renderPresence();
  renderRooms();
}

function leftRoom(name) {
  roomEntry(name).member = false;
  state.lastSeq.delete(name);
  online.delete(name);
  for (const hook of leftHooks) hook(name);
  if (roomEntry(name).visibility === "private") state.rooms.delete(name); // invisible now
  if (state.current === name) {
    const next = [...state.rooms.values()].filter((room) => room.member).map((r) => r.name);
    selectRoom(next.sort()[0] || null);
  }
  renderRooms();
}

// A kick or a ban: the room leaves the list (a public one the user was only kicked from stays
// listed to join again) and the bar says who did it.
function onRemoved(event) {
  const name = event.room;
  leftRoom(name);
  if (event.reason === "banned") state.rooms.delete(name);
  renderRooms();
  const how = event.reason === "banned" ? "banned you from" : "removed you from";
  showNotice(`${event.by || "An admin"} ${how} ${name}.`, event.reason);
}

async function createRoom(name, secret, topic) {
  try {
    const info = await api("POST", "/api/rooms", { name, private: secret, topic });
    adoptInfo(name, info);
    joinRoom(name, true); // subscribes this connection too
    leaveDrawer();
    $("new-room-name").value = "";
    $("new-room-topic").value = "";
    $("new-room-private").checked = false;
  } catch (error) {
    showError(error.code);
  }
}

export function selectRoom(name) {
  state.current = name;
  state.stuck = true;
  $("room-title").textContent = name || "No room selected";
  $("leave-button").hidden = !name;
  $("room-panel-button").hidden = !name;
  for (const hook of openedHooks) hook(name);
  renderPresence();
  renderRooms();
  if (name && state.connected && !online.has(name)) joinRoom(name, false);
}

export function renderRooms() {
  const list = $("room-list");
  // Redrawn on every badge change: whoever had a room's button focused keeps it focused.
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const refocus = focused && [focused.closest("li").dataset.room, focused.className];
  list.replaceChildren();
  const rooms = [...state.rooms.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const room of rooms) {
    const item = el("li", room.name === state.current ? "room-item current" : "room-item");
    item.dataset.room = room.name;
    const name = button("room-name", room.name, () => {
      selectRoom(room.name);
      leaveDrawer();
    });
    if (room.visibility === "private") {
      const mark = el("span", "private-mark", "private"); // words: no emoji font is certain
      mark.title = "Only invited people see this room";
      name.append(mark);
    }
    name.disabled = !room.member;
    if (room.name === state.current) name.setAttribute("aria-current", "true");
    item.append(name);
    if (room.member) {
      for (const decorate of rowDecorators) decorate(room, item);
    } else {
      item.append(
        button("join", "Join", () => {
          joinRoom(room.name, true);
          leaveDrawer();
        }),
      );
    }
    list.append(item);
  }
  if (refocus) {
    const item = [...list.children].find((li) => li.dataset.room === refocus[0]);
    const again = item && [...item.querySelectorAll("button")].find((b) => b.className === refocus[1]);
    (again || list.querySelector("button:not(:disabled)") || $("new-room-name")).focus();
  }
}

function onPresence(presence) {
  const users = online.get(presence.room);
  if (!users) return;
  if (presence.status === "online") users.add(presence.user);
  else users.delete(presence.user);
  if (presence.room === state.current) renderPresence();
}

function renderPresence() {
  const list = $("presence-list");
  list.replaceChildren();
  const users = (state.current && online.get(state.current)) || new Set();
  for (const user of [...users].sort()) list.append(el("li", "online-user", user));
}

// The sidebar is a drawer on a narrow screen (app.css); the toggle is hidden on a wide one.
export function drawerOpen() {
  return $("chat-view").classList.contains("drawer-open");
}

export function setDrawer(open) {
  $("chat-view").classList.toggle("drawer-open", open);
  $("rooms-toggle").setAttribute("aria-expanded", String(open));
  if (open) ($("room-list").querySelector("button:not(:disabled)") || $("new-room-name")).focus();
}

export function leaveDrawer() {
  if (!drawerOpen()) return;
  setDrawer(false);
  $("composer-input").focus();
}
