// Unread badges from the server's read state (docs/protocol.md, *Read state*). Per room the page
// holds the latest server state {read_seq, last_seq, count} and adds the messages by others it
// received above that last_seq; it moves the cursor (`read`) when the user sees the newest
// message of the open room in a visible tab, and every connection of the user hears of it.
import { atBottom, el } from "./dom.js";
import { claimRefs, on, send } from "./connection.js";
import { onHistoryShown, onNewMessage, storeOf } from "./messages.js";
import { onRoomJoined, onRoomListed, onRoomOpened, onRoomRow, renderRooms } from "./rooms.js";
import { onReset, state } from "./state.js";

const READ_AFTER_MS = 300; // one `read` for a burst of messages: each spends the rate limit
const MAX_SHOWN = 999;

const reads = new Map(); // room -> {read_seq, last_seq, count} as the server last said
const asked = new Map(); // room -> the seq last sent in `read`
let readTimer = 0;

onReset(() => {
  reads.clear();
  asked.clear();
  clearTimeout(readTimer);
});

// The server's count plus the messages by others this page holds past the server's last_seq
// (deleted ones are not unread).
export function unreadCount(room) {
  const read = reads.get(room);
  if (!read) return 0;
  const store = storeOf(room);
  const after = Math.max(read.last_seq, read.read_seq);
  let extra = 0;
  for (let i = store.order.length - 1; i >= 0 && store.order[i] > after; i -= 1) {
    const message = store.bySeq.get(store.order[i]);
    if (message.user !== state.user && !message.deleted) extra += 1;
  }
  return read.count + extra;
}

export function installUnread() {
  claimRefs("read");
  on("welcome", (welcome) => {
    asked.clear(); // a read lost with the old connection is sent again
    for (const [room, read] of Object.entries(welcome.unread || {})) adopt(room, read, true);
    renderRooms();
    markSeenSoon();
  });
  on("unread", (event) => {
    if (adopt(event.room, event, false)) renderRooms();
  });
  on("deleted", () => renderRooms());
  onNewMessage((message) => {
    if (message.user !== state.user) renderRooms();
    if (message.room === state.current) markSeenSoon();
  });
  // A room joined meanwhile has its old cursor (0 if never read), its count until then unknown
  // here: the room list (GET /api/rooms) says it.
  onRoomJoined((event) => {
    if (!reads.has(event.room)) adopt(event.room, { read_seq: 0, last_seq: event.last_seq, count: 0 }, true);
  });
  onRoomListed((info) => {
    const read = { read_seq: info.read_seq || 0, last_seq: info.last_seq, count: info.unread || 0 };
    adopt(info.name, read, false);
  });
  onHistoryShown(markSeenSoon);
  onRoomOpened(markSeenSoon);
  onRoomRow(badge);
  document.addEventListener("visibilitychange", markSeenSoon);
  window.addEventListener("focus", markSeenSoon);
  document.getElementById("messages").addEventListener("scroll", markSeenSoon);
}

// Takes the server's state for `room` unless it is older than the one held (two moves on
// different nodes may arrive in either order); `fresh` (a welcome) replaces it whatever it is.
function adopt(room, event, fresh) {
  const held = reads.get(room);
  if (!fresh && held) {
    const older =
      event.read_seq < held.read_seq ||
      (event.read_seq === held.read_seq && event.last_seq < held.last_seq);
    if (older) return false;
  }
  reads.set(room, { read_seq: event.read_seq, last_seq: event.last_seq, count: event.count });
  return true;
}

function markSeenSoon() {
  clearTimeout(readTimer);
  readTimer = setTimeout(markSeen, READ_AFTER_MS);
}

// The user sees the newest message of the open room: move the cursor to it.
function markSeen() {
  const room = state.current;
  if (!room || !state.connected || document.visibilityState !== "visible" || !atBottom()) return;
  if (storeOf(room).hasMore === null) return; // its latest page is not shown yet
  const seq = state.lastSeq.get(room) || 0;
  const read = reads.get(room);
  if (seq === 0 || (read && read.read_seq >= seq) || asked.get(room) >= seq) return;
  asked.set(room, seq);
  send({ type: "read", room, seq, ref: "read" });
}

function badge(room, item) {
  // The open room, read as it fills: no badge flickering up for the moment before `read`.
  const reading = room.name === state.current && document.visibilityState === "visible" && state.stuck;
  const count = reading ? 0 : unreadCount(room.name);
  const shown = el("span", "unread", count > MAX_SHOWN ? MAX_SHOWN + "+" : String(count));
  shown.hidden = count === 0;
  shown.title = count === 1 ? "1 unread message" : `${count} unread messages`;
  item.append(shown);
}
