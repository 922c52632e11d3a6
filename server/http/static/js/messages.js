// The open room's messages: the per-room store (by seq, and seq by id), history paging, and the
// rendering of each message (day separators, author groups, "(edited)", tombstones). Feature
// modules add to each message's element (`onMessageElement`) and hear of each new message
// (`onNewMessage`).
import { $, atBottom, el, scrollToBottom, timeElement } from "./dom.js";
import { showError } from "./errors.js";
import { on, request } from "./connection.js";
import { authorElement } from "./profiles.js";
import { onRoomLeft, onRoomOpened, selectRoom } from "./rooms.js";
import { onReset, sawSeq, state } from "./state.js";

const HISTORY_PAGE = 50;
const MAX_PAGE = 200; // the protocol's largest history page
const GROUP_WITHIN_MS = 5 * 60 * 1000; // one author's messages closer than this form a group

const stores = new Map(); // room -> {bySeq: Map, order: [seq], seqOf: Map id -> seq, hasMore, loading}
const shown = new Map(); // seq -> <li> of the open room
const decorators = [];
const newMessageHooks = [];
const historyHooks = [];
let reveal = null; // {room, seq}: a message to show once its page is loaded (a search result)

onReset(() => {
  stores.clear();
  reveal = null;
});

// `decorate(message, item)` adds to a message's <li> each time it is drawn.
export function onMessageElement(decorate) {
  decorators.push(decorate);
}

// `hook(message)` runs for each message received live or on resume (not for history pages).
export function onNewMessage(hook) {
  newMessageHooks.push(hook);
}

// `hook(room)` runs after a page of the open room's history is shown.
export function onHistoryShown(hook) {
  historyHooks.push(hook);
}

export function storeOf(room) {
  if (!stores.has(room)) {
    stores.set(room, { bySeq: new Map(), order: [], seqOf: new Map(), hasMore: null, loading: false });
  }
  return stores.get(room);
}

// The message `id` of `room` as this page holds it, or undefined (not loaded).
export function messageById(room, id) {
  const store = storeOf(room);
  return store.bySeq.get(store.seqOf.get(id));
}

export function newestSeq(room) {
  const order = storeOf(room).order;
  return order.length ? order[order.length - 1] : 0;
}

export function installMessages() {
  on("message", onMessage);
  on("resync", (resync) => {
    // Too much was missed to replay: start the room over from its latest page of history.
    state.lastSeq.set(resync.room, resync.last_seq);
    stores.delete(resync.room);
    if (resync.room === state.current) selectRoom(resync.room);
  });
  onRoomLeft((name) => stores.delete(name));
  onRoomOpened((name) => {
    renderMessages();
    if (name && storeOf(name).hasMore === null) loadHistory(name);
  });
  $("messages").addEventListener("scroll", () => {
    state.stuck = atBottom();
    if (state.current && $("messages").scrollTop < 60) loadHistory(state.current);
  });
  // The list loses height to the error bar, the typing line, a growing composer or a phone's
  // keyboard: whoever was reading the newest message keeps it in view.
  new ResizeObserver(() => state.stuck && scrollToBottom()).observe($("messages"));
}

function onMessage(message) {
  sawSeq(message.room, message.seq);
  if (!addMessage(message)) return;
  for (const hook of newMessageHooks) hook(message);
}

function addMessage(message) {
  const store = storeOf(message.room);
  if (store.bySeq.has(message.seq)) return false;
  store.bySeq.set(message.seq, message);
  store.seqOf.set(message.id, message.seq);
  let index = store.order.length;
  while (index > 0 && store.order[index - 1] > message.seq) index -= 1;
  store.order.splice(index, 0, message.seq);
  if (message.room === state.current) {
    const stick = atBottom();
    const nextSeq = store.order[index + 1];
    const next = shown.get(nextSeq) || null;
    const item = shownElement(store, message.seq, store.bySeq.get(store.order[index - 1]));
    $("message-list").insertBefore(item, next);
    // The next message may now continue this one's group, or no longer start a day.
    if (next) next.replaceWith(shownElement(store, nextSeq, message));
    if (stick && !next) scrollToBottom();
    if (store.order.length === 1) renderHistoryStatus(); // "no messages yet" is over
  }
  return true;
}

// Applies `patch` (new text and edited_at, or deleted) to message `id` of `room` and redraws it.
export function updateMessage(room, id, patch) {
  const message = messageById(room, id);
  if (!message) return; // not loaded: history brings it as it is now
  Object.assign(message, patch);
  redraw(room, message.seq);
}

export function redraw(room, seq) {
  const old = room === state.current ? shown.get(seq) : null;
  if (!old) return;
  const store = storeOf(room);
  const index = store.order.indexOf(seq);
  old.replaceWith(shownElement(store, seq, store.bySeq.get(store.order[index - 1])));
}

// Redraws every shown message of the open room `room` (what decorators add has changed).
export function redrawRoom(room) {
  if (room !== state.current) return;
  for (const seq of storeOf(room).order) redraw(room, seq);
}

