// The composer and the messages being sent. A message is kept (shown as "sending…") until its
// own echo arrives; after a reconnect it is sent again with the same client_id, which the server
// stores at most once. A refusal that may pass later (rate_limited, unavailable) keeps it, to
// retry with a click; any other gives the text back to the box.
import { $, el } from "./dom.js";
import { clearError, showError, showNotice } from "./errors.js";
import { claimRefs, newClientId, on, send } from "./connection.js";
import { bubble, onNewMessage, storeOf } from "./messages.js";
import { authorElement } from "./profiles.js";
import { onRoomOpened } from "./rooms.js";
import { onReset, state } from "./state.js";

const TYPING_EVERY_MS = 3000;
const RETRYABLE = new Set(["rate_limited", "unavailable"]);

const pending = new Map(); // client_id -> {room, text, clientId, error}
let lastTypingSent = 0;

onReset(() => pending.clear());

export function installComposer() {
  claimRefs("s:");
  on("welcome", () => {
    for (const entry of pending.values()) if (!entry.error) transmit(entry);
  });
  on("ack", onAck);
  on("error", onError);
  onNewMessage((message) => {
    if (message.client_id && message.user === state.user && pending.has(message.client_id)) {
      pending.delete(message.client_id);
      renderPending();
    }
  });
  onRoomOpened(renderPending);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("composer-input");
    if (sendMessage(input.value)) input.value = "";
  });
  $("composer-input").addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line; never while an input method is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer-input").addEventListener("input", () => {
    const now = Date.now();
    if (state.connected && state.current && now - lastTypingSent > TYPING_EVERY_MS) {
      lastTypingSent = now;
      send({ type: "typing", room: state.current, ref: "typing" });
    }
  });
}

// True if `text` was taken (queued to send); else it stays in the box, and the bar says why.
function sendMessage(text) {
  if (!text.trim()) return false;
  if (!state.current) {
    showError("no_room");
    return false;
  }
  clearError();
  const entry = { room: state.current, text, clientId: newClientId(), error: null };
  pending.set(entry.clientId, entry);
  renderPending();
  transmit(entry);
  return true;
}

function transmit(entry) {
  if (!state.connected) return; // sent after the next welcome
  send({
    type: "send",
    room: entry.room,
    text: entry.text,
    client_id: entry.clientId,
    ref: "s:" + entry.clientId,
  });
}

function onAck(ack) {
  const entry = pending.get(ack.client_id);
  // Normally the message itself came first; if not (a duplicate ack after a reconnect), the
  // replayed message removes the pending entry when it arrives.
  if (entry && storeOf(ack.room).bySeq.has(ack.seq)) {
    pending.delete(ack.client_id);
    renderPending();
  }
}

function onError(error) {
  const ref = error.ref || "";
  if (!ref.startsWith("s:")) return;
  const entry = pending.get(ref.slice(2));
  if (entry) {
    if (RETRYABLE.has(error.code)) {
      entry.error = error.code;
    } else {
      pending.delete(entry.clientId);
      const input = $("composer-input");
      // Slow mode: the refused text goes back above whatever was typed since.
      const slowed = error.code === "slow_mode" && input.value;
      if (entry.room === state.current && (!input.value || slowed)) {
        input.value = slowed ? entry.text + "\n" + input.value : entry.text;
      }
    }
    renderPending();
  }
  if (error.code === "slow_mode" && typeof error.retry_after === "number") {
    const wait = Math.max(1, Math.ceil(error.retry_after));
    const text = `This room is in slow mode: you can send your next message in ${wait} s. Your text is still in the box.`;
    return showNotice(text, error.code);
  }
  showError(error.code);
}

function renderPending() {
  const list = $("pending-list");
  list.replaceChildren();
  for (const entry of pending.values()) {
    if (entry.room !== state.current) continue;
    const item = el("li", entry.error ? "msg pending failed" : "msg pending");
    item.dataset.clientId = entry.clientId;
    item.dataset.code = entry.error || "";
    const note = entry.error ? "not sent: click to retry" : "sending…";
    item.append(bubble(authorElement(state.user), el("span", "text", entry.text), el("span", "note", note)));
    if (entry.error) {
      item.tabIndex = 0;
      item.setAttribute("role", "button");
      item.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") item.click();
      });
      item.addEventListener("click", () => {
        entry.error = null;
        renderPending();
        transmit(entry);
      });
    }
    list.append(item);
  }
}
