// roomcast's chat page: plain JS over the gateway's WebSocket protocol (see protocol.rs).
// Every string that came from a user is put in the page with textContent, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const REQUEST_TIMEOUT_MS = 15000;
  const HISTORY_PAGE = 200;

  const S = {
    ws: null,
    // connecting | online | reconnecting | offline
    state: "offline",
    creds: null, // {token} or {user}
    user: null,
    superAdmin: false,
    nextId: 1,
    pending: new Map(), // id -> {op, resolve, reject, timer}
    rooms: new Map(), // room id -> Room
    current: null,
    attempt: 0,
    reconnectTimer: null,
    countdownTimer: null,
    holdUntil: 0,
    wantOnline: false,
    directory: new Map(), // room id -> last room info from `rooms`
  };

  // ---------- small DOM helpers ----------
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function show(node, on) { node.hidden = !on; }
  function fmtTime(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function errText(e) {
    if (!e) return "failed";
    if (e.code !== undefined && e.code !== null && e.code !== "closed" && e.code !== "timeout") {
      return (e.message || "failed") + " (code " + e.code + ")";
    }
    return e.message || String(e);
  }

  // ---------- connection state ----------
  function setState(state, text) {
    S.state = state;
    const c = $("conn");
    c.dataset.state = state;
    $("conn-text").textContent = text || state;
    document.body.dataset.conn = state;
    updateComposer();
  }

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/ws";
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    clearInterval(S.countdownTimer);
    S.reconnectTimer = null;
    const resuming = S.attempt > 0 || S.rooms.size > 0;
    setState("connecting", resuming ? "reconnecting…" : "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect("cannot open a WebSocket: " + e.message);
      return;
    }
    S.ws = ws;
    ws.onmessage = (ev) => {
      if (S.ws !== ws) return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(f);
    };
    ws.onclose = (ev) => {
      if (S.ws !== ws) return;
      S.ws = null;
      onClosed(ev.code, ev.reason);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  function failPending(reason) {
    for (const [, p] of S.pending) {
      clearTimeout(p.timer);
      p.reject({ code: "closed", message: reason });
    }
    S.pending.clear();
  }

  function onClosed(code, reason) {
    failPending("connection lost");
    markSendsUnconfirmed();
    if (!S.wantOnline) {
      setState("offline", "offline");
      return;
    }
    if (code === 4001) {
      // The credentials were refused: do not retry with them.
      S.wantOnline = false;
      setState("offline", "offline");
      loginError("Login refused: " + (reason || "authentication failed"));
      return;
    }
    let why = reason || ("closed (" + code + ")");
    scheduleReconnect(why);
  }

  function scheduleReconnect(why) {
    if (!S.wantOnline) return;
    const base = Math.min(30000, 500 * Math.pow(2, S.attempt));
    const delay = Math.max(base * (0.8 + Math.random() * 0.4), S.holdUntil - Date.now());
    S.attempt += 1;
    const at = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
      setState("reconnecting", "reconnecting in " + left + " s");
      $("conn").title = "connection lost: " + why;
    };
    tick();
    clearInterval(S.countdownTimer);
    S.countdownTimer = setInterval(tick, 1000);
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = setTimeout(() => {
      clearInterval(S.countdownTimer);
      connect();
    }, delay);
  }

  function send(frame) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(frame));
    return true;
  }

  // One request; resolves with its reply, rejects with its error frame (or a local failure).
  function request(op, fields) {
    return new Promise((resolve, reject) => {
      const id = S.nextId++;
      const frame = Object.assign({ op: op, id: id }, fields || {});
      if (!send(frame)) {
        reject({ code: "closed", message: "not connected", unsent: true });
        return;
      }
      const timer = setTimeout(() => {
        S.pending.delete(id);
        reject({ code: "timeout", message: "no answer in time" });
      }, REQUEST_TIMEOUT_MS);
      S.pending.set(id, { op: op, resolve: resolve, reject: reject, timer: timer });
    });
  }

  function onFrame(f) {
    switch (f.type) {
      case "hello":
        login();
        return;
      case "reply":
      case "error": {
        const p = f.id !== undefined ? S.pending.get(f.id) : null;
        if (p) {
          S.pending.delete(f.id);
          clearTimeout(p.timer);
          if (f.type === "reply") p.resolve(f); else p.reject(f);
        } else if (f.type === "error" && f.op === "login") {
          loginError("Login refused: " + f.message);
        }
        return;
      }
      case "message":
        onMessage(f);
        return;
      case "event":
        onEvent(f);
        return;
      case "count": {
        const r = S.rooms.get(f.room);
        if (r) { r.members = f.members; renderRoomHead(r); }
        return;
      }
      case "gap": {
        const r = S.rooms.get(f.room);
        if (r) {
          const lost = f.next - f.after - 1;
          systemLine(r, lost + " earlier message" + (lost === 1 ? " is" : "s are") + " no longer available", "gap");
          advanceTo(r, f.next - 1);
        }
        return;
      }
      case "missed":
        onMissed(f.count);
        return;
      default:
        return;
    }
  }

  // ---------- login ----------
  function loginError(text) {
    const e = $("login-error");
    e.textContent = text;
    show(e, true);
    document.body.dataset.view = "login";
    show($("login"), true);
    show($("app"), false);
  }

  async function login() {
    let reply;
    try {
      reply = await request("login", S.creds);
    } catch (e) {
      if (e.code === "closed") return; // the close handler decides
      S.wantOnline = false;
      loginError("Login refused: " + errText(e));
      if (S.ws) S.ws.close(1000);
      return;
    }
    S.user = reply.user;
    S.superAdmin = !!reply.super_admin;
    S.attempt = 0;
    S.holdUntil = 0;
    $("conn").title = "";
    setState("online", "online");
    show($("login-error"), false);
    show($("login"), false);
    show($("app"), true);
    document.body.dataset.view = "app";
    const me = $("me");
    me.textContent = S.user + (S.superAdmin ? " (super admin)" : "");
    show(me, true);
    show($("logout"), true);
    show($("create-form"), S.superAdmin);
    refreshRooms();
    clearInterval(S.roomsTimer);
    S.roomsTimer = setInterval(() => { if (S.state === "online") refreshRooms(); }, 20000);
    // Resume every room this page is in, from the last seq seen there; after a reload, open
    // again the rooms this tab was in.
    if (S.rooms.size === 0) {
      for (const info of storedRooms()) join(info.id, info);
    }
    for (const r of S.rooms.values()) {
      if (r.joined || r.wantJoin) resume(r);
    }
  }

  // The rooms this tab is in, kept across reloads (sessionStorage: this tab only).
  function storeKey() { return "roomcast.rooms." + S.user; }
  function storedRooms() {
    try {
      const v = JSON.parse(sessionStorage.getItem(storeKey()) || "[]");
      return Array.isArray(v) ? v.filter((x) => x && typeof x.id === "string") : [];
    } catch (e) { return []; }
  }
  function storeRooms() {
    if (!S.user) return;
    const list = [];
    for (const r of S.rooms.values()) if (r.joined || r.wantJoin) list.push({ id: r.id, name: r.name });
    try { sessionStorage.setItem(storeKey(), JSON.stringify(list)); } catch (e) { /* private mode */ }
  }

  function startLogin(creds) {
    S.creds = creds;
    S.wantOnline = true;
    S.attempt = 0;
    show($("login-error"), false);
    connect();
  }

  function logout() {
    S.wantOnline = false;
    clearInterval(S.roomsTimer);
    clearTimeout(S.reconnectTimer);
    clearInterval(S.countdownTimer);
    if (S.ws) {
      const ws = S.ws;
      request("logout").catch(() => {});
      setTimeout(() => { try { ws.close(1000); } catch (e) { /* gone */ } }, 200);
    }
    setState("offline", "offline");
    for (const r of S.rooms.values()) r.list.remove();
    S.rooms.clear();
    try { sessionStorage.removeItem(storeKey()); } catch (e) { /* private mode */ }
    S.current = null;
    renderJoined();
    showRoom(null);
    document.body.dataset.view = "login";
    show($("login"), true);
    show($("app"), false);
    show($("me"), false);
    show($("logout"), false);
    if (location.hash.indexOf("token=") >= 0) history.replaceState(null, "", location.pathname);
  }

  // ---------- rooms ----------
  function newRoom(info) {
    const list = el("ol", "msglist");
    list.dataset.room = info.id;
    list.hidden = true;
    $("messages").appendChild(list);
    if (follow) follow.observe(list);
    return {
      id: info.id,
      name: info.name,
      owner: info.owner,
      admins: new Set(info.admins || []),
      announcement: info.announcement || "",
      members: info.members || 0,
      allMuted: !!info.all_muted,
      lastSeq: 0, // every seq up to this one is shown (or known lost)
      based: false, // lastSeq was set from the first message or a since
      seqs: new Map(), // seq -> element
      list: list,
      joined: false,
      mutedUntil: null, // ms, -1 forever, null not muted
      sends: [], // own sends without a reply yet
    };
  }

  function applyInfo(r, info) {
    r.name = info.name;
    r.owner = info.owner;
    r.admins = new Set(info.admins || []);
    r.announcement = info.announcement || "";
    if (typeof info.members === "number") r.members = info.members;
    r.allMuted = !!info.all_muted;
  }

  function isStaff(r) {
    return !!r && !!S.user && (r.owner === S.user || r.admins.has(S.user));
  }

  async function refreshRooms() {
    const filter = $("room-filter").value.trim();
    let reply;
    try {
      reply = await request("rooms", { page: 1, size: 50, filter: filter || undefined });
    } catch (e) {
      if (e.code !== "closed") { $("rooms-error").textContent = "Room list: " + errText(e); show($("rooms-error"), true); }
      return;
    }
    show($("rooms-error"), false);
    if ($("room-filter").value.trim() !== filter) return; // a newer filter is on its way
    const ul = $("room-list");
    ul.textContent = "";
    for (const info of reply.rooms) {
      S.directory.set(info.id, info);
      const li = el("li", "room-item");
      li.dataset.room = info.id;
      li.dataset.name = info.name;
      const name = el("span", "room-name", info.name);
      const joined = S.rooms.get(info.id);
      const members = joined && joined.joined ? joined.members : info.members;
      const count = el("span", "room-count", members + " in");
      const btn = el("button", "small", joined && joined.joined ? "Open" : "Join");
      btn.type = "button";
      btn.dataset.action = "join";
      btn.addEventListener("click", () => join(info.id, info));
      li.append(name, count, btn);
      ul.appendChild(li);
    }
    show($("rooms-empty"), reply.rooms.length === 0);
  }

  async function createRoom(name) {
    let reply;
    try {
      reply = await request("create", { name: name });
    } catch (e) {
      $("rooms-error").textContent = "Create: " + errText(e);
      show($("rooms-error"), true);
      return;
    }
    show($("rooms-error"), false);
    $("create-name").value = "";
    // The creator owns the room and is in it: join with since 0 (a new room has no messages).
    const r = ensureRoom(reply.room);
    r.based = true;
    await doJoin(r, 0);
    showRoom(r.id);
    refreshRooms();
  }

  function ensureRoom(info) {
    let r = S.rooms.get(info.id);
    if (!r) {
      r = newRoom(info);
      S.rooms.set(info.id, r);
    } else {
      applyInfo(r, info);
    }
    return r;
  }

  async function join(id, info) {
    const existing = S.rooms.get(id);
    if (existing && existing.joined) { showRoom(id); return; }
    const r = ensureRoom(info || S.directory.get(id) || { id: id, name: id });
    r.wantJoin = true;
    showRoom(id);
    try {
      await doJoin(r, r.based ? r.lastSeq : undefined);
    } catch (e) {
      if (e.code === 701) {
        // A member already (the owner, or a reload within the grace period): show the newest
        // messages, then join from the newest one.
        try {
          const h = await request("history", { room: id, size: 20 });
          const msgs = h.messages.slice().sort((a, b) => a.seq - b.seq);
          for (const m of msgs) onMessage(m);
          await doJoin(r, r.lastSeq);
          return;
        } catch (e2) { e = e2; }
      }
      if (e.code === "closed") return; // joined (from the last seq) when the connection is back
      r.wantJoin = false;
      systemLine(r, "Could not join: " + errText(e), "error");
      renderRoomHead(r);
    }
  }

  // Joins (or resumes, with since) and applies the reply.
  async function doJoin(r, since) {
    const fields = { room: r.id };
    if (since !== undefined) fields.since = since;
    if (since !== undefined) { r.lastSeq = Math.max(r.lastSeq, since); r.based = true; }
    const reply = await request("join", fields);
    applyInfo(r, reply.room);
    r.joined = true;
    renderJoined();
    renderRoomHead(r);
    return reply;
  }

  // After a reconnect: join again from the last seq seen; then settle own sends that were in
  // flight when the connection dropped.
  async function resume(r) {
    try {
      await doJoin(r, r.lastSeq);
      await request("ping");
    } catch (e) {
      if (e.code === "closed" || e.code === "timeout") return;
      r.joined = false;
      r.wantJoin = false;
      systemLine(r, "Could not rejoin: " + errText(e), "error");
      renderJoined();
      renderRoomHead(r);
      return;
    }
    settleUnconfirmed(r);
  }

  async function leave(r) {
    try {
      await request("leave", { room: r.id });
    } catch (e) {
      systemLine(r, "Could not leave: " + errText(e), "error");
      return;
    }
    dropRoom(r);
    refreshRooms();
  }

  function dropRoom(r) {
    r.joined = false;
    r.wantJoin = false;
    r.list.remove();
    S.rooms.delete(r.id);
    if (S.current === r.id) showRoom(null);
    renderJoined();
  }

  function roomLeft(r, why) {
    r.joined = false;
    r.wantJoin = false;
    systemLine(r, why, "removed");
    renderJoined();
    renderRoomHead(r);
  }

  function renderJoined() {
    const ul = $("joined-list");
    ul.textContent = "";
    let n = 0;
    for (const r of S.rooms.values()) {
      n++;
      const li = el("li", "room-item" + (r.id === S.current ? " current" : "") + (r.joined ? "" : " left"));
      li.dataset.room = r.id;
      const name = el("span", "room-name", r.name);
      const btn = el("button", "small ghost", r.id === S.current ? "Open" : "Open");
      btn.type = "button";
      btn.addEventListener("click", () => showRoom(r.id));
      li.append(name, btn);
      ul.appendChild(li);
    }
    show($("joined-empty"), n === 0);
    storeRooms();
  }

  function showRoom(id) {
    S.current = id;
    for (const r of S.rooms.values()) r.list.hidden = r.id !== id;
    const r = id ? S.rooms.get(id) : null;
    show($("chat"), !!r);
    show($("placeholder"), !r);
    document.body.dataset.pane = r ? "chat" : "rooms";
    $("member-list").textContent = "";
    $("mod-status").textContent = "";
    if (r) {
      renderRoomHead(r);
      scrollToEnd(r, true);
    }
    renderJoined();
  }

  function renderRoomHead(r) {
    if (!r || r.id !== S.current) { renderJoined(); return; }
    $("room-name").textContent = r.name;
    const count = $("member-count");
    count.textContent = String(r.members);
    count.dataset.count = String(r.members);
    const role = r.owner === S.user ? " · you own it" : (r.admins.has(S.user) ? " · you are an admin" : "");
    $("room-role").textContent = role;
    show($("room-allmuted"), r.allMuted);
    const a = $("announcement");
    $("announcement-text").textContent = r.announcement;
    show(a, r.announcement !== "");
    const staff = isStaff(r) && r.joined;
    show($("mod"), staff);
    $("leave").textContent = r.joined ? "Leave" : "Close";
    $("leave").title = r.joined ? "Leave the room" : "Remove the room from this page";
    updateComposer();
  }

  function updateComposer() {
    const r = S.current ? S.rooms.get(S.current) : null;
    if (!r) return;
    const note = $("composer-note");
    let text = "";
    if (!r.joined) text = "You are not in this room.";
    else if (S.state !== "online") text = "Not connected: you can send again once the connection is back.";
    else if (r.mutedUntil !== null && (r.mutedUntil < 0 || r.mutedUntil > Date.now())) {
      text = r.mutedUntil < 0 ? "You are muted." : "You are muted until " + fmtTime(r.mutedUntil) + ".";
    } else if (r.allMuted && !isStaff(r)) text = "Only the hosts can talk now (everyone is muted).";
    note.textContent = text;
    show(note, text !== "");
    $("send").disabled = !r.joined;
  }

  // ---------- messages ----------
  // The message pane follows new content while it is scrolled to the bottom (also when it
  // shrinks, e.g. when a note appears under the composer).
  let stick = true;
  let scrolledTo = -1; // where the page itself last scrolled the pane to
  const box = $("messages");
  function toBottom() {
    box.scrollTop = box.scrollHeight;
    scrolledTo = box.scrollTop;
  }
  box.addEventListener("scroll", () => {
    // A scroll event of the page's own scrolling may come after more content arrived: only a
    // scroll by the user decides whether the pane follows.
    if (Math.abs(box.scrollTop - scrolledTo) < 2) return;
    stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  });
  const follow = typeof ResizeObserver === "function"
    ? new ResizeObserver(() => { if (stick) toBottom(); })
    : null;
  if (follow) follow.observe(box);
  function scrollToEnd(r, force) {
    if (r.id !== S.current) return;
    if (force) stick = true;
    if (stick) toBottom();
  }

  // Inserts a node in seq order: after the last message with a smaller seq, before pending
  // sends (which stay at the end).
  function insertBySeq(r, node, seq) {
    const list = r.list;
    let ref = null;
    let cur = list.lastElementChild;
    while (cur) {
      const s = cur.dataset.seq;
      if (cur.dataset.pending === "true" || s === undefined || Number(s) > seq) {
        ref = cur;
        cur = cur.previousElementSibling;
        continue;
      }
      break;
    }
    // Event lines after the last smaller message stay after it only if no message follows.
    if (cur) {
      ref = cur.nextElementSibling;
      while (ref && ref.dataset.seq === undefined && ref.dataset.pending !== "true") {
        // keep lines that came after `cur` before the new message when nothing newer follows
        let after = ref.nextElementSibling;
        let newer = false;
        while (after) {
          if (after.dataset.seq !== undefined) { newer = true; break; }
          after = after.nextElementSibling;
        }
        if (newer) break;
        ref = ref.nextElementSibling;
      }
    }
    list.insertBefore(node, ref);
  }

  // Appends a node at the end of the room's list, before pending sends.
  function appendLine(r, node) {
    const list = r.list;
    let ref = null;
    let cur = list.lastElementChild;
    while (cur && cur.dataset.pending === "true") { ref = cur; cur = cur.previousElementSibling; }
    list.insertBefore(node, ref);
  }

  function advanceTo(r, seq) {
    if (seq > r.lastSeq) r.lastSeq = seq;
    r.based = true;
    while (r.seqs.has(r.lastSeq + 1)) r.lastSeq += 1;
  }

  function messageNode(m, own) {
    const li = el("li", "msg" + (own ? " own" : ""));
    const head = el("div", "msg-head");
    head.append(el("span", "from", own ? "you" : m.from));
    if (m.time) {
      const t = el("time", "time", fmtTime(m.time));
      t.dateTime = new Date(m.time).toISOString();
      head.append(t);
    }
    if (m.priority === "high") head.append(el("span", "badge", "host"));
    if (m.shadowed) head.append(el("span", "badge", "shadow-banned: only hosts see this"));
    if (m.held_until) {
      head.append(el("span", "badge held", "held for review until " + fmtTime(m.held_until)));
      li.classList.add("held");
    }
    const body = el("div", "text", m.text);
    li.append(head, body);
    return li;
  }

  // A message deleted or recalled: its text goes, its place stays.
  function markRecalled(r, seq) {
    const li = r.seqs.get(seq);
    if (!li) return;
    li.classList.add("recalled");
    li.dataset.recalled = "true";
    const body = li.querySelector(".text");
    if (body) body.textContent = "(message deleted)";
    const del = li.querySelector("button.delete");
    if (del) del.remove();
  }

  function onMessage(m) {
    const r = S.rooms.get(m.room);
    if (!r) return;
    if (r.seqs.has(m.seq) || m.seq <= r.lastSeq && r.based) return; // seen already
    if (!r.based) { r.lastSeq = m.seq - 1; r.based = true; }
    const own = m.from === S.user;
    const li = messageNode(m, own);
    li.dataset.seq = String(m.seq);
    li.dataset.from = m.from;
    li.dataset.msgId = m.msg_id;
    if (m.history) {
      li.dataset.history = "true";
      li.classList.add("earlier");
      li.querySelector(".msg-head").append(el("span", "tag", "earlier"));
    }
    if (own) {
      li.dataset.sent = "true";
      // One of ours that came back through a resume: it replaces the bubble still waiting.
      const waiting = r.sends.find((s) => s.unconfirmed && s.text === m.text);
      if (waiting) { waiting.node.remove(); r.sends.splice(r.sends.indexOf(waiting), 1); }
    }
    if (isStaff(r) && !own) {
      // The hosts may delete anyone's message (a held one then never reaches the viewers).
      const del = el("button", "delete ghost small", "Delete");
      del.type = "button";
      del.addEventListener("click", () => moderate("delete", { seq: m.seq }, (room) => markRecalled(room, m.seq)));
      li.querySelector(".msg-head").append(del);
    }
    r.seqs.set(m.seq, li);
    insertBySeq(r, li, m.seq);
    advanceTo(r, m.seq);
    scrollToEnd(r);
  }

  function sendMessage(r, text, existing) {
    let s = existing;
    if (!s) {
      const node = messageNode({ from: S.user, text: text, time: Date.now() }, true);
      s = { text: text, node: node, unconfirmed: false };
      r.sends.push(s);
      r.list.appendChild(node);
    } else {
      r.list.appendChild(s.node); // a retry goes to the end again
    }
    const node = s.node;
    node.dataset.pending = "true";
    delete node.dataset.sent;
    delete node.dataset.error;
    node.classList.remove("failed");
    s.unconfirmed = false;
    const status = node.querySelector(".status") || el("div", "status");
    status.textContent = "sending…";
    node.append(status);
    const old = node.querySelector(".retry");
    if (old) old.remove();
    scrollToEnd(r, true);
    request("send", { room: r.id, text: text }).then((reply) => {
      const i = r.sends.indexOf(s);
      if (i >= 0) r.sends.splice(i, 1);
      delete node.dataset.pending;
      status.remove();
      if (r.seqs.has(reply.seq)) { node.remove(); return; }
      node.dataset.sent = "true";
      node.dataset.seq = String(reply.seq);
      node.dataset.from = S.user;
      node.dataset.msgId = reply.msg_id;
      const t = node.querySelector("time");
      if (t && reply.time) t.textContent = fmtTime(reply.time);
      r.seqs.set(reply.seq, node);
      node.remove();
      insertBySeq(r, node, reply.seq);
      advanceTo(r, reply.seq);
      scrollToEnd(r);
    }, (e) => {
      if (e.code === "closed" && e.unsent) {
        failSend(r, s, "you are offline", undefined);
        return;
      }
      if (e.code === "closed") {
        // The socket went away before the answer: the message may or may not be in the room.
        // The resume tells (it comes back as one of ours, or the bubble turns into a retry).
        s.unconfirmed = true;
        status.textContent = "waiting for the connection…";
        return;
      }
      failSend(r, s, errText(e), e.code);
    });
  }

  function failSend(r, s, text, code) {
    const node = s.node;
    delete node.dataset.pending;
    node.dataset.error = code === undefined ? "failed" : String(code);
    node.classList.add("failed");
    const status = node.querySelector(".status") || el("div", "status");
    status.textContent = "Not sent: " + text;
    node.append(status);
    let retry = node.querySelector(".retry");
    if (!retry) {
      retry = el("button", "retry small ghost", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => {
        if (S.state === "online" && r.joined) sendMessage(r, s.text, s);
      });
      node.append(retry);
    }
  }

  function markSendsUnconfirmed() {
    for (const r of S.rooms.values()) {
      for (const s of r.sends) {
        if (s.node.dataset.pending === "true") {
          s.unconfirmed = true;
          const st = s.node.querySelector(".status");
          if (st) st.textContent = "waiting for the connection…";
        }
      }
    }
  }

  // After a resume: sends still unconfirmed did not reach the room (else they came back).
  function settleUnconfirmed(r) {
    for (const s of r.sends.slice()) {
      if (s.unconfirmed) failSend(r, s, "the connection dropped before it was sent", undefined);
    }
  }

  // The event queue overflowed: fetch what was missed, and the rooms' state.
  async function onMissed(count) {
    for (const r of S.rooms.values()) {
      if (!r.joined) continue;
      systemLine(r, count + " update" + (count === 1 ? " was" : "s were") + " missed; catching up", "missed");
      fillAfter(r);
      request("info", { room: r.id }).then((reply) => { applyInfo(r, reply.room); renderRoomHead(r); }, () => {});
    }
  }

  async function fillAfter(r) {
    for (let round = 0; round < 50; round++) {
      let reply;
      try {
        reply = await request("history", { room: r.id, after: r.lastSeq, size: HISTORY_PAGE });
      } catch (e) {
        return;
      }
      const msgs = reply.messages.slice().sort((a, b) => a.seq - b.seq);
      for (const m of msgs) onMessage(m);
      if (msgs.length < HISTORY_PAGE) return;
    }
  }

  // ---------- events ----------
  function systemLine(r, text, kind) {
    const li = el("li", "line" + (kind ? " " + kind : ""), text);
    li.dataset.kind = kind || "event";
    appendLine(r, li);
    scrollToEnd(r);
    return li;
  }

  function who(u) { return u === S.user ? "you" : u; }
  // User ids are shown as they are (they may be case-sensitive); only "you" is capitalized.
  function Who(u) { return u === S.user ? "You" : u; }
  function names(list) {
    const xs = (list || []).map(who);
    if (xs.length <= 1) return xs.join("");
    return xs.slice(0, -1).join(", ") + " and " + xs[xs.length - 1];
  }
  function span(expire) {
    if (expire === null || expire === undefined || expire < 0) return "until unmuted";
    const secs = Math.max(1, Math.round((expire - Date.now()) / 1000));
    if (secs < 120) return "for " + secs + " s";
    if (secs < 7200) return "for " + Math.round(secs / 60) + " min";
    return "until " + new Date(expire).toLocaleString();
  }
  function by(op) { return op ? Who(op) : "The room"; }

  function onEvent(f) {
    let r = S.rooms.get(f.room);
    if (!r) return;
    switch (f.event) {
      case "member_joined":
        r.members += 1;
        systemLine(r, Who(f.participant) + " joined", "join");
        break;
      case "member_exited":
        r.members = Math.max(0, r.members - 1);
        systemLine(r, Who(f.participant) + " left", "leave");
        break;
      case "removed_from_chat_room": {
        const why = f.reason === "Kicked" ? "removed by " + (f.operator ? who(f.operator) : "a moderator")
          : f.reason === "Offline" ? "away too long" : f.reason === "Destroyed" ? "the room was closed" : String(f.reason);
        roomLeft(r, "You were removed from the room (" + why + ")");
        return;
      }
      case "chat_room_destroyed":
        roomLeft(r, "The room “" + (f.room_name || r.name) + "” was closed");
        return;
      case "mute_list_added": {
        const members = f.members || [];
        systemLine(r, by(f.operator) + " muted " + names(members) + " " + span(f.expire_time), "mute");
        if (members.indexOf(S.user) >= 0) r.mutedUntil = f.expire_time === null || f.expire_time === undefined ? -1 : f.expire_time;
        break;
      }
      case "mute_list_removed": {
        const members = f.members || [];
        systemLine(r, f.operator ? Who(f.operator) + " unmuted " + names(members)
          : "The mute of " + names(members) + " ended", "mute");
        if (members.indexOf(S.user) >= 0) r.mutedUntil = null;
        break;
      }
      case "all_member_mute_state_changed":
        r.allMuted = !!f.is_all_muted;
        systemLine(r, by(f.operator) + (r.allMuted ? " muted everyone (only hosts can talk)" : " unmuted everyone"), "mute");
        break;
      case "announcement_changed":
        r.announcement = f.announcement || "";
        systemLine(r, by(f.operator) + (r.announcement ? " updated the announcement" : " cleared the announcement"), "announce");
        break;
      case "admin_added":
        r.admins.add(f.admin);
        systemLine(r, by(f.operator) + " made " + who(f.admin) + " an admin", "admin");
        break;
      case "admin_removed":
        r.admins.delete(f.admin);
        systemLine(r, by(f.operator) + " took " + (f.admin === S.user ? "your" : f.admin + "'s") + " admin role", "admin");
        break;
      case "owner_changed":
        r.owner = f.new_owner;
        r.admins.delete(f.new_owner);
        systemLine(r, Who(f.new_owner) + (f.new_owner === S.user ? " are" : " is") + " now the owner (was " + who(f.old_owner) + ")", "admin");
        break;
      case "specification_changed":
        if (f.info) applyInfo(r, f.info);
        systemLine(r, by(f.operator) + " changed the room's details", "spec");
        break;
      case "allow_list_added":
        systemLine(r, by(f.operator) + " let " + names(f.members) + " talk during mute-all", "mute");
        break;
      case "allow_list_removed":
        systemLine(r, by(f.operator) + " took " + names(f.members) + " off the allow list", "mute");
        break;
      case "attributes_updated":
        systemLine(r, Who(f.from) + " set " + Object.keys(f.attributes || {}).join(", "), "attr");
        break;
      case "attributes_removed":
        systemLine(r, Who(f.from) + " removed " + (f.keys || []).join(", "), "attr");
        break;
      case "slow_mode_changed":
        systemLine(r, by(f.operator) + (f.cooldown_secs ? " turned slow mode on: one message every " + f.cooldown_secs + " s" : " turned slow mode off"), "mute");
        break;
      case "freeze_changed":
        systemLine(r, f.frozen ? by(f.operator) + " froze the room" + (f.until ? " " + span(f.until) : "") + " (only hosts can talk)"
          : (f.operator ? Who(f.operator) + " unfroze the room" : "The freeze ended"), "mute");
        break;
      case "message_recalled":
        markRecalled(r, f.seq);
        systemLine(r, (f.operator === f.from ? Who(f.from) + " recalled" : by(f.operator) + " deleted " + who(f.from) + "'s")
          + " message #" + f.seq, "mute");
        break;
      case "hold_changed":
        systemLine(r, by(f.operator) + (f.hold_secs ? " is holding messages for review (" + f.hold_secs + " s)" : " stopped holding messages"), "mute");
        break;
      case "message_pinned":
        systemLine(r, by(f.operator) + " pinned message #" + f.seq, "announce");
        break;
      case "message_unpinned":
        systemLine(r, by(f.operator) + " unpinned message #" + f.seq, "announce");
        break;
      case "shadow_ban_changed":
        systemLine(r, by(f.operator) + (f.banned ? " shadow-banned " : " lifted the shadow ban of ") + names(f.members)
          + " (only hosts see this)", "mute");
        break;
      case "chat_room_recovered":
        systemLine(r, "The room restarted; catching up", "missed");
        fillAfter(r);
        break;
      default:
        systemLine(r, "The room changed (" + String(f.event).replace(/_/g, " ") + ")", "event");
        break;
    }
    renderRoomHead(r);
  }

  // ---------- moderation ----------
  function modStatus(text, error) {
    const s = $("mod-status");
    s.textContent = text;
    s.classList.toggle("error", !!error);
  }

  async function moderate(op, fields, done) {
    const r = S.rooms.get(S.current);
    if (!r) return;
    try {
      await request(op, Object.assign({ room: r.id }, fields || {}));
      modStatus("");
      if (done) done(r);
      renderRoomHead(r);
    } catch (e) {
      modStatus(op.replace(/_/g, " ") + ": " + errText(e), true);
    }
  }

  async function loadMembers() {
    const r = S.rooms.get(S.current);
    if (!r) return;
    let reply, mutes = new Map();
    try {
      reply = await request("members", { room: r.id, size: 200 });
      try {
        const ml = await request("mute_list", { room: r.id, size: 200 });
        for (const m of ml.members) mutes.set(m.user, m.expire_time);
      } catch (e) { /* the list works without it */ }
    } catch (e) {
      modStatus("members: " + errText(e), true);
      return;
    }
    const ul = $("member-list");
    ul.textContent = "";
    for (const u of reply.members) {
      const li = el("li", "member");
      li.dataset.user = u;
      const name = el("span", "member-name", u);
      const tags = [];
      if (u === r.owner) tags.push("owner");
      if (r.admins.has(u)) tags.push("admin");
      if (mutes.has(u)) tags.push("muted");
      li.append(name);
      if (tags.length) li.append(el("span", "tag", tags.join(", ")));
      if (u !== S.user && u !== r.owner) {
        const actions = el("span", "actions");
        const secs = el("select", "secs");
        secs.setAttribute("aria-label", "Mute for");
        for (const [v, label] of [["60", "1 min"], ["600", "10 min"], ["3600", "1 h"], ["", "no end"]]) {
          const o = el("option", null, label);
          o.value = v;
          secs.append(o);
        }
        const mk = (label, action, fn) => {
          const b = el("button", "small ghost", label);
          b.type = "button";
          b.dataset.action = action;
          b.addEventListener("click", fn);
          return b;
        };
        const mute = mk("Mute", "mute", () => {
          const seconds = secs.value ? Number(secs.value) : undefined;
          moderate("mute", { users: [u], seconds: seconds }, (room) => {
            systemLine(room, "You muted " + u + " " + (seconds ? span(Date.now() + seconds * 1000) : "until unmuted"), "mute");
            loadMembers();
          });
        });
        const unmute = mk("Unmute", "unmute", () => moderate("unmute", { users: [u] }, (room) => {
          systemLine(room, "You unmuted " + u, "mute");
          loadMembers();
        }));
        const kick = mk("Kick", "kick", () => moderate("kick", { users: [u] }, (room) => {
          systemLine(room, u + " was removed (kicked)", "leave");
          room.members = Math.max(0, room.members - 1);
          li.remove();
        }));
        const block = mk("Block", "block", () => moderate("block", { users: [u] }, (room) => {
          systemLine(room, u + " was removed (blocked)", "leave");
          room.members = Math.max(0, room.members - 1);
          li.remove();
        }));
        actions.append(secs, mute, unmute, kick, block);
        li.append(actions);
      }
      ul.append(li);
    }
    modStatus(reply.members.length + " member" + (reply.members.length === 1 ? "" : "s"));
  }

  // ---------- debug hook for tests ----------
  window.roomcastDebug = {
    // Closes the socket abruptly (no logout) and holds off reconnecting for holdMs; then the
    // page reconnects, logs in again and resumes every room from its last seq.
    dropConnection(holdMs) {
      S.holdUntil = Date.now() + (holdMs || 0);
      S.attempt = 0;
      const ws = S.ws;
      if (!ws) { scheduleReconnect("dropped (debug)"); return; }
      S.ws = null;
      ws.onmessage = null;
      ws.onclose = null;
      try { ws.close(4000, "debug drop"); } catch (e) { /* gone */ }
      onClosed(4000, "dropped (debug)");
    },
    state() {
      const rooms = {};
      for (const r of S.rooms.values()) rooms[r.id] = { lastSeq: r.lastSeq, joined: r.joined, members: r.members };
      return { state: S.state, user: S.user, superAdmin: S.superAdmin, current: S.current, rooms: rooms };
    },
  };

  // ---------- wiring ----------
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("login-token").value.trim();
    const user = $("login-user").value.trim();
    if (token) startLogin({ token: token });
    else if (user) startLogin({ user: user });
    else loginError("Enter a token (or a user id in demo mode).");
  });
  $("logout").addEventListener("click", logout);
  let filterTimer = null;
  $("room-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(refreshRooms, 250);
  });
  $("rooms-refresh").addEventListener("click", refreshRooms);
  $("create-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("create-name").value.trim();
    if (name) createRoom(name);
  });
  $("back").addEventListener("click", () => showRoom(null));
  $("leave").addEventListener("click", () => {
    const r = S.rooms.get(S.current);
    if (!r) return;
    if (r.joined) leave(r); else dropRoom(r);
  });
  const composer = $("composer-text");
  function submitComposer() {
    const r = S.rooms.get(S.current);
    const text = composer.value;
    if (!r || !r.joined || text.trim() === "") return;
    composer.value = "";
    autosize();
    sendMessage(r, text);
  }
  function autosize() {
    composer.style.height = "auto";
    composer.style.height = Math.min(composer.scrollHeight, 140) + "px";
  }
  composer.addEventListener("input", autosize);
  composer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submitComposer();
    }
  });
  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); submitComposer(); });
  $("hold-on").addEventListener("click", () => moderate("hold", { seconds: 10 }));
  $("hold-off").addEventListener("click", () => moderate("hold", {}));
  $("mute-all").addEventListener("click", () => moderate("mute_all", {}, (r) => {
    r.allMuted = true;
    systemLine(r, "You muted everyone (only hosts can talk)", "mute");
  }));
  $("unmute-all").addEventListener("click", () => moderate("unmute_all", {}, (r) => {
    r.allMuted = false;
    systemLine(r, "You unmuted everyone", "mute");
  }));
  $("members-refresh").addEventListener("click", loadMembers);
  $("mod").addEventListener("toggle", () => { if ($("mod").open) loadMembers(); });
  $("announce-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("announce-text").value;
    moderate("announce", { text: text }, (r) => {
      r.announcement = text;
      systemLine(r, text ? "You updated the announcement" : "You cleared the announcement", "announce");
    });
  });
  window.addEventListener("online", () => {
    if (S.wantOnline && S.state === "reconnecting" && Date.now() >= S.holdUntil) connect();
  });

  // Auto-login from #token=...
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    const token = decodeURIComponent(m[1]);
    $("login-token").value = token;
    startLogin({ token: token });
  }
})();