function shownElement(store, seq, previous) {
  const item = messageElement(store.bySeq.get(seq), previous);
  shown.set(seq, item);
  return item;
}

export function shownItem(seq) {
  return shown.get(seq);
}

function dayLabel(when) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (when.toDateString() === today.toDateString()) return "Today";
  if (when.toDateString() === yesterday.toDateString()) return "Yesterday";
  const options = { weekday: "long", year: "numeric", month: "long", day: "numeric" };
  return when.toLocaleDateString([], options);
}

// One message as a list item: a day separator when it is the first of its (local) day, the
// author's name when it starts a group, then its text (as text: line breaks kept by CSS), its
// time and "(edited)"; a deleted message keeps its place as a tombstone.
function messageElement(message, previous) {
  const when = new Date(message.ts);
  const before = previous ? new Date(previous.ts) : null;
  const newDay = !before || before.toDateString() !== when.toDateString();
  const grouped =
    !newDay && previous.user === message.user && message.ts - previous.ts < GROUP_WITHIN_MS;
  let className = "msg";
  if (message.user === state.user) className += " mine";
  if (grouped) className += " cont";
  if (message.deleted) className += " deleted";
  const item = el("li", className);
  item.dataset.seq = String(message.seq);
  item.dataset.id = String(message.id);
  if (newDay) {
    const day = el("p", "day", dayLabel(when));
    day.setAttribute("role", "separator");
    item.append(day);
  }
  const meta = el("span", "meta");
  if (message.edited_at && !message.deleted) {
    const mark = el("span", "edited", "(edited)");
    mark.title = "edited " + new Date(message.edited_at).toLocaleString();
    meta.append(mark);
  }
  meta.append(timeElement(when));
  const text = message.deleted
    ? el("span", "text tombstone", "This message was deleted.")
    : el("span", "text", message.text);
  item.append(bubble(grouped ? null : authorElement(message.user), text, meta));
  for (const decorate of decorators) decorate(message, item);
  return item;
}

// The message's box: author (if it starts a group), text, and what goes beside them.
export function bubble(author, text, aside) {
  const box = el("div", "bubble");
  if (author !== null) box.append(author);
  box.append(text, aside);
  return box;
}

// Opens `room` at message `seq`: pages history back (the largest pages) until it is loaded, then
// scrolls it into view, marks it for a moment and focuses it.
export function revealMessage(room, seq) {
  reveal = { room, seq };
  if (room !== state.current) selectRoom(room);
  revealIfLoaded();
}

function revealIfLoaded() {
  if (!reveal || reveal.room !== state.current) return;
  const store = storeOf(reveal.room);
  const item = shown.get(reveal.seq);
  if (item) {
    reveal = null;
    item.classList.add("found");
    item.tabIndex = -1;
    item.scrollIntoView({ block: "center" });
    item.focus({ preventScroll: true });
    state.stuck = atBottom();
    setTimeout(() => item.classList.remove("found"), 2500);
  } else if (store.hasMore === false) {
    reveal = null; // deleted meanwhile: the room is open at its latest messages
  } else {
    loadHistory(reveal.room, MAX_PAGE); // or the page on its way calls this again
  }
}

function loadHistory(room, limit = HISTORY_PAGE) {
  const store = storeOf(room);
  if (store.loading || store.hasMore === false) return;
  store.loading = true;
  $("history-status").textContent = "loading history…";
  const frame = { type: "history", room, limit };
  if (store.order.length) frame.before_seq = store.order[0];
  request(frame, (event) => {
    store.loading = false;
    if (event.type === "error") return showError(event.code);
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    const first = store.hasMore === null;
    for (const message of event.messages) addMessage(message);
    store.hasMore = event.has_more && event.messages.length > 0;
    if (room !== state.current) return;
    box.scrollTop = first ? box.scrollHeight : box.scrollHeight - fromBottom;
    renderHistoryStatus();
    for (const hook of historyHooks) hook(room);
    if (reveal) return revealIfLoaded();
    // Keep paging while the list does not fill the view (nothing to scroll yet).
    if (store.hasMore && box.scrollHeight <= box.clientHeight) loadHistory(room);
  });
}

function renderHistoryStatus() {
  const store = state.current ? storeOf(state.current) : null;
  let text = "";
  if (store && store.hasMore === false) text = store.order.length ? "start of the room" : "no messages yet";
  else if (store && store.hasMore) text = "scroll up for older messages";
  $("history-status").textContent = text;
}

function renderMessages() {
  shown.clear();
  const list = $("message-list");
  list.replaceChildren();
  renderHistoryStatus(); // no room, or a room not loaded yet: no stale "start of the room"
  if (!state.current) return;
  const store = storeOf(state.current);
  let previous;
  for (const seq of store.order) {
    list.append(shownElement(store, seq, previous));
    previous = store.bySeq.get(seq);
  }
  scrollToBottom();
}
