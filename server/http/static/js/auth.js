// Logging in and out. The token lives in memory and sessionStorage; it travels only in the
// `hello` frame and in Authorization headers, never in a URL. A connection the server closes
// with 4001 (the session was revoked, the password changed elsewhere, or the token expired)
// brings back the login screen with a sentence saying so.
import { api } from "./api.js";
import { $ } from "./dom.js";
import { describeError, showError } from "./errors.js";
import { connect, dropConnection, on, onUnauthenticated } from "./connection.js";
import { learn } from "./profiles.js";
import { refreshRooms } from "./rooms.js";
import { resetState, state, TOKEN_KEY, USER_KEY } from "./state.js";

export function installAuth() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    logIn(false);
  });
  $("register-button").addEventListener("click", () => logIn(true));
  $("logout-button").addEventListener("click", () => logOut(null));
  on("error", (error) => {
    if (error.ref === "hello" && error.code === "bad_token") logOut("session_expired");
  });
  onUnauthenticated((code, reason) => {
    logOut(reason === "token expired" ? "session_expired" : "session_revoked");
  });
  state.token = sessionStorage.getItem(TOKEN_KEY);
  state.user = sessionStorage.getItem(USER_KEY);
  if (state.token && state.user) enterChat();
}

async function logIn(register) {
  const form = $("login-form");
  if (!form.reportValidity()) return;
  $("login-error").textContent = "";
  const name = $("login-name").value.trim();
  const password = $("login-password").value;
  try {
    const session = await api("POST", register ? "/api/register" : "/api/login", {
      name,
      password,
    });
    state.token = session.token;
    state.user = session.user.name;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    sessionStorage.setItem(USER_KEY, state.user);
    $("login-password").value = "";
    await enterChat();
  } catch (error) {
    $("login-error").textContent = describeError(error.code);
    $("login-error").dataset.code = error.code;
  }
}

async function enterChat() {
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").textContent = state.user;
  try {
    await refreshRooms(true);
  } catch (error) {
    if (error.status === 401) return logOut("session_expired");
    showError(error.code);
  }
  connect();
  api("GET", "/api/me")
    .then((me) => learn(me.user.name, me.user.display_name))
    .catch(() => null);
}

// Back to the login screen; `code` (a key of ERROR_TEXT) says why, when the user did not ask.
export async function logOut(code) {
  const token = state.token;
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  dropConnection(1000, "logged out", false);
  if (token && !code) {
    await fetch("/api/logout", {
      method: "POST",
      headers: { Authorization: "Bearer " + token },
      credentials: "omit",
    }).catch(() => null);
  }
  resetState();
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = code ? describeError(code) : "";
  $("login-error").dataset.code = code || "";
}
