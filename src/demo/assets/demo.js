// Switchboard demo client. It uses only what the client contract promises (the `/realtime`
// namespace's events and the REST API under /api/v1/realtime), plus POST /demo/token to get a
// development token, so it doubles as a readable example of a client. Every server-provided
// string is put on the page with textContent, never as HTML.
'use strict';

(() => {
  const API = '/api/v1/realtime';
  const TYPING_REFRESH_MS = 1500; // the server forwards at most one isTyping:true per 2 s anyway
  const TYPING_IDLE_MS = 3000; // stop "typing" this long after the last keystroke
  const TYPING_STALE_MS = 8000; // drop a remote "is typing" if its isTyping:false never came

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'className') node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  };
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');
  const randomId = () => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

  const state = {
    token: null,
    userId: null,
    socket: null,
    rooms: new Map(), // roomId -> room object (REST shape)
    current: null, // open roomId
    messages: [], // of the open room, oldest first
    typing: new Map(), // roomId -> Map(userId -> stale timer)
    names: new Map(), // userId -> display name, learnt from room members
    presence: new Map(), // userId -> { status, lastSeen }
    notifications: [],
    unread: 0,
    myTyping: { roomId: null, sentAt: 0, idle: null },
  };

  // --- REST ------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) throw new Error(data?.error?.message || `HTTP ${res.status}`);
    return data;
  }

  async function fetchToken(userId, name) {
    const res = await fetch('/demo/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(name ? { userId, name } : { userId }),
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Error(data?.error?.message || `HTTP ${res.status}`);
    return data.token;
  }

  /** The claims of a JWT (unverified: only to show who a token is for). */
  function tokenClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return null;
    }
  }
  const tokenSubject = (token) => tokenClaims(token)?.sub;

  // --- sign in / out ---------------------------------------------------------------------

  function setStatus(text, kind) {
    $('status').textContent = text;
    $('status').dataset.state = kind;
  }

  async function signIn(event) {
    event.preventDefault();
    $('signin-error').textContent = '';
    const userId = $('user-id').value.trim();
    const name = $('user-name').value.trim();
    const pasted = $('token-input').value.trim();
    try {
      const token = pasted || (await fetchToken(userId, name));
      const subject = tokenSubject(token);
      if (!subject) throw new Error('that token is not a JWT');
      sessionStorage.setItem('switchboard-demo-token', token);
      start(token, subject);
    } catch (err) {
      $('signin-error').textContent = err.message;
      if (/cannot sign/.test(err.message)) $('token-details').open = true;
    }
  }

  function signOut() {
    sessionStorage.removeItem('switchboard-demo-token');
    location.reload();
  }

  function start(token, userId) {
    state.token = token;
    state.userId = userId;
    $('signin').hidden = true;
    $('app').hidden = false;
    for (const id of ['signout', 'bell', 'my-status']) $(id).hidden = false;
    const name = tokenClaims(token)?.name;
    $('whoami').replaceChildren(name && name !== userId ? name : userId);
    if (name && name !== userId) $('whoami').append(' ', el('small', {}, userId));
    connect();
  }

  // --- the socket ------------------------------------------------------------------------

  function connect() {
    setStatus('connecting…', 'connecting');
    const socket = io('/realtime', { auth: { token: state.token } });
    state.socket = socket;

    socket.on('connect', () => setStatus('connected', 'connected'));
    socket.on('disconnect', (reason) => setStatus(`disconnected (${reason})`, 'offline'));
    socket.on('connect_error', (err) => {
      setStatus(`refused: ${err.message}`, 'error');
      if (err.message === 'UNAUTHORIZED') {
        sessionStorage.removeItem('switchboard-demo-token');
      }
    });

    socket.on('session:ready', async (ready) => {
      state.userId = ready.userId;
      setUnread(ready.unreadNotifications);
      await loadRooms().catch(showRoomError);
      const ack = await socket.emitWithAck('notifications:subscribe', {});
      if (ack?.ok) {
        state.notifications = ack.notifications;
        setUnread(ack.unreadCount);
        renderNotifications();
      }
      // After a reconnect, catch up on what the open room missed.
      if (state.current) await catchUp(state.current);
    });

    socket.on('chat:new_message', ({ roomId, message }) => receiveMessage(roomId, message));
    socket.on('chat:message_updated', ({ roomId, message }) => {
      if (roomId !== state.current) return;
      const i = state.messages.findIndex((m) => m.id === message.id);
      if (i >= 0) state.messages[i] = message;
      renderMessages();
    });
    socket.on('chat:room_updated', ({ room, change }) => {
      const stillMember = room.members.some((m) => m.userId === state.userId);
      if (stillMember) {
        const known = state.rooms.get(room.id);
        state.rooms.set(room.id, { ...known, ...room, unreadCount: room.unreadCount ?? known?.unreadCount ?? 0 });
      } else {
        state.rooms.delete(room.id);
        if (state.current === room.id) closeRoom();
      }
      learnNames(room);
      renderRooms();
      if (room.id === state.current) renderRoomHeader();
      if (change === 'created' && !state.current && stillMember) openRoom(room.id);
    });
    socket.on('chat:user_typing', ({ roomId, userId, isTyping }) => setTyping(roomId, userId, isTyping));
    socket.on('presence:update', ({ userId, status, lastSeen }) => {
      state.presence.set(userId, { status, lastSeen });
      renderPeople();
      renderRoomHeader();
    });
    socket.on('notification:new', (notification) => {
      state.notifications = [notification, ...state.notifications.filter((n) => n.id !== notification.id)].slice(0, 50);
      renderNotifications();
    });
    socket.on('notification:unread_count', ({ count }) => setUnread(count));
  }

  // --- rooms -----------------------------------------------------------------------------

  function learnNames(room) {
    for (const member of room.members ?? []) state.names.set(member.userId, member.name);
  }
  const nameOf = (userId) => state.names.get(userId) || userId;

  function roomLabel(room) {
    if (room.type === 'direct') {
      const other = room.members.find((m) => m.userId !== state.userId);
      return other ? other.name || other.userId : 'direct';
    }
    return room.name || room.id.slice(0, 8);
  }

  async function loadRooms() {
    const page = await api('GET', '/chat/rooms?limit=100');
    state.rooms = new Map(page.items.map((room) => [room.id, room]));
    page.items.forEach(learnNames);
    renderRooms();
  }

  function renderRooms() {
    const list = $('rooms');
    list.replaceChildren();
    if (state.rooms.size === 0) list.append(el('li', { className: 'empty hint' }, 'No rooms yet.'));
    for (const room of state.rooms.values()) {
      const item = el('li', { dataset: { roomId: room.id, type: room.type } },
        el('span', { className: 'room-name' }, roomLabel(room)),
        el('span', { className: 'kind' }, room.type));
      if (room.unreadCount > 0 && room.id !== state.current) {
        item.append(el('span', { className: 'unread' }, String(room.unreadCount)));
      }
      if (room.id === state.current) item.classList.add('active');
      item.addEventListener('click', () => openRoom(room.id));
      list.append(item);
    }
  }

  async function createRoom(event) {
    event.preventDefault();
    $('room-error').textContent = '';
    const type = $('room-type').value;
    const participants = $('room-participants').value.split(',').map((s) => s.trim()).filter(Boolean);
    const body = { type, participants };
    const name = $('room-name').value.trim();
    if (name) body.name = name;
    try {
      const room = await api('POST', '/chat/rooms', body);
      state.rooms.set(room.id, room);
      learnNames(room);
      $('room-participants').value = '';
      $('room-name').value = '';
      await openRoom(room.id);
    } catch (err) {
      showRoomError(err);
    }
  }
  function showRoomError(err) {
    $('room-error').textContent = err.message;
  }

  async function openRoom(roomId) {
    stopTyping();
    state.current = roomId;
    state.messages = [];
    const room = state.rooms.get(roomId);
    if (room) room.unreadCount = 0;
    renderRooms();
    renderRoomHeader();
    renderTyping();
    $('message-input').disabled = false;
    $('send-btn').disabled = false;
    $('message-input').focus();
    try {
      // chat:join makes sure this socket is in the room (and makes a public room ours).
      const joined = await state.socket.emitWithAck('chat:join', { roomId });
      if (joined?.ok) {
        state.rooms.set(roomId, { ...state.rooms.get(roomId), ...joined.room, unreadCount: 0 });
        learnNames(joined.room);
        renderRoomHeader();
      }
      const page = await api('GET', `/chat/rooms/${roomId}/messages?limit=50`);
      if (state.current !== roomId) return;
      // Newest first from the API; live messages may have arrived meanwhile.
      const live = state.messages;
      state.messages = page.items.reverse();
      for (const m of live) if (!state.messages.some((x) => x.id === m.id)) state.messages.push(m);
      renderMessages();
      markRead();
    } catch (err) {
      $('send-error').textContent = err.message;
    }
  }

  function closeRoom() {
    state.current = null;
    state.messages = [];
    $('message-input').disabled = true;
    $('send-btn').disabled = true;
    renderRoomHeader();
    renderMessages();
    renderTyping();
  }

  async function catchUp(roomId) {
    const afterSeq = state.messages.at(-1)?.seq ?? 0;
    const ack = await state.socket.emitWithAck('chat:sync', { roomId, afterSeq, limit: 100 });
    if (ack?.ok) ack.messages.forEach((m) => receiveMessage(roomId, m));
  }

  function renderRoomHeader() {
    const room = state.current && state.rooms.get(state.current);
    $('room-title').textContent = room ? roomLabel(room) : 'No room open';
    const members = $('room-members');
    members.replaceChildren();
    for (const m of room?.members ?? []) {
      const status = m.userId === state.userId ? 'online' : state.presence.get(m.userId)?.status;
      members.append(el('span', { dataset: { userId: m.userId } },
        el('span', { className: 'dot', dataset: { status: status || 'unknown' } }),
        `${m.name || m.userId}${m.role === 'owner' ? ' (owner)' : ''}`));
    }
  }

  // --- messages --------------------------------------------------------------------------

  function receiveMessage(roomId, message) {
    if (!state.rooms.has(roomId)) {
      loadRooms().catch(showRoomError);
      return;
    }
    setTyping(roomId, message.userId, false);
    const room = state.rooms.get(roomId);
    room.lastSeq = Math.max(room.lastSeq ?? 0, message.seq);
    if (roomId !== state.current) {
      if (message.userId !== state.userId) room.unreadCount = (room.unreadCount ?? 0) + 1;
      renderRooms();
      return;
    }
    if (state.messages.some((m) => m.id === message.id)) return;
    state.messages.push(message);
    state.messages.sort((a, b) => a.seq - b.seq);
    renderMessages();
    if (document.visibilityState === 'visible') markRead();
  }

  function renderMessages() {
    const list = $('messages');
    list.replaceChildren();
    if (!state.current) {
      list.append(el('li', { className: 'empty' }, 'Pick a room, or create one.'));
      return;
    }
    if (state.messages.length === 0) list.append(el('li', { className: 'empty' }, 'No messages yet. Say hello!'));
    for (const m of state.messages) {
      const mine = m.userId === state.userId;
      list.append(el('li', { className: mine ? 'message mine' : 'message', dataset: { seq: String(m.seq), userId: m.userId } },
        el('div', { className: 'meta' }, `${m.senderName || m.userId} · ${time(m.createdAt)}${m.editedAt ? ' · edited' : ''}`),
        el('div', { className: 'content' }, m.deleted ? '(deleted)' : m.content)));
    }
    list.scrollTop = list.scrollHeight;
  }

  async function send(event) {
    event.preventDefault();
    const input = $('message-input');
    const text = input.value;
    if (!state.current || !text.trim()) return;
    $('send-error').textContent = '';
    stopTyping();
    const roomId = state.current;
    const ack = await state.socket
      .timeout(10_000)
      .emitWithAck('chat:message', { roomId, message: text, clientMessageId: randomId() })
      .catch(() => ({ ok: false, error: { message: 'no answer from the server' } }));
    if (!ack.ok) {
      $('send-error').textContent = ack.error.retryAfterMs
        ? `${ack.error.message} (retry in ${Math.ceil(ack.error.retryAfterMs / 1000)} s)`
        : ack.error.message;
      return;
    }
    input.value = '';
    // The sending socket gets no chat:new_message of its own message: the ack carries it.
    receiveMessage(roomId, ack.message);
  }

  function markRead() {
    const last = state.messages.at(-1);
    if (state.current && last) state.socket.emit('chat:read', { roomId: state.current, upToSeq: last.seq });
  }

  // --- typing ----------------------------------------------------------------------------

  function onInput() {
    const roomId = state.current;
    if (!roomId) return;
    const mine = state.myTyping;
    if (mine.roomId !== roomId || Date.now() - mine.sentAt > TYPING_REFRESH_MS) {
      state.socket.emit('chat:typing', { roomId, isTyping: true });
      mine.roomId = roomId;
      mine.sentAt = Date.now();
    }
    clearTimeout(mine.idle);
    mine.idle = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    const mine = state.myTyping;
    clearTimeout(mine.idle);
    if (mine.roomId) state.socket?.emit('chat:typing', { roomId: mine.roomId, isTyping: false });
    mine.roomId = null;
    mine.sentAt = 0;
  }

  function setTyping(roomId, userId, isTyping) {
    if (!state.typing.has(roomId)) state.typing.set(roomId, new Map());
    const users = state.typing.get(roomId);
    clearTimeout(users.get(userId));
    if (isTyping) users.set(userId, setTimeout(() => setTyping(roomId, userId, false), TYPING_STALE_MS));
    else users.delete(userId);
    if (roomId === state.current) renderTyping();
  }

  function renderTyping() {
    const users = [...(state.typing.get(state.current)?.keys() ?? [])].map(nameOf);
    $('typing').textContent = users.length === 0 ? ''
      : users.length === 1 ? `${users[0]} is typing…`
        : `${users.slice(0, -1).join(', ')} and ${users.at(-1)} are typing…`;
  }

  // --- presence --------------------------------------------------------------------------

  function renderPeople() {
    const list = $('people');
    list.replaceChildren();
    if (state.presence.size === 0) list.append(el('li', { className: 'hint' }, 'Nobody yet.'));
    for (const [userId, { status, lastSeen }] of state.presence) {
      list.append(el('li', { dataset: { userId, status } },
        el('span', { className: 'dot', dataset: { status } }),
        `${nameOf(userId)} `,
        el('span', { className: 'when' }, status === 'offline' && lastSeen ? `last seen ${time(lastSeen)}` : status)));
    }
  }

  async function setMyStatus() {
    await state.socket.emitWithAck('presence:status', { status: $('my-status').value });
  }

  // --- notifications ---------------------------------------------------------------------

  function setUnread(count) {
    state.unread = count ?? 0;
    $('notif-badge').textContent = String(state.unread);
    $('notif-badge').hidden = state.unread === 0;
  }

  function renderNotifications() {
    const list = $('notifications');
    list.replaceChildren();
    if (state.notifications.length === 0) list.append(el('li', { className: 'hint' }, 'No notifications.'));
    for (const n of state.notifications) {
      const item = el('li', { className: n.isRead ? 'notification' : 'notification unread-item', dataset: { id: n.id, type: n.type } },
        el('div', { className: 'title' }, n.title),
        el('div', {}, n.message),
        el('div', { className: 'meta' }, `${n.type}${n.actor ? ` · ${n.actor.name || n.actor.id}` : ''} · ${time(n.createdAt)}`));
      item.addEventListener('click', () => markNotifications({ notificationIds: [n.id] }));
      list.append(item);
    }
  }

  async function markNotifications(body) {
    const ack = await state.socket.emitWithAck('notifications:mark_read', body);
    if (!ack?.ok) return;
    const all = body.all === true;
    for (const n of state.notifications) if (all || body.notificationIds.includes(n.id)) n.isRead = true;
    setUnread(ack.unreadCount);
    renderNotifications();
  }

  // --- wiring ----------------------------------------------------------------------------

  $('signin').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('new-room').addEventListener('submit', createRoom);
  $('refresh-rooms').addEventListener('click', () => loadRooms().catch(showRoomError));
  $('composer').addEventListener('submit', send);
  $('message-input').addEventListener('input', onInput);
  $('mark-all-read').addEventListener('click', () => markNotifications({ all: true }));
  $('bell').addEventListener('click', () => $('notifications').scrollTo({ top: 0 }));
  $('my-status').addEventListener('change', setMyStatus);
  $('room-type').addEventListener('change', () => {
    $('room-name').disabled = $('room-type').value === 'direct';
  });
  renderPeople();

  const saved = sessionStorage.getItem('switchboard-demo-token');
  const savedUser = saved && tokenSubject(saved);
  if (savedUser) start(saved, savedUser);
})();
