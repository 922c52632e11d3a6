// Edit and delete from a message's menu (docs/protocol.md `edit`, `delete`, `edited`, `deleted`).
// One's own messages get a "⋯" button (an admin's or owner's view gives others' a Delete-only one) (a tap on the message opens it too, on a touch screen);
// its menu is keyboard-usable (Enter opens, arrows move, Escape closes). Edit is in place: Enter
// saves, Shift+Enter is a new line, Escape cancels. A change is kept until its ack and sent again
// after a reconnect with the same client_id, like a message; others' changes arrive live, and
// those made while offline come with the resume.
import { $, button, el } from "./dom.js";
import { showError } from "./errors.js";
import { claimRefs, newClientId, on, send } from "./connection.js";
import { confirmDialog } from "./dialogs.js";
import { messageById, onMessageElement, redraw, redrawRoom, shownItem, updateMessage } from "./messages.js";
import { onRoomInfo } from "./rooms.js";
import { onReset, roomEntry, sawSeq, state } from "./state.js";

const TOUCH = window.matchMedia("(hover: none)");
const changes = new Map(); // client_id -> the edit or delete frame, until acknowledged
let editing = null; // {room, id, seq, draft, saving: client_id or null}
let openMenu = null; // {menu, opener}
const moderated = new Map(); // room -> whether its messages were drawn with an admin's menus

onReset(() => {
  changes.clear();
  moderated.clear();
  editing = null;
  openMenu = null;
});

export function installMessageActions() {
  claimRefs("e:");
  claimRefs("d:");
  on("edited", (event) => {
    sawSeq(event.room, event.seq);
    if (editing && editing.saving && editing.saving === event.client_id) editing = null;
    updateMessage(event.room, event.id, { text: event.text, edited_at: event.edited_at });
  });
  on("deleted", (event) => {
    sawSeq(event.room, event.seq);
    if (editing && editing.room === event.room && editing.id === event.id) editing = null;
    updateMessage(event.room, event.id, { deleted: true, text: "" });
  });
  on("welcome", () => {
    for (const frame of changes.values()) send(frame);
  });
  on("ack", (ack) => {
    const frame = changes.get(ack.client_id);
    changes.delete(ack.client_id);
    if (frame && editing && editing.saving === ack.client_id) {
      editing = null; // stored, though its `edited` did not come first (a duplicate's ack)
      redraw(frame.room, messageById(frame.room, frame.id)?.seq);
    }
  });
  on("error", onChangeRefused);
  onMessageElement(decorate);
  onRoomInfo((room) => {
    // Promoted or demoted: others' messages gain or lose their Delete menu at once.
    const now = moderates(room);
    if (moderated.has(room) && moderated.get(room) !== now && !editing) redrawRoom(room);
    moderated.set(room, now);
  });
  document.addEventListener("pointerdown", (event) => {
    if (openMenu && !openMenu.menu.parentNode.contains(event.target)) closeMenu(false);
  });
}

function onChangeRefused(error) {
  const ref = error.ref || "";
  if (!ref.startsWith("e:") && !ref.startsWith("d:")) return;
  const frame = changes.get(ref.slice(2));
  changes.delete(ref.slice(2));
  if (editing && editing.saving === ref.slice(2)) {
    const gone = error.code === "message_deleted" || error.code === "no_such_message";
    const seq = editing.seq;
    if (gone) editing = null;
    else editing.saving = null; // the editor stays open with the text, to try again
    if (frame) redraw(frame.room, seq);
  }
  showError(error.code);
}

// Admins and the owner delete anyone's message in their room; only the author edits.
function moderates(room) {
  const role = roomEntry(room).role;
  return role === "owner" || role === "admin";
}

function decorate(message, item) {
  if (message.deleted || (message.user !== state.user && !moderates(message.room))) return;
  const bubble = item.querySelector(".bubble");
  const opener = button("msg-actions", "⋯", () => toggleMenu(message, item, opener));
  opener.setAttribute("aria-label", "Message actions");
  opener.setAttribute("aria-haspopup", "menu");
  opener.setAttribute("aria-expanded", "false");
  bubble.querySelector(".meta").append(opener);
  bubble.addEventListener("click", (event) => {
    // On a touch screen there is no hover to reveal the button: a tap on the message opens it.
    if (TOUCH.matches && !editing && !event.target.closest("button, textarea, [role=menu]")) {
      toggleMenu(message, item, opener);
    }
  });
  if (editing && editing.room === message.room && editing.id === message.id) {
    attachEditor(message, item);
  }
}

