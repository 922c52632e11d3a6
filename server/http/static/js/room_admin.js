// The open room's page in the side panel (docs/protocol.md *Rooms, roles and settings*): its
// topic (also under the room's name in the header) and slow mode, editable by admins and the
// owner; its members with their roles; and the actions the user's role allows — invite, kick,
// ban, unban, make admin or member, give ownership (after a confirmation). Actions the user
// cannot do are not shown; a refusal reads as a sentence. `room_updated` and `member_updated`
// redraw it live. The composer's placeholder tells a member about slow mode.
import { api } from "./api.js";
import { $, button, el } from "./dom.js";
import { describeError } from "./errors.js";
import { claimRefs, on, send } from "./connection.js";
import { confirmDialog } from "./dialogs.js";
import { closePanel, openPanel, panelOpen } from "./panel.js";
import { displayName } from "./profiles.js";
import { onRoomInfo, onRoomLeft, onRoomOpened, refreshRoom, roomUpdated } from "./rooms.js";
import { onReset, roomEntry, state } from "./state.js";

const SLOW_CHOICES = [0, 5, 10, 30, 60, 300, 900, 3600]; // seconds; the server takes 0–3600
const RANK = { owner: 2, admin: 1, member: 0 };

const asked = new Map(); // ref -> the sentence to show when it is answered
let shown = null; // {room, members: Map user -> role} of the page on screen
let nextRef = 1;

onReset(() => {
  asked.clear();
  shown = null;
});

export function installRoomAdmin() {
  claimRefs("a:");
  on("room_updated", (event) => {
    roomUpdated(event);
    answered(event);
    if (event.owner && roomEntry(event.room).role === "owner" && event.owner !== state.user) {
      refreshRoom(event.room); // a transfer made this user an admin
    }
  });
  on("member_updated", (event) => {
    answered(event);
    if (event.user === state.user) refreshRoom(event.room);
    if (shown && shown.room === event.room) loadMembers(event.room);
  });
  on("error", (error) => {
    if (!asked.has(error.ref)) return;
    asked.delete(error.ref);
    report(describeError(error.code), error.code);
  });
  on("removed", (event) => shown && shown.room === event.room && closePanel(false));
  onRoomLeft((name) => shown && shown.room === name && closePanel(false));
  onRoomInfo((name) => {
    if (name === state.current) renderHeader();
    if (shown && shown.room === name) renderPage();
  });
  onRoomOpened(() => {
    renderHeader();
    if (panelOpen("room")) closePanel(false); // it showed the previous room
  });
  $("room-panel-button").addEventListener("click", openRoomPage);
}

function renderHeader() {
  const room = state.current ? roomEntry(state.current) : {};
  $("room-topic").textContent = room.topic || "";
  $("room-topic").hidden = !room.topic;
  $("room-topic").title = room.topic || "";
  const slowed = room.slow_mode > 0 && RANK[room.role] === 0;
  $("composer-input").placeholder = slowed
    ? `Message (slow mode: one every ${duration(room.slow_mode)})`
    : "Message";
}

function duration(seconds) {
  if (seconds % 3600 === 0) return seconds === 3600 ? "hour" : `${seconds / 3600} h`;
  if (seconds % 60 === 0) return seconds === 60 ? "minute" : `${seconds / 60} min`;
  return `${seconds} s`;
}

function openRoomPage() {
  const room = state.current;
  if (!room) return;
  shown = { room, members: new Map() };
  const page = el("div", "room-page");
  page.id = "room-page";
  openPanel("room", room, page, $("room-panel-button"), () => {
    shown = null;
    $("room-panel-button").setAttribute("aria-expanded", "false");
  });
  $("room-panel-button").setAttribute("aria-expanded", "true");
  renderPage();
  $("side-panel-close").focus();
  refreshRoom(room);
  loadMembers(room);
}

