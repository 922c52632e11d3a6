// Search (docs/protocol.md `search`, `search_results`), in the side panel: words over every room
// the user is in, or the open room only; newest first, each result with its room, author, time
// and text, the matched words marked by splitting the text into text nodes around <mark>s (never
// HTML); "More results" pages with the keyset cursor; a result opens its room at the message.
// "/" opens it from anywhere but a text field; Escape closes it.
import { $, button, el, timeElement } from "./dom.js";
import { describeError } from "./errors.js";
import { claimRefs, on, send } from "./connection.js";
import { revealMessage } from "./messages.js";
import { closePanel, openPanel, panelOpen } from "./panel.js";
import { displayName } from "./profiles.js";
import { onRoomOpened } from "./rooms.js";
import { onReset, state } from "./state.js";

const MAX_QUERY = 200; // characters, as the server counts them
const PAGE = 20;
const SHOWN_CHARS = 280; // of a long message: a window around its first match
const PHONE = window.matchMedia("(max-width: 700px)");
const WORD = /[\p{L}\p{N}]+/gu; // the server's notion of a word

let asking = null; // {frame, query, room, more}: the request not answered yet
let last = null; // {query, room, next}: the latest answer, for "More results"
let pattern = null; // the words of the shown results' query, as one RegExp
let nextRef = 1;

onReset(() => {
  asking = null;
  last = null;
});

export function installSearch() {
  claimRefs("q:");
  on("search_results", onResults);
  on("error", (error) => {
    if (!asking || error.ref !== asking.frame.ref) return;
    asking = null;
    report(describeError(error.code), error.code);
  });
  on("welcome", () => asking && send(asking.frame)); // lost with the old connection
  onRoomOpened(renderScope);
  $("search-button").addEventListener("click", openSearch);
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest && event.target.closest("input, textarea, select, dialog");
    if (event.key === "/" && !typing && !$("chat-view").hidden) {
      event.preventDefault();
      openSearch();
    }
  });
}

function openSearch() {
  if (panelOpen("search")) return $("search-query").focus();
  openPanel("search", "Search", searchPage(), $("search-button"), () =>
    $("search-button").setAttribute("aria-expanded", "false"),
  );
  $("search-button").setAttribute("aria-expanded", "true");
}

function searchPage() {
  const form = el("form", "search-form");
  form.setAttribute("role", "search");
  const input = el("input");
  Object.assign(input, { id: "search-query", type: "search", placeholder: "Words to find" });
  input.autocomplete = "off";
  input.setAttribute("aria-label", "Search messages");
  const go = el("button", "", "Search");
  go.type = "submit";
  form.append(input, go);
  const scope = el("label", "search-scope");
  scope.id = "search-scope";
  const only = el("input");
  Object.assign(only, { id: "search-this-room", type: "checkbox" });
  scope.append(only, el("span", "", ""));
  const line = el("p", "form-status");
  line.id = "search-status";
  line.setAttribute("role", "status");
  const list = el("ol", "search-results");
  list.id = "search-results";
  const more = button("search-more secondary", "More results", () => ask(true));
  more.id = "search-more";
  more.hidden = true;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(false);
  });
  only.addEventListener("change", () => input.value.trim() && ask(false));
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" && list.firstChild) {
      event.preventDefault();
      list.querySelector("button").focus();
    }
  });
  list.addEventListener("keydown", moveAmongResults);
  const page = el("div", "search");
  page.append(form, scope, line, list, more);
  queueMicrotask(renderScope);
  return page;
}

function renderScope() {
  const scope = $("search-scope");
  if (!scope) return;
  scope.hidden = !state.current;
  scope.querySelector("span").textContent = " Only in " + (state.current || "");
}

function moveAmongResults(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const hits = [...$("search-results").querySelectorAll("button")];
  const at = hits.indexOf(document.activeElement);
  event.preventDefault();
  if (event.key === "ArrowUp" && at <= 0) return $("search-query").focus();
  hits[Math.min(hits.length - 1, at + (event.key === "ArrowDown" ? 1 : -1))].focus();
}

