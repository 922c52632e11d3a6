// The account page, in the side panel: the display name shown in messages (PATCH /api/me), a
// password change (POST /api/password, which logs out every other session), and the user's
// sessions (GET /api/sessions): device, last use, this one marked; revoke one, or all others.
import { api } from "./api.js";
import { $, button, el } from "./dom.js";
import { describeError } from "./errors.js";
import { logOut } from "./auth.js";
import { openPanel, panelOpen } from "./panel.js";
import { displayName, learn } from "./profiles.js";
import { state } from "./state.js";

export function installAccount() {
  $("account-button").addEventListener("click", () => {
    if (panelOpen("account")) return;
    openPanel("account", "Account", accountPage(), $("account-button"), () =>
      $("account-button").setAttribute("aria-expanded", "false"),
    );
    $("account-button").setAttribute("aria-expanded", "true");
    loadSessions();
  });
}

function section(title, ...children) {
  const part = el("section", "panel-section");
  part.append(el("h3", "", title), ...children);
  return part;
}

function field(label, input) {
  const wrap = el("label", "field", label);
  wrap.append(input);
  return wrap;
}

function input(id, type, attributes = {}) {
  const node = el("input");
  node.id = id;
  node.type = type;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// A line under a form saying how it went: `ok` false reads as an error.
function report(id, text, ok, code = "") {
  const line = $(id);
  line.textContent = text;
  line.classList.toggle("error", !ok);
  line.dataset.code = code;
}

function accountPage() {
  const page = el("div", "account");
  page.append(profileSection(), passwordSection(), sessionsSection());
  return page;
}

function profileSection() {
  const form = el("form", "panel-form");
  form.id = "profile-form";
  const name = input("display-name", "text", { maxlength: "64", autocomplete: "nickname" });
  name.value = displayName(state.user) === state.user ? "" : displayName(state.user);
  name.placeholder = state.user;
  const save = el("button", "", "Save");
  save.type = "submit";
  const status = el("p", "form-status");
  status.id = "profile-status";
  status.setAttribute("role", "status");
  form.append(field("Display name", name), save, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await api("PATCH", "/api/me", { display_name: name.value });
      learn(state.user, answer.user.display_name);
      const shown = answer.user.display_name || state.user;
      report("profile-status", `Saved: your messages show “${shown}”.`, true);
    } catch (error) {
      report("profile-status", profileError(error), false, error.code);
    }
  });
  return section("Profile", el("p", "muted", "Logged in as " + state.user), form);
}

function profileError(error) {
  if (error.code !== "bad_field") return describeError(error.code);
  return "That name is not accepted: at most 64 characters, on one line, with no control characters.";
}

function passwordSection() {
  const form = el("form", "panel-form");
  form.id = "password-form";
  const current = input("old-password", "password", { autocomplete: "current-password", required: "" });
  const fresh = input("new-password", "password", {
    autocomplete: "new-password",
    required: "",
    minlength: "8",
    maxlength: "256",
  });
  const again = input("new-password-again", "password", { autocomplete: "new-password", required: "" });
  const change = el("button", "", "Change password");
  change.type = "submit";
  const status = el("p", "form-status");
  status.id = "password-status";
  status.setAttribute("role", "status");
  form.append(field("Current password", current), field("New password", fresh));
  form.append(field("New password again", again), change, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (fresh.value !== again.value) return report("password-status", describeError("passwords_differ"), false, "passwords_differ");
    try {
      const answer = await api("POST", "/api/password", { old: current.value, new: fresh.value });
      form.reset();
      const others = answer.revoked === 1 ? "1 other session was" : `${answer.revoked} other sessions were`;
      report("password-status", `Password changed. ${others} logged out.`, true);
      loadSessions();
    } catch (error) {
      const text = error.code === "bad_credentials" ? "The current password is wrong: nothing was changed." : describeError(error.code);
      report("password-status", text, false, error.code);
    }
  });
  return section("Password", form);
}

function sessionsSection() {
  const list = el("ul", "session-list");
  list.id = "session-list";
  const others = button("", "Log out all other sessions", revokeOthers);
  others.id = "revoke-others";
  const status = el("p", "form-status");
  status.id = "sessions-status";
  status.setAttribute("role", "status");
  return section("Sessions", list, others, status);
}

async function loadSessions() {
  try {
    const { sessions } = await api("GET", "/api/sessions");
    if (!panelOpen("account")) return;
    $("session-list").replaceChildren(...sessions.map(sessionItem));
    $("revoke-others").hidden = !sessions.some((session) => !session.current);
  } catch (error) {
    if (panelOpen("account")) report("sessions-status", describeError(error.code), false, error.code);
  }
}

function sessionItem(session) {
  const item = el("li", session.current ? "session current" : "session");
  item.dataset.id = session.id;
  const device = el("span", "device", describeDevice(session.device));
  device.title = session.device || "";
  const head = el("div", "session-head");
  head.append(device);
  if (session.current) head.append(el("span", "this-device", "this device"));
  const when = session.last_used_at || session.created_at;
  const used = el("span", "last-used muted", when ? "last used " + new Date(when).toLocaleString() : "last use not recorded");
  const action = session.current
    ? button("", "Log out", () => logOut(null))
    : button("revoke", "Revoke", () => revoke(session));
  item.append(head, used, action);
  return item;
}

// "Chrome on Linux" for a User-Agent string; a label the user gave at login is kept as it is.
export function describeDevice(device) {
  if (!device) return "unknown device";
  if (!device.startsWith("Mozilla/")) return device;
  const browsers = [["Edg/", "Edge"], ["Firefox/", "Firefox"], ["Chrome/", "Chrome"], ["Safari/", "Safari"]];
  const systems = [["Android", "Android"], ["iPhone", "iPhone"], ["iPad", "iPad"], ["Windows", "Windows"], ["Mac OS", "macOS"], ["Linux", "Linux"]];
  const browser = browsers.find(([mark]) => device.includes(mark));
  const system = systems.find(([mark]) => device.includes(mark));
  return `${browser ? browser[1] : "a browser"} on ${system ? system[1] : "an unknown system"}`;
}

async function revoke(session) {
  try {
    await api("DELETE", "/api/sessions/" + encodeURIComponent(session.id));
    report("sessions-status", `Logged out ${describeDevice(session.device)}.`, true);
  } catch (error) {
    report("sessions-status", describeError(error.code), false, error.code);
  }
  loadSessions();
}

async function revokeOthers() {
  try {
    const answer = await api("DELETE", "/api/sessions");
    const others = answer.revoked === 1 ? "1 other session" : `${answer.revoked} other sessions`;
    report("sessions-status", `Logged out ${others}.`, true);
  } catch (error) {
    report("sessions-status", describeError(error.code), false, error.code);
  }
  loadSessions();
}
