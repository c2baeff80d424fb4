// A stand-in for a socket.io-client Socket with just what the helper touches: `auth`,
// `onAny`/`offAny`, `on`/`off`, `emit`. `handshake()` plays the client's CONNECT (it runs the
// auth callback like socket.io-client does), `deliver()` plays a server event, `drop()` a
// disconnect.
export class FakeSocket {
  constructor(auth = { token: 'initial' }) {
    this.auth = auth;
    this.any = [];
    this.handlers = new Map();
    this.emitted = [];
    this.disconnected = false;
  }

  onAny(listener) {
    this.any.push(listener);
    return this;
  }

  offAny(listener) {
    this.any = listener ? this.any.filter((l) => l !== listener) : [];
    return this;
  }

  on(event, listener) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(listener);
    return this;
  }

  off(event, listener) {
    this.handlers.set(event, (this.handlers.get(event) ?? []).filter((l) => l !== listener));
    return this;
  }

  emit(...args) {
    this.emitted.push(args);
    return this;
  }

  emitWithAck(...args) {
    this.emitted.push(args);
    return Promise.resolve({ ok: true });
  }

  disconnect() {
    this.disconnected = true;
    return this;
  }

  /** The auth payload the next CONNECT packet would carry. */
  handshake() {
    return new Promise((resolve) => (typeof this.auth === 'function' ? this.auth(resolve) : resolve(this.auth)));
  }

  deliver(event, ...args) {
    for (const listener of [...this.any]) listener(event, ...args);
  }

  drop(reason = 'transport close') {
    for (const listener of this.handlers.get('disconnect') ?? []) listener(reason);
  }
}

/** A `session:ready` payload with the contract fields and the resume fields. */
export function ready({ cursor, recovered = false, reset = recovered ? [] : ['chat', 'notifications', 'feed'], replayed = 0 }) {
  return { userId: 'u1', rooms: [], unreadNotifications: 0, serverTime: new Date(0).toISOString(), cursor, recovered, reset, replayed };
}