// A line above the results; `code` (an error's) stays in data-code, never in the text.
function report(text, code = "") {
  const line = $("search-status");
  if (!line) return;
  line.textContent = text;
  line.classList.toggle("error", code !== "");
  line.dataset.code = code;
}

function ask(more) {
  const query = more ? last.query : $("search-query").value;
  if (!more) {
    $("search-results").replaceChildren();
    $("search-more").hidden = true;
  }
  // The server's own limits, checked here too so a refusal costs no request.
  if (!(query.match(WORD) || []).length) return report(describeError("query_empty"), "query_empty");
  if (query.length > MAX_QUERY) return report(describeError("query_too_long"), "query_too_long");
  if (!state.connected) return report(describeError("offline"), "offline");
  const room = more ? last.room : $("search-this-room").checked ? state.current : null;
  const frame = { type: "search", query, limit: PAGE, ref: "q:" + nextRef++ };
  if (room) frame.room = room;
  if (more) frame.before = last.next;
  asking = { frame, query, room, more };
  report("Searching…");
  send(frame);
}

function onResults(event) {
  if (!asking || event.ref !== asking.frame.ref || !$("search-results")) return;
  const { query, room, more } = asking;
  asking = null;
  last = { query, room, next: event.next };
  pattern = matcher(query);
  const list = $("search-results");
  for (const message of event.results) list.append(resultElement(message));
  $("search-more").hidden = !event.next;
  const where = room ? "in " + room : "in your rooms";
  const count = list.children.length;
  if (!count) return report(`No message ${where} has “${query}”.`);
  const found = count === 1 ? "1 message" : `${count} messages`;
  report(`${found} ${where}, newest first${event.next ? "; more below" : ""}.`);
  if (more) list.children[count - event.results.length]?.querySelector("button").focus();
}

// Every word of the query, where a word of the text starts; the last one as a prefix (as the
// server matches it), the others whole.
function matcher(query) {
  const words = (query.normalize("NFC").match(WORD) || []).map((word) => word.toLowerCase());
  if (!words.length) return null;
  const start = "(?<![\\p{L}\\p{N}])";
  const whole = words.slice(0, -1).map((word) => `${start}${word}(?![\\p{L}\\p{N}])`);
  const prefix = `${start}${words[words.length - 1]}[\\p{L}\\p{N}]*`;
  return new RegExp([...whole, prefix].join("|"), "giu");
}

function resultElement(message) {
  const item = el("li", "search-result");
  const hit = button("search-hit", undefined, () => {
    if (PHONE.matches) closePanel(false); // the panel covers the room on a phone
    revealMessage(message.room, message.seq);
  });
  Object.assign(hit.dataset, { room: message.room, id: String(message.id), seq: String(message.seq) });
  const head = el("span", "hit-head");
  const when = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  head.append(
    el("span", "hit-room", message.room),
    el("span", "hit-user", displayName(message.user)),
    timeElement(new Date(message.ts), when),
  );
  hit.append(head, markedText(message.text));
  item.append(hit);
  return item;
}

function markedText(full) {
  const text = full.normalize("NFC");
  const box = el("span", "hit-text");
  const first = pattern ? text.search(pattern) : -1;
  const from = first > SHOWN_CHARS / 3 ? first - 40 : 0;
  const shown = text.slice(from, from + SHOWN_CHARS);
  if (from > 0) box.append("…");
  let at = 0;
  for (const match of pattern ? shown.matchAll(pattern) : []) {
    box.append(shown.slice(at, match.index), el("mark", "", match[0]));
    at = match.index + match[0].length;
  }
  box.append(shown.slice(at));
  if (from + SHOWN_CHARS < text.length) box.append("…");
  return box;
}
