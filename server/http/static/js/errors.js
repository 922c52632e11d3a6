// What people read: every error code gets a sentence, the code itself is never shown (it stays in
// a data-code attribute, for bug reports and tests).
import { $, atBottom, scrollToBottom } from "./dom.js";

// Every code of protocol.ErrorCode (docs/protocol.md), then this client's own. An unknown code
// reads like `internal`.
export const ERROR_TEXT = {
  bad_encoding: "The server could not read what this page sent. Reload the page.",
  bad_json: "The server could not read what this page sent. Reload the page.",
  not_an_object: "The server could not read what this page sent. Reload the page.",
  unknown_type: "The server does not know that request. Reload the page.",
  missing_field: "Something this page sent was incomplete. Reload the page.",
  unknown_field: "Something this page sent was not understood. Reload the page.",
  bad_field: "One of the values is not accepted: names are 1 to 32 letters, digits, _ . or -; room names are lowercase; passwords have at least 8 characters.",
  text_empty: "An empty message is not sent.",
  text_too_long: "That message is too long (at most 4000 characters): it was not sent, and is back in the box to shorten.",
  text_invalid: "That message holds a character that cannot be sent (a control character): it was not sent.",
  not_authenticated: "You are not logged in yet: log in again.",
  already_authenticated: "This page tried to log in twice. Reload the page.",
  bad_token: "Your session has expired: log in again.",
  no_such_room: "There is no room by that name.",
  not_member: "You are not a member of that room (any more): join it to write there.",
  rate_limited: "You are sending too fast: the message was not sent yet. Click it to try again.",
  bad_credentials: "Wrong name or password.",
  name_taken: "That name is taken: pick another one.",
  not_found: "That does not exist (any more).",
  method_not_allowed: "The server refused that request. Reload the page.",
  too_large: "That is too large for the server to take.",
  timeout: "The server waited too long for this page. Try again.",
  too_many_attempts: "Too many attempts: wait a minute, then try again.",
  unavailable: "The server could not store that right now. Click the message to try again.",
  internal: "Something went wrong on the server. Try again in a moment.",
  no_such_message: "That message does not exist (any more).",
  not_author: "Only its author can change that message.",
  message_deleted: "That message was deleted.",
  query_empty: "Type a word to search for.",
  query_too_long: "That search is too long (200 characters at most).",
  forbidden: "Only the room's owner or an admin can do that.",
  banned: "That person is banned from this room.",
  banned_join: "You are banned from that room: an admin or its owner can unban you.",
  no_such_user: "There is nobody by that name.",
  user_not_member: "That person is not a member of this room.",
  owner_must_transfer: "You own this room: give it to another member before you leave.",
  slow_mode: "This room is in slow mode: wait a little before your next message. Your text is still in the box.",
  bad_role: "That is not a role a member can have.",
  // This client's own codes.
  no_room: "Pick a room (or create one) first: nothing was sent, your text is still in the box.",
  offline: "The server cannot be reached. Check your connection and try again.",
  session_revoked: "You were logged out: this session was ended from another device, or the password was changed. Log in again.",
  session_expired: "Your session has expired: log in again.",
  passwords_differ: "The two new passwords are not the same: nothing was changed.",
};

export function describeError(code) {
  return ERROR_TEXT[code] || ERROR_TEXT.internal;
}

// The bar above the composer; it takes room from the list, so the newest message stays in view.
export function showError(code) {
  showNotice(describeError(code), code);
}

// The bar with a sentence made here (it names people or rooms); `code` goes to data-code.
export function showNotice(text, code) {
  const stick = atBottom();
  $("error-text").textContent = text;
  $("error-bar").dataset.code = code;
  $("error-bar").hidden = false;
  if (stick) scrollToBottom();
}

export function clearError() {
  $("error-bar").hidden = true;
  $("error-text").textContent = "";
}
