// The side panel: one container beside the room (over it, on a phone) for one page at a time —
// the account page now; room settings and members later. Escape or × closes it, and focus goes
// back to the control that opened it.
import { $ } from "./dom.js";
import { onReset } from "./state.js";

let opener = null;
let closeHook = null;

onReset(() => closePanel(false));

// Shows `body` under `title`; `onClose()` runs when the panel closes or shows another page.
export function openPanel(name, title, body, from, onClose = null) {
  if (closeHook) closeHook();
  opener = from;
  closeHook = onClose;
  const panel = $("side-panel");
  panel.dataset.page = name;
  $("side-panel-title").textContent = title;
  $("side-panel-body").replaceChildren(body);
  panel.hidden = false;
  $("chat-view").classList.add("panel-open");
  const first = body.querySelector("input, button, textarea, select");
  (first || $("side-panel-close")).focus();
}

export function panelOpen(name) {
  return !$("side-panel").hidden && (!name || $("side-panel").dataset.page === name);
}

export function closePanel(refocus = true) {
  if ($("side-panel").hidden) return;
  $("side-panel").hidden = true;
  $("chat-view").classList.remove("panel-open");
  $("side-panel-body").replaceChildren();
  if (closeHook) closeHook();
  closeHook = null;
  if (refocus && opener && opener.isConnected) opener.focus();
  opener = null;
}

export function installPanel() {
  $("side-panel-close").addEventListener("click", () => closePanel());
  $("side-panel").addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.stopPropagation(); // the panel's, not the drawer's or the error bar's
    closePanel();
  });
}
