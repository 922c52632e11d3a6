// "bob is typing…" under the open room's messages: shown for a few seconds after each notice,
// and until that user's next message arrives.
import { $ } from "./dom.js";
import { on } from "./connection.js";
import { onNewMessage } from "./messages.js";
import { onRoomOpened } from "./rooms.js";
import { onReset, state } from "./state.js";

const TYPING_SHOWN_MS = 4000;
const typing = new Map(); // room -> Map user -> timer

onReset(() => typing.clear());

export function installTyping() {
  on("typing", onTyping);
  onNewMessage((message) => stopTyping(message.room, message.user));
  onRoomOpened(renderTyping);
}

function onTyping(notice) {
  if (notice.user === state.user) return;
  if (!typing.has(notice.room)) typing.set(notice.room, new Map());
  const users = typing.get(notice.room);
  clearTimeout(users.get(notice.user));
  users.set(
    notice.user,
    setTimeout(() => stopTyping(notice.room, notice.user), TYPING_SHOWN_MS),
  );
  if (notice.room === state.current) renderTyping();
}

function stopTyping(room, user) {
  const users = typing.get(room);
  if (!users || !users.has(user)) return;
  clearTimeout(users.get(user));
  users.delete(user);
  if (room === state.current) renderTyping();
}

function renderTyping() {
  const users = [...((state.current && typing.get(state.current)) || new Map()).keys()];
  const verb = users.length > 1 ? "are" : "is";
  $("typing").textContent = users.length ? `${users.join(", ")} ${verb} typing…` : "";
}