async function loadMembers(room) {
  try {
    const data = await api("GET", `/api/rooms/${encodeURIComponent(room)}/members`);
    if (!shown || shown.room !== room) return;
    shown.members = new Map(data.members.map((user) => [user, data.roles[user] || "member"]));
    renderPage();
  } catch (error) {
    report(describeError(error.code), error.code);
  }
}

// Sends one room request; `done` is what the page says when it is answered.
function act(frame, done) {
  if (!state.connected) return report(describeError("offline"), "offline");
  frame.ref = "a:" + nextRef++;
  asked.set(frame.ref, done);
  report("Working…");
  send(frame);
}

function answered(event) {
  if (!event.ref || !asked.has(event.ref)) return;
  report(asked.get(event.ref));
  asked.delete(event.ref);
}

function report(text, code = "") {
  const line = $("room-status");
  if (!line) return;
  line.textContent = text;
  line.classList.toggle("error", code !== "");
  line.dataset.code = code;
}

function section(title, ...children) {
  const part = el("section", "panel-section");
  part.append(el("h3", "", title), ...children);
  return part;
}

// The whole page from the room's entry and the members last loaded; the status line survives,
// and so do the focus and what is typed in the focused field (a live change redraws it).
function renderPage() {
  const page = $("room-page");
  if (!page || !shown) return;
  const focused = page.contains(document.activeElement) ? document.activeElement : null;
  const row = focused && focused.closest("li[data-user]");
  const again = focused && { id: focused.id, user: row && row.dataset.user, kind: focused.className };
  const typed = focused && focused.id && "value" in focused ? focused.value : null;
  // The selection too: a redraw between selecting a field's text and typing over it must not
  // turn the typing into an append.
  const selection = typed !== null && typeof focused.selectionStart === "number"
    ? [focused.selectionStart, focused.selectionEnd] : null;
  drawPage(page);
  if (!again) return;
  const target = again.id
    ? $(again.id)
    : again.user && [...page.querySelectorAll("li[data-user] button")].find(
        (node) => node.closest("li").dataset.user === again.user && node.className === again.kind,
      );
  if (!target) return page.querySelector("button, input, select")?.focus();
  if (typed !== null) target.value = typed;
  target.focus();
  if (selection && typeof target.setSelectionRange === "function") target.setSelectionRange(...selection);
}

function drawPage(page) {
  const room = roomEntry(shown.room);
  const status = $("room-status") || el("p", "form-status");
  status.id = "room-status";
  status.setAttribute("role", "status");
  const manage = RANK[room.role] >= 1;
  const about = room.visibility === "private"
    ? "Private room: only the people invited see it."
    : "Public room: anyone can find and join it.";
  const parts = [section("About", el("p", "muted", about), manage ? settingsForm(room) : settingsText(room))];
  parts.push(status, section("Members", memberList(room)));
  if (manage || (room.visibility === "public" && room.role)) parts.push(nameForm("invite", room));
  if (manage) parts.push(nameForm("unban", room));
  page.replaceChildren(...parts);
}

function settingsText(room) {
  const box = el("div", "room-settings");
  box.append(
    el("p", "", room.topic ? "Topic: " + room.topic : "No topic."),
    el("p", "", room.slow_mode ? `Slow mode: one message every ${duration(room.slow_mode)}.` : "Slow mode: off."),
  );
  return box;
}

function settingsForm(room) {
  const form = el("form", "panel-form");
  form.id = "room-settings-form";
  const topic = el("input");
  Object.assign(topic, { id: "room-topic-input", type: "text", maxLength: 300, value: room.topic || "" });
  const slow = el("select");
  slow.id = "room-slow-mode";
  const choices = new Set([...SLOW_CHOICES, room.slow_mode || 0]);
  for (const seconds of [...choices].sort((a, b) => a - b)) {
    const option = el("option", "", seconds ? "one message every " + duration(seconds) : "off");
    option.value = String(seconds);
    option.selected = seconds === (room.slow_mode || 0);
    slow.append(option);
  }
  const save = el("button", "", "Save");
  Object.assign(save, { id: "room-settings-save", type: "submit" });
  form.append(field("Topic", topic), field("Slow mode", slow), save);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const frame = { type: "room_update", room: room.name, topic: topic.value, slow_mode: Number(slow.value) };
    act(frame, "Saved.");
  });
  return form;
}

