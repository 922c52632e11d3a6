// A modal question (the browser's <dialog>: focus stays inside, Escape cancels), for what cannot
// be undone. Never window.confirm: it blocks the page and the tests' browser alike.
import { $ } from "./dom.js";

// Resolves true if the user chose `confirmLabel`, false for Cancel or Escape.
export function confirmDialog(question, confirmLabel) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = question;
  $("confirm-ok").textContent = confirmLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-ok").focus();
  });
}
