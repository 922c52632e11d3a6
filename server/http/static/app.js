// hibiki web client: plain JavaScript, no build step, no network beyond this server.
//
// Rules it keeps (docs/protocol.md):
// - Text from the server is only ever rendered with textContent, never parsed as HTML.
// - The token lives in memory and sessionStorage; it travels only in the `hello` frame and in
//   Authorization headers, never in a URL.
// - lastSeq[room] is the highest seq received; `hello` resumes from it after any reconnect, and
//   a message whose seq is already shown is ignored, so nothing is lost or shown twice.
// - A message is kept (shown as "sending…") until its own echo arrives; after a reconnect it is
//   sent again with the same client_id, which the server stores at most once.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "hibiki.token";
  const USER_KEY = "hibiki.user";
  const HISTORY_PAGE = 50;
  const BACKOFF_INITIAL_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const TYPING_EVERY_MS = 3000;
  const TYPING_SHOWN_MS = 4000;
  const PING_EVERY_MS = 15000;
  const RETRYABLE = new Set(["rate_limited", "unavailable"]);
  const GROUP_WITHIN_MS = 5 * 60 * 1000; // one author's messages closer than this form a group
  // What people read for each error code: every code of protocol.ErrorCode (docs/protocol.md),
  // then this client's own. Codes are never shown; an unknown one reads like `internal`.
  const ERROR_TEXT = {
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
    // This client's own codes.
    no_room: "Pick a room (or create one) first: nothing was sent, your text is still in the box.",
    offline: "The server cannot be reached. Check your connection and try again.",
  };

  const state = {
    token: null,
    user: null,
    ws: null, // the current WebSocket; events from any older one are ignored
    connected: false, // welcome received on `ws`
    welcomed: false, // a welcome came before, on an earlier connection
    stuck: true, // the message list is scrolled to its end: keep it there
    attempt: 0,
    reconnectTimer: 0,
    rooms: new Map(), // name -> {name, member, unread}
    stores: new Map(), // room -> {bySeq: Map, order: [seq], hasMore: null|bool, loading}
    lastSeq: new Map(), // room -> highest seq received
    online: new Map(), // room -> Set of user names
    typing: new Map(), // room -> Map user -> timer
    pending: new Map(), // client_id -> {room, text, clientId, error}
    replies: new Map(), // ref -> {frame, callback}
    shown: new Map(), // seq -> <li> of the current room
    current: null,
    nextRef: 1,
    lastTypingSent: 0,
    pingTimer: 0,
    pingSentAt: 0,
  };

  // Small DOM helpers: textContent only. ----------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setStatus(stateName, text) {
    const status = $("status");
    status.dataset.state = stateName;
    status.textContent = text;
  }

  // A sentence for people; the code stays in a data attribute (for bug reports and tests).
  function describeError(code) {
    return ERROR_TEXT[code] || ERROR_TEXT.internal;
  }

  function showError(code) {
    const stick = atBottom();
    $("error-text").textContent = describeError(code);
    $("error-bar").dataset.code = code;
    $("error-bar").hidden = false;
    if (stick) scrollToBottom(); // the bar takes room from the list: keep the newest in view
  }

  function clearError() {
    $("error-bar").hidden = true;
    $("error-text").textContent = "";
  }

  // HTTP API ---------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      const error = new Error("network");
      error.code = "offline";
      throw error;
    }
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const detail = (data && data.error) || {};
      const error = new Error(detail.message || response.statusText);
      error.code = detail.code || "http_" + response.status;
      error.status = response.status;
      throw error;
    }
    return data;
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
      if (error.status === 401) return logOut("your session has expired: log in again");
      showError(error.code);
    }
    connect();
  }

  async function refreshRooms(baseline) {
    const data = await api("GET", "/api/rooms");
    for (const info of data.rooms) {
      const room = roomEntry(info.name);
      room.member = info.member;
      // Everything after this moment is delivered live or on resume; older is history.
      if (baseline && info.member && !state.lastSeq.has(info.name)) {
        state.lastSeq.set(info.name, info.last_seq);
      }
    }
    renderRooms();
  }

  async function logOut(reason) {
    const token = state.token;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    dropConnection(1000, "logged out");
    if (token && !reason) {
      await fetch("/api/logout", {
        method: "POST",
        headers: { Authorization: "Bearer " + token },
        credentials: "omit",
      }).catch(() => null);
    }
    for (const key of ["rooms", "stores", "lastSeq", "online", "typing", "pending", "replies"]) {
      state[key].clear();
    }
    state.current = null;
    state.welcomed = false;
    setDrawer(false);
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    $("login-error").textContent = reason || "";
  }

  // The WebSocket ----------------------------------------------------------------------------
  function connect() {
    clearTimeout(state.reconnectTimer);
    if (state.ws || !state.token) return;
    setStatus("connecting", "connecting…");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws");
    state.ws = ws;
    ws.onopen = () => {
      if (state.ws !== ws) return;
      const hello = { type: "hello", token: state.token, ref: "hello" };
      if (state.lastSeq.size) hello.resume = Object.fromEntries(state.lastSeq);
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (message) => {
      if (state.ws !== ws) return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      onEvent(event);
    };
    ws.onclose = (close) => {
      if (state.ws === ws) dropConnection(close.code, close.reason);
    };
  }

  function dropConnection(code, reason) {
    const ws = state.ws;
    state.ws = null;
    state.connected = false;
    clearInterval(state.pingTimer);
    clearTimeout(state.reconnectTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.close(1000);
    }
    if (!state.token) return;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** state.attempt);
    const delay = cap / 2 + (Math.random() * cap) / 2;
    state.attempt += 1;
    const why = code && code !== 1006 ? ` (${code}${reason ? ": " + reason : ""})` : "";
    setStatus("offline", `offline${why}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
  }

  // A request answered by one event (joined, left, history); re-sent after a reconnect.
  function request(frame, callback) {
    const ref = "r" + state.nextRef++;
    frame.ref = ref;
    state.replies.set(ref, { frame, callback });
    if (state.connected) send(frame);
  }

  function keepAlive() {
    // The browser answers the server's Pings itself; this notices a connection that silently died.
    clearInterval(state.pingTimer);
    state.pingSentAt = 0;
    state.pingTimer = setInterval(() => {
      if (state.pingSentAt) {
        dropConnection(null, "no answer"); // the last ping went unanswered for a whole period
      } else {
        state.pingSentAt = Date.now();
        send({ type: "ping", ref: "ping" });
      }
    }, PING_EVERY_MS);
  }

  // Events -----------------------------------------------------------------------------------
  function onEvent(event) {
    switch (event.type) {
      case "welcome":
        return onWelcome(event);
      case "message":
        return onMessage(event);
      case "ack":
        return onAck(event);
      case "joined": // without a ref: the user joined on another connection or over HTTP
        return event.ref ? answer(event) : joinedRoom(event, false);
      case "left":
        return event.ref ? answer(event) : leftRoom(event.room);
      case "history":
        return answer(event);
      case "presence":
        return onPresence(event);
      case "typing":
        return onTyping(event);
      case "resync":
        return onResync(event);
      case "room_created": // someone else made a public room: list it (joining is a click)
        roomEntry(event.room);
        return renderRooms();
      case "error":
        return onError(event);
      case "pong":
        state.pingSentAt = 0;
        return;
      default:
        return; // protocol v1 may add event types: ignore those we do not know
    }
  }

  function onWelcome(welcome) {
    state.connected = true;
    state.attempt = 0;
    setStatus("online", "connected");
    const rooms = new Set(welcome.rooms || []);
    for (const [name, room] of state.rooms) {
      if (room.member && !rooms.has(name)) {
        room.member = false;
        state.lastSeq.delete(name);
      }
    }
    for (const name of rooms) roomEntry(name).member = true;
    state.online.clear(); // refreshed by joining the current room again
    for (const { frame } of state.replies.values()) send(frame);
    for (const pending of state.pending.values()) if (!pending.error) transmit(pending);
    keepAlive();
    if (state.welcomed) refreshRooms(false).catch(() => null); // rooms made while away
    state.welcomed = true;
    if (state.current && rooms.has(state.current)) {
      joinRoom(state.current, false);
    } else {
      selectRoom([...rooms].sort()[0] || null);
    }
    renderRooms();
  }

  function onMessage(message) {
    const last = state.lastSeq.get(message.room);
    if (last === undefined || message.seq > last) state.lastSeq.set(message.room, message.seq);
    if (!addMessage(message)) return;
    if (message.client_id && message.user === state.user && state.pending.has(message.client_id)) {
      state.pending.delete(message.client_id);
      renderPending();
    }
    stopTyping(message.room, message.user);
    if (message.room !== state.current && message.user !== state.user) {
      roomEntry(message.room).unread += 1;
      renderRooms();
    }
  }

  function onAck(ack) {
    const pending = state.pending.get(ack.client_id);
    // Normally the message itself came first; if not (a duplicate ack after a reconnect), the
    // replayed message removes the pending entry when it arrives.
    if (pending && storeOf(ack.room).bySeq.has(ack.seq)) {
      state.pending.delete(ack.client_id);
      renderPending();
    }
  }

  function answer(event) {
    const reply = state.replies.get(event.ref);
    if (!reply) return;
    state.replies.delete(event.ref);
    reply.callback(event);
  }

  function onError(error) {
    const ref = error.ref || "";
    if (ref === "hello") {
      if (error.code === "bad_token") logOut("your session has expired: log in again");
      return; // not_member for a resumed room: welcome.rooms already said so
    }
    if (ref === "typing" || ref === "ping") return;
    if (ref.startsWith("s:")) {
      const pending = state.pending.get(ref.slice(2));
      if (pending) {
        if (RETRYABLE.has(error.code)) {
          pending.error = error.code;
        } else {
          state.pending.delete(pending.clientId);
          const input = $("composer-input");
          if (!input.value && pending.room === state.current) input.value = pending.text;
        }
        renderPending();
      }
    } else if (state.replies.has(ref)) {
      answer(error);
      return;
    }
    showError(error.code);
  }

  function onPresence(presence) {
    const users = state.online.get(presence.room);
    if (!users) return;
    if (presence.status === "online") users.add(presence.user);
    else users.delete(presence.user);
    if (presence.room === state.current) renderPresence();
  }

  function onTyping(typing) {
    if (typing.user === state.user) return;
    if (!state.typing.has(typing.room)) state.typing.set(typing.room, new Map());
    const users = state.typing.get(typing.room);
    clearTimeout(users.get(typing.user));
    users.set(
      typing.user,
      setTimeout(() => stopTyping(typing.room, typing.user), TYPING_SHOWN_MS),
    );
    if (typing.room === state.current) renderTyping();
  }

  function stopTyping(room, user) {
    const users = state.typing.get(room);
    if (!users || !users.has(user)) return;
    clearTimeout(users.get(user));
    users.delete(user);
    if (room === state.current) renderTyping();
  }

  function onResync(resync) {
    // Too much was missed to replay: start the room over from its latest page of history.
    state.lastSeq.set(resync.room, resync.last_seq);
    state.stores.delete(resync.room);
    if (resync.room === state.current) selectRoom(resync.room);
  }

  // Rooms ------------------------------------------------------------------------------------
  function roomEntry(name) {
    if (!state.rooms.has(name)) state.rooms.set(name, { name, member: false, unread: 0 });
    return state.rooms.get(name);
  }

  function storeOf(room) {
    if (!state.stores.has(room)) {
      state.stores.set(room, { bySeq: new Map(), order: [], hasMore: null, loading: false });
    }
    return state.stores.get(room);
  }

  function joinRoom(name, select) {
    request({ type: "join", room: name }, (event) => {
      if (event.type === "error") return showError(event.code);
      joinedRoom(event, select);
    });
  }

  function leaveRoom(name) {
    request({ type: "leave", room: name }, (event) => {
      if (event.type === "error") return showError(event.code);
      leftRoom(name);
    });
  }

  function joinedRoom(event, select) {
    const name = event.room;
    roomEntry(name).member = true;
    if (!state.lastSeq.has(name)) state.lastSeq.set(name, event.last_seq);
    state.online.set(name, new Set(event.online || []));
    if (select) selectRoom(name);
    else if (name === state.current) renderPresence();
    renderRooms();
  }

  function leftRoom(name) {
    roomEntry(name).member = false;
    state.lastSeq.delete(name);
    state.stores.delete(name);
    state.online.delete(name);
    if (state.current === name) {
      const next = [...state.rooms.values()].filter((room) => room.member).map((r) => r.name);
      selectRoom(next.sort()[0] || null);
    }
    renderRooms();
  }

  async function createRoom(name) {
    try {
      await api("POST", "/api/rooms", { name });
      joinRoom(name, true); // subscribes this connection too
      leaveDrawer();
      $("new-room-name").value = "";
    } catch (error) {
      showError(error.code);
    }
  }

  function selectRoom(name) {
    state.current = name;
    state.stuck = true;
    if (name) roomEntry(name).unread = 0;
    $("room-title").textContent = name || "No room selected";
    $("leave-button").hidden = !name;
    renderMessages();
    renderPending();
    renderPresence();
    renderTyping();
    renderRooms();
    if (!name) return;
    if (storeOf(name).hasMore === null) loadHistory(name);
    if (state.connected && !state.online.has(name)) joinRoom(name, false);
  }

  // Messages and history ---------------------------------------------------------------------
  function addMessage(message) {
    const store = storeOf(message.room);
    if (store.bySeq.has(message.seq)) return false;
    store.bySeq.set(message.seq, message);
    let index = store.order.length;
    while (index > 0 && store.order[index - 1] > message.seq) index -= 1;
    store.order.splice(index, 0, message.seq);
    if (message.room === state.current) {
      const stick = atBottom();
      const nextSeq = store.order[index + 1];
      const next = state.shown.get(nextSeq) || null;
      const item = messageElement(message, store.bySeq.get(store.order[index - 1]));
      state.shown.set(message.seq, item);
      $("message-list").insertBefore(item, next);
      // The next message may now continue this one's group, or no longer start a day.
      if (next) next.replaceWith(shownElement(store, nextSeq, message));
      if (stick && !next) scrollToBottom();
      if (store.order.length === 1) renderHistoryStatus(); // "no messages yet" is over
    }
    return true;
  }

  function shownElement(store, seq, previous) {
    const item = messageElement(store.bySeq.get(seq), previous);
    state.shown.set(seq, item);
    return item;
  }

  function dayLabel(when) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (when.toDateString() === today.toDateString()) return "Today";
    if (when.toDateString() === yesterday.toDateString()) return "Yesterday";
    const options = { weekday: "long", year: "numeric", month: "long", day: "numeric" };
    return when.toLocaleDateString([], options);
  }

  // One message as a list item: a day separator when it is the first of its (local) day, the
  // author's name when it starts a group, then its text (as text: line breaks kept by CSS) and
  // its time. `previous` is the message before it in the room, if any.
  function messageElement(message, previous) {
    const when = new Date(message.ts);
    const before = previous ? new Date(previous.ts) : null;
    const newDay = !before || before.toDateString() !== when.toDateString();
    const grouped =
      !newDay && previous.user === message.user && message.ts - previous.ts < GROUP_WITHIN_MS;
    const item = el("li", "msg" + (message.user === state.user ? " mine" : "") + (grouped ? " cont" : ""));
    item.dataset.seq = String(message.seq);
    if (newDay) {
      const day = el("p", "day", dayLabel(when));
      day.setAttribute("role", "separator");
      item.append(day);
    }
    item.append(bubble(grouped ? null : message.user, message.text, timeElement(when)));
    return item;
  }

  function timeElement(when) {
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    return time;
  }

  function bubble(user, text, aside) {
    const box = el("div", "bubble");
    if (user !== null) box.append(el("span", "user", user));
    box.append(el("span", "text", text), aside);
    return box;
  }

  function atBottom() {
    const box = $("messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  }

  function scrollToBottom() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  }

  function loadHistory(room) {
    const store = storeOf(room);
    if (store.loading || store.hasMore === false) return;
    store.loading = true;
    $("history-status").textContent = "loading history…";
    const frame = { type: "history", room, limit: HISTORY_PAGE };
    if (store.order.length) frame.before_seq = store.order[0];
    request(frame, (event) => {
      store.loading = false;
      if (event.type === "error") return showError(event.code);
      const box = $("messages");
      const fromBottom = box.scrollHeight - box.scrollTop;
      const first = store.hasMore === null;
      for (const message of event.messages) addMessage(message);
      store.hasMore = event.has_more && event.messages.length > 0;
      if (room !== state.current) return;
      box.scrollTop = first ? box.scrollHeight : box.scrollHeight - fromBottom;
      renderHistoryStatus();
      // Keep paging while the list does not fill the view (nothing to scroll yet).
      if (store.hasMore && box.scrollHeight <= box.clientHeight) loadHistory(room);
    });
  }

  function renderHistoryStatus() {
    const store = state.current ? storeOf(state.current) : null;
    let text = "";
    if (store && store.hasMore === false) text = store.order.length ? "start of the room" : "no messages yet";
    else if (store && store.hasMore) text = "scroll up for older messages";
    $("history-status").textContent = text;
  }

  function renderMessages() {
    state.shown.clear();
    const list = $("message-list");
    list.replaceChildren();
    renderHistoryStatus(); // no room, or a room not loaded yet: no stale "start of the room"
    if (!state.current) return;
    const store = storeOf(state.current);
    let previous;
    for (const seq of store.order) {
      const message = store.bySeq.get(seq);
      list.append(shownElement(store, seq, previous));
      previous = message;
    }
    $("messages").scrollTop = $("messages").scrollHeight;
  }

  // Sending ----------------------------------------------------------------------------------
  // Time-ordered (ms clock first, then randomness, like UUIDv7): the server's client_id index
  // then grows at its end instead of at random places, which keeps group commit cheap.
  function newClientId() {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    const random = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return Date.now().toString(16).padStart(12, "0") + random;
  }

  // True if `text` was taken (queued to send); else it stays in the box, and the bar says why.
  function sendMessage(text) {
    if (!text.trim()) return false;
    if (!state.current) {
      showError("no_room");
      return false;
    }
    clearError();
    const pending = { room: state.current, text, clientId: newClientId(), error: null };
    state.pending.set(pending.clientId, pending);
    renderPending();
    transmit(pending);
    return true;
  }

  function transmit(pending) {
    if (!state.connected) return; // sent after the next welcome
    send({
      type: "send",
      room: pending.room,
      text: pending.text,
      client_id: pending.clientId,
      ref: "s:" + pending.clientId,
    });
  }

  function renderPending() {
    const list = $("pending-list");
    list.replaceChildren();
    for (const pending of state.pending.values()) {
      if (pending.room !== state.current) continue;
      const item = el("li", pending.error ? "msg pending failed" : "msg pending");
      item.dataset.clientId = pending.clientId;
      item.dataset.code = pending.error || "";
      const note = pending.error ? "not sent: click to retry" : "sending…";
      item.append(bubble(state.user, pending.text, el("span", "note", note)));
      if (pending.error) {
        item.tabIndex = 0;
        item.setAttribute("role", "button");
        item.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") item.click();
        });
        item.addEventListener("click", () => {
          pending.error = null;
          renderPending();
          transmit(pending);
        });
      }
      list.append(item);
    }
  }

  // Sidebar ----------------------------------------------------------------------------------
  function renderRooms() {
    const list = $("room-list");
    list.replaceChildren();
    const rooms = [...state.rooms.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const room of rooms) {
      const item = el("li", room.name === state.current ? "room-item current" : "room-item");
      item.dataset.room = room.name;
      const name = el("button", "room-name", room.name);
      name.type = "button";
      name.disabled = !room.member;
      name.addEventListener("click", () => {
        selectRoom(room.name);
        leaveDrawer();
      });
      item.append(name);
      if (room.member) {
        const unread = el("span", "unread", String(room.unread));
        unread.hidden = room.unread === 0;
        item.append(unread);
      } else {
        const join = el("button", "join", "Join");
        join.type = "button";
        join.addEventListener("click", () => {
          joinRoom(room.name, true);
          leaveDrawer();
        });
        item.append(join);
      }
      list.append(item);
    }
  }

  function renderPresence() {
    const list = $("presence-list");
    list.replaceChildren();
    const users = (state.current && state.online.get(state.current)) || new Set();
    for (const user of [...users].sort()) list.append(el("li", "online-user", user));
  }

  function renderTyping() {
    const users = [...((state.current && state.typing.get(state.current)) || new Map()).keys()];
    const verb = users.length > 1 ? "are" : "is";
    $("typing").textContent = users.length ? `${users.join(", ")} ${verb} typing…` : "";
  }

  // The sidebar is a drawer on a narrow screen (app.css); the toggle is hidden on a wide one.
  function drawerOpen() {
    return $("chat-view").classList.contains("drawer-open");
  }

  function setDrawer(open) {
    $("chat-view").classList.toggle("drawer-open", open);
    $("rooms-toggle").setAttribute("aria-expanded", String(open));
    if (open) ($("room-list").querySelector("button:not(:disabled)") || $("new-room-name")).focus();
  }

  function leaveDrawer() {
    if (!drawerOpen()) return;
    setDrawer(false);
    $("composer-input").focus();
  }

  // Wiring -----------------------------------------------------------------------------------
  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      logIn(false);
    });
    $("register-button").addEventListener("click", () => logIn(true));
    $("logout-button").addEventListener("click", () => logOut(""));
    $("refresh-rooms").addEventListener("click", () =>
      refreshRooms(false).catch((error) => showError(error.code)),
    );
    $("create-room-form").addEventListener("submit", (event) => {
      event.preventDefault();
      createRoom($("new-room-name").value.trim());
    });
    $("leave-button").addEventListener("click", () => state.current && leaveRoom(state.current));
    $("error-dismiss").addEventListener("click", clearError);
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("composer-input");
      if (sendMessage(input.value)) input.value = "";
    });
    $("composer-input").addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter is a new line; never while an input method is composing.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("composer-input").addEventListener("input", () => {
      const now = Date.now();
      if (state.connected && state.current && now - state.lastTypingSent > TYPING_EVERY_MS) {
        state.lastTypingSent = now;
        send({ type: "typing", room: state.current, ref: "typing" });
      }
    });
    $("messages").addEventListener("scroll", () => {
      state.stuck = atBottom();
      if (state.current && $("messages").scrollTop < 60) loadHistory(state.current);
    });
    // The list loses height to the error bar, the typing line, a growing composer or a phone's
    // keyboard: whoever was reading the newest message keeps it in view.
    new ResizeObserver(() => state.stuck && scrollToBottom()).observe($("messages"));
    $("rooms-toggle").addEventListener("click", () => setDrawer(!drawerOpen()));
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
      if (state.ws) dropConnection(null, "offline");
    });

    state.token = sessionStorage.getItem(TOKEN_KEY);
    state.user = sessionStorage.getItem(USER_KEY);
    if (state.token && state.user) enterChat();
  }

  start();
})();