function toggleMenu(message, item, opener) {
  if (openMenu && openMenu.opener === opener) return closeMenu(true);
  closeMenu(false);
  const menu = el("div", "msg-menu");
  menu.setAttribute("role", "menu");
  menu.setAttribute("aria-label", "Message actions");
  const edit = button("", "Edit", () => {
    closeMenu(false);
    startEditing(message);
  });
  const remove = button("danger", "Delete", () => {
    closeMenu(false);
    askToDelete(message, opener);
  });
  const entries = message.user === state.user ? [edit, remove] : [remove];
  for (const entry of entries) {
    entry.setAttribute("role", "menuitem");
    entry.tabIndex = -1;
    menu.append(entry);
  }
  menu.addEventListener("keydown", (event) => menuKey(event, entries));
  item.querySelector(".bubble").append(menu);
  opener.setAttribute("aria-expanded", "true");
  openMenu = { menu, opener };
  entries[0].focus();
}

function menuKey(event, entries) {
  const at = entries.indexOf(document.activeElement);
  if (event.key === "Escape") {
    event.stopPropagation();
    closeMenu(true);
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const step = event.key === "ArrowDown" ? 1 : entries.length - 1;
    entries[(at + step) % entries.length].focus();
  } else if (event.key === "Tab") {
    closeMenu(false);
  }
}

function closeMenu(refocus) {
  if (!openMenu) return;
  const { menu, opener } = openMenu;
  openMenu = null;
  menu.remove();
  opener.setAttribute("aria-expanded", "false");
  if (refocus) opener.focus();
}

function startEditing(message) {
  editing = { room: message.room, id: message.id, seq: message.seq, draft: message.text, saving: null };
  redraw(message.room, message.seq);
}

// The editor in place of the text; it survives redraws of its message (editing holds the draft).
function attachEditor(message, item) {
  const input = el("textarea", "edit-input");
  input.value = editing.draft;
  input.rows = Math.min(8, editing.draft.split("\n").length);
  input.disabled = editing.saving !== null;
  input.setAttribute("aria-label", "Edit message (Enter saves, Escape cancels, Shift+Enter starts a new line)");
  input.addEventListener("input", () => {
    editing.draft = input.value;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save(message);
    } else if (event.key === "Escape") {
      event.stopPropagation();
      cancel(message);
    }
  });
  const hint = el("span", "edit-hint");
  hint.append(
    editing.saving ? el("span", "", "saving…") : el("span", "", "Enter saves · Escape cancels"),
    button("", "Save", () => save(message)),
    button("", "Cancel", () => cancel(message)),
  );
  const editor = el("div", "editor");
  editor.append(input, hint);
  item.querySelector(".text").replaceWith(editor);
  item.classList.add("editing");
  queueMicrotask(() => {
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  });
}

function save(message) {
  const text = editing.draft;
  const current = messageById(message.room, message.id) || message;
  if (text === current.text) return cancel(message); // nothing changed: nothing to store
  if (!text.trim()) return showError("text_empty");
  const clientId = newClientId();
  const frame = { type: "edit", room: message.room, id: message.id, text, client_id: clientId };
  frame.ref = "e:" + clientId;
  changes.set(clientId, frame);
  editing.saving = clientId;
  redraw(message.room, message.seq);
  if (state.connected) send(frame);
}

function cancel(message) {
  editing = null;
  redraw(message.room, message.seq);
  const item = shownItem(message.seq);
  if (item) item.querySelector(".msg-actions")?.focus();
}

async function askToDelete(message, opener) {
  const whose = message.user === state.user ? "this message" : `this message by ${message.user}`;
  const sure = await confirmDialog(
    `Delete ${whose}? Everyone in the room will see that a message was deleted here.`,
    "Delete",
  );
  if (!sure) {
    if (opener.isConnected) opener.focus();
    return;
  }
  const clientId = newClientId();
  const frame = { type: "delete", room: message.room, id: message.id, client_id: clientId };
  frame.ref = "d:" + clientId;
  changes.set(clientId, frame);
  if (state.connected) send(frame);
  $("composer-input").focus();
}
