// Display names (PATCH /api/me, GET /api/users/{name}): a message shows its author's display name
// when they set one, their user name otherwise (and as its tooltip). Each author is looked up
// once per page; there is no event for a changed name, so others' names are as of that look-up.
import { api } from "./api.js";
import { el } from "./dom.js";
import { onReset } from "./state.js";

const names = new Map(); // user -> display name, or null (none set, or the look-up failed)
const asked = new Set();

onReset(() => {
  names.clear();
  asked.clear();
});

export function displayName(user) {
  return names.get(user) || user;
}

// The author's name as shown in a message; filled in when the look-up answers.
export function authorElement(user) {
  const author = el("span", "user", displayName(user));
  author.dataset.user = user;
  author.title = user;
  if (!asked.has(user)) lookUp(user);
  return author;
}

async function lookUp(user) {
  asked.add(user);
  try {
    const profile = await api("GET", "/api/users/" + encodeURIComponent(user));
    learn(user, profile.display_name);
  } catch {
    // Not found or offline: the user name is shown, which is what the message carries anyway.
  }
}

// Records `user`'s display name (null: none) and updates every author shown with it.
export function learn(user, display) {
  names.set(user, display || null);
  asked.add(user);
  for (const author of document.querySelectorAll(".user[data-user]")) {
    if (author.dataset.user === user) author.textContent = displayName(user);
  }
}
