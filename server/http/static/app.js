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
  const ERROR_TEXT = {
    rate_limited: "you are sending too fast; the message was not sent (click it to retry)",
    text_too_long: "that message is too long (at most 4000 characters); it was not sent",
    text_empty: "an empty message is not sent",
    text_invalid: "that message holds a control character that cannot be sent; it was not sent",
    not_member: "you are not a member of that room",
    no_such_room: "there is no such room",
    name_taken: "that name is taken",
    bad_credentials: "wrong name or password",
    unavailable: "the server could not store the message (click it to retry)",
  };

  const state = {
    token: null,
    user: null,
    ws: null, // the current WebSocket; events from any older one are ignored
    connected: false, // welcome received on `ws`
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

  function showError(code, message) {
    $("error-text").textContent = `${code}: ${ERROR_TEXT[code] || message || "error"}`;
    $("error-bar").hidden = false;
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
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
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
      $("login-error").textContent = `${error.code}: ${ERROR_TEXT[error.code] || error.message}`;
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
      showError(error.code, error.message);
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
    showError(error.code, error.message);
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
      if (event.type === "error") return showError(event.code, event.message);
      joinedRoom(event, select);
    });
  }

  function leaveRoom(name) {
    request({ type: "leave", room: name }, (event) => {
      if (event.type === "error") return showError(event.code, event.message);
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
      $("new-room-name").value = "";
    } catch (error) {
      showError(error.code, error.message);
    }
  }

  function selectRoom(name) {
    state.current = name;
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
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      const next = state.shown.get(store.order[index + 1]) || null;
      const item = messageElement(message);
      state.shown.set(message.seq, item);
      $("message-list").insertBefore(item, next);
      if (atBottom && !next) box.scrollTop = box.scrollHeight;
    }
    return true;
  }

  function messageElement(message) {
    const item = el("li", message.user === state.user ? "msg mine" : "msg");
    item.dataset.seq = String(message.seq);
    const when = new Date(message.ts);
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = when.toISOString();
    item.append(time, el("span", "user", message.user), el("span", "text", message.text));
    return item;
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
      if (event.type === "error") return showError(event.code, event.message);
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
    if (store && store.hasMore === false) text = "start of the room";
    else if (store && store.hasMore) text = "scroll up for older messages";
    $("history-status").textContent = text;
  }

  function renderMessages() {
    state.shown.clear();
    const list = $("message-list");
    list.replaceChildren();
    if (!state.current) return;
    const store = storeOf(state.current);
    for (const seq of store.order) {
      const item = messageElement(store.bySeq.get(seq));
      state.shown.set(seq, item);
      list.append(item);
    }
    renderHistoryStatus();
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

  function sendMessage(text) {
    if (!text.trim()) return;
    if (!state.current) return showError("no_room", "pick or create a room first");
    clearError();
    const pending = { room: state.current, text, clientId: newClientId(), error: null };
    state.pending.set(pending.clientId, pending);
    renderPending();
    transmit(pending);
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
      const note = pending.error ? `not sent (${pending.error}): click to retry` : "sending…";
      item.append(
        el("span", "user", state.user),
        el("span", "text", pending.text),
        el("span", "note", note),
      );
      if (pending.error) {
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
      name.addEventListener("click", () => selectRoom(room.name));
      item.append(name);
      if (room.member) {
        const unread = el("span", "unread", String(room.unread));
        unread.hidden = room.unread === 0;
        item.append(unread);
      } else {
        const join = el("button", "join", "Join");
        join.type = "button";
        join.addEventListener("click", () => joinRoom(room.name, true));
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

  // Wiring -----------------------------------------------------------------------------------
  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      logIn(false);
    });
    $("register-button").addEventListener("click", () => logIn(true));
    $("logout-button").addEventListener("click", () => logOut(""));
    $("refresh-rooms").addEventListener("click", () =>
      refreshRooms(false).catch((error) => showError(error.code, error.message)),
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
      const text = input.value;
      input.value = "";
      sendMessage(text);
    });
    $("composer-input").addEventListener("input", () => {
      const now = Date.now();
      if (state.connected && state.current && now - state.lastTypingSent > TYPING_EVERY_MS) {
        state.lastTypingSent = now;
        send({ type: "typing", room: state.current, ref: "typing" });
      }
    });
    $("messages").addEventListener("scroll", () => {
      if (state.current && $("messages").scrollTop < 60) loadHistory(state.current);
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