function field(label, input) {
  const wrap = el("label", "field", label);
  wrap.append(input);
  return wrap;
}

function memberList(room) {
  const list = el("ul", "member-list");
  list.id = "member-list";
  const members = [...shown.members].sort(([a, ra], [b, rb]) => RANK[rb] - RANK[ra] || (a < b ? -1 : 1));
  for (const [user, role] of members) list.append(memberItem(room, user, role));
  if (!members.length) list.append(el("li", "muted", "loading…"));
  return list;
}

function memberItem(room, user, role) {
  const item = el("li", "member");
  item.dataset.user = user;
  item.dataset.role = role;
  const name = el("span", "member-name", displayName(user));
  name.title = user;
  const head = el("span", "member-head");
  head.append(name);
  if (role !== "member") head.append(el("span", "role role-" + role, role));
  if (user === state.user) head.append(el("span", "muted", "(you)"));
  const actions = el("span", "member-actions");
  for (const action of allowedActions(room, user, role)) actions.append(action);
  item.append(head, actions);
  return item;
}

// Only what the server would take from this user (docs/protocol.md *Who may*).
function allowedActions(room, user, role) {
  const mine = RANK[room.role] ?? -1;
  if (user === state.user || mine < 1) return [];
  const target = { room: room.name, user };
  const actions = [];
  const owner = room.role === "owner";
  if (owner) {
    const promote = role === "admin" ? "member" : "admin";
    const label = role === "admin" ? "Make member" : "Make admin";
    actions.push(button("set-role", label, () =>
      act({ type: "set_role", ...target, role: promote }, `${user} is now ${promote === "admin" ? "an admin" : "a member"}.`),
    ));
    actions.push(button("transfer", "Make owner", () => transfer(room.name, user)));
  }
  if (owner || RANK[role] === 0) {
    actions.push(button("kick", "Kick", () => act({ type: "kick", ...target }, `${user} was removed from the room.`)));
    actions.push(button("ban danger", "Ban", () => ban(room.name, user)));
  }
  return actions;
}

async function transfer(room, user) {
  const question = `Make ${user} the owner of ${room}? You become an admin, and only ${user} can give it back.`;
  if (await confirmDialog(question, "Make owner")) {
    act({ type: "transfer", room, user }, `${user} now owns the room.`);
  }
}

async function ban(room, user) {
  if (await confirmDialog(`Ban ${user} from ${room}? They leave it and cannot come back until unbanned.`, "Ban")) {
    act({ type: "ban", room, user }, `${user} is banned from the room.`);
  }
}

// A name and a button: invite (a member at once) or unban (they may then join or be invited).
function nameForm(kind, room) {
  const form = el("form", "name-form");
  form.id = kind + "-form";
  const name = el("input");
  Object.assign(name, { id: kind + "-name", type: "text", maxLength: 64, required: true, autocomplete: "off" });
  name.placeholder = "user name";
  name.setAttribute("aria-label", kind === "invite" ? "Name of the person to invite" : "Name of the person to unban");
  const go = el("button", kind === "invite" ? "" : "secondary", kind === "invite" ? "Invite" : "Unban");
  go.type = "submit";
  const row = el("div", "create-row");
  row.append(name, go);
  form.append(row);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const user = name.value.trim();
    const done = kind === "invite" ? `${user} is now a member.` : `${user} may come back now.`;
    act({ type: kind, room: room.name, user }, done);
    name.value = "";
  });
  return section(kind === "invite" ? "Invite someone" : "Unban someone", form);
}
