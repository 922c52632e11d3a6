// hibiki web client: plain ES modules, no build step, no network beyond this server. This file
// only wires the modules together; each one says what it keeps and why.
import { $ } from "./dom.js";
import { clearError, showError } from "./errors.js";
import { connect, dropConnection, hasSocket, on, unclaimed } from "./connection.js";
import { installAccount } from "./account.js";
import { installAuth } from "./auth.js";
import { installComposer } from "./composer.js";
import { installMessageActions } from "./message_actions.js";
import { installMessages } from "./messages.js";
import { installPanel } from "./panel.js";
import { drawerOpen, installRooms, setDrawer } from "./rooms.js";
import { installRoomAdmin } from "./room_admin.js";
import { installSearch } from "./search.js";
import { installTyping } from "./typing.js";
import { installUnread } from "./unread.js";
import { state } from "./state.js";

function installShell() {
  $("error-dismiss").addEventListener("click", clearError);
  // An error no module claimed (by its ref) is shown in the bar.
  on("error", (error) => unclaimed(error) && showError(error.code));
  $("chat-view").addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (drawerOpen()) {
      setDrawer(false);
      $("rooms-toggle").focus();
    } else if (!$("error-bar").hidden) {
      clearError();
    }
  });
  window.addEventListener("online", () => {
    if (!state.connected && state.token) {
      dropConnection(null, "");
      connect();
    }
  });
  window.addEventListener("offline", () => {
    if (hasSocket()) dropConnection(null, "offline");
  });
}

// Order matters where handlers of one event build on each other: rooms before messages before
// the features that read them; auth last, as it may enter the chat at once.
installShell();
installRooms();
installMessages();
installComposer();
installTyping();
installMessageActions();
installUnread();
installPanel();
installAccount();
installSearch();
installRoomAdmin();
installAuth();
