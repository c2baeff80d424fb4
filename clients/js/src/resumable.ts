/**
 * The resume helper around one socket.io-client `Socket`: it is the only place that reads the
 * cursors the server appends to journaled events, so it can send the last one back on every
 * (re)connect, drop what it has already seen, and tell the app which state to refetch when the
 * server could not replay everything.
 */
import type { Socket } from 'socket.io-client';
import { parseCursor, type ParsedCursor } from './cursor.js';
import type { CursorStorage } from './storage.js';

/** The streams a reset can name: what the app must reload over REST (or `chat:sync`). */
export type ResetKind = 'chat' | 'notifications' | 'feed';

/** `auth.feed` at connect: subscribe this socket to the feed so feed activities resume too. */
export type FeedMode = 'all' | 'following';

/** A listener of server events; payload types are the app's business. */
export type Listener = (...args: any[]) => void;

/** What the last `session:ready` said about the resume. */
export interface SessionInfo {
  /** The position the client is at once the replay that follows is applied. */
  cursor: string | null;
  /** True iff a cursor was sent and everything since it follows. */
  recovered: boolean;
  /** Kinds to refetch; all three on a first connect (a fresh client loads its state anyway). */
  reset: ResetKind[];
  /** How many replayed events follow `session:ready`. */
  replayed: number;
  /** The whole `session:ready` payload (`userId`, `rooms`, `unreadNotifications`, …). */
  ready: Record<string, unknown>;
}

/** Options of the helper, shared by `connect()` and `wrap()`. */
export interface ResumeOptions {
  /** The JWT sent in `auth.token`. */
  token?: string;
  /** Called before every (re)connect; wins over `token`, so an expired token can be renewed. */
  getToken?: () => string | Promise<string>;
  /** Keeps the last cursor across app restarts; read once, before the first connect. */
  storage?: CursorStorage;
  /** Subscribe to the feed at connect (`auth.feed`) so feed activities are resumed too. */
  feed?: FeedMode;
  /** Extra `auth` fields sent on every connect. */
  auth?: Record<string, unknown>;
  /** Called when a (re)connect says some state must be refetched (see `onReset`). */
  onReset?: (kinds: ResetKind[], session: SessionInfo) => void;
  /** Called when the storage fails to read or write; the helper carries on from memory. */
  onStorageError?: (err: unknown) => void;
}

const KINDS: readonly ResetKind[] = ['chat', 'notifications', 'feed'];

/**
 * A socket whose journaled events are deduplicated and resumed. Register listeners on this
 * object (`on`, `once`, `off`), not on `socket`: listeners on the raw socket still see replayed
 * duplicates and the trailing cursor argument.
 */
export class ResumableSocket {
  /** The wrapped socket, for emitting and for its own lifecycle events (`connect_error`, …). */
  readonly socket: Socket;
  /** Journaled events dropped because their id was not above the last one seen. */
  duplicates = 0;
  /** `recovered` of the last `session:ready`; `null` before the first one. */
  recovered: boolean | null = null;
  /** `reset` of the last `session:ready`. */
  reset: ResetKind[] = [];
  /** The last `session:ready`, as the helper read it. */
  session: SessionInfo | null = null;

  private readonly options: ResumeOptions;
  private readonly baseAuth: Record<string, unknown>;
  private position: ParsedCursor | null = null;
  private cursorText: string | null = null;
  private storageRead = false;
  /** Replayed events still to come after the last `session:ready`, and where they end. */
  private replayLeft = 0;
  private replayEnd: ParsedCursor | null = null;
  private readonly listeners = new Map<string, Listener[]>();
  private readonly sessionListeners = new Set<(session: SessionInfo) => void>();
  private readonly resetListeners = new Set<(kinds: ResetKind[], session: SessionInfo) => void>();
  private writing = false;
  private unwritten: string | null = null;
  private readonly onAnyEvent: Listener;
  private readonly onDisconnect: () => void;

  constructor(socket: Socket, options: ResumeOptions = {}) {
    this.socket = socket;
    this.options = options;
    this.baseAuth = typeof socket.auth === 'object' && socket.auth !== null ? { ...socket.auth } : {};
    if (options.onReset) this.resetListeners.add(options.onReset);
    // socket.io-client calls this before every CONNECT packet, reconnects included.
    socket.auth = (cb: (data: object) => void) => {
      this.authPayload().then(cb, () => cb({ ...this.baseAuth, ...options.auth }));
    };
    this.onAnyEvent = (event: string, ...args: unknown[]) => this.receive(event, args);
    this.onDisconnect = () => {
      // A replay cut short ends where its last event was received: that is the cursor to send.
      this.replayLeft = 0;
      this.replayEnd = null;
    };
    socket.onAny(this.onAnyEvent);
    socket.on('disconnect', this.onDisconnect);
  }

  /** The last cursor seen (the one the next connect sends), or `null` if none yet. */
  get lastCursor(): string | null {
    return this.cursorText;
  }

  /** Adds `listener` for the server event `event`: `(payload, cursor?)`, duplicates never. */
  on(event: string, listener: Listener): this {
    const list = this.listeners.get(event);
    if (list) list.push(listener);
    else this.listeners.set(event, [listener]);
    return this;
  }

  /** Like `on`, for the next delivery only. */
  once(event: string, listener: Listener): this {
    const wrapper: Listener = (...args) => {
      this.off(event, wrapper);
      listener(...args);
    };
    return this.on(event, wrapper);
  }

  /** Removes `listener` (or every listener of `event` when none is given). */
  off(event: string, listener?: Listener): this {
    if (!listener) {
      this.listeners.delete(event);
      return this;
    }
    const list = this.listeners.get(event);
    if (list) {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.listeners.delete(event);
    }
    return this;
  }

  /** Called after every `session:ready` with what it said; returns an unsubscribe function. */
  onSession(listener: (session: SessionInfo) => void): () => void {
    this.sessionListeners.add(listener);
    return () => this.sessionListeners.delete(listener);
  }

  /**
   * Called when a (re)connect could not replay some streams: refetch those kinds (rooms and
   * messages, notifications, feed) over REST. Also on the first connect of a client without a
   * cursor, where it lists every kind. Returns an unsubscribe function.
   */
  onReset(listener: (kinds: ResetKind[], session: SessionInfo) => void): () => void {
    this.resetListeners.add(listener);
    return () => this.resetListeners.delete(listener);
  }

  /** Emits on the wrapped socket. */
  emit(event: string, ...args: unknown[]): this {
    this.socket.emit(event, ...args);
    return this;
  }

  /** `emitWithAck` of the wrapped socket. */
  emitWithAck(event: string, ...args: unknown[]): Promise<any> {
    return this.socket.emitWithAck(event, ...args);
  }

  /** Resolves with the next `session:ready` (a connect or a reconnect). */
  nextSession(): Promise<SessionInfo> {
    return new Promise((resolve) => {
      const off = this.onSession((s) => {
        off();
        resolve(s);
      });
    });
  }

  /** Stops the helper (the socket keeps its last auth) and disconnects the socket. */
  close(): void {
    this.detach();
    this.socket.disconnect();
  }

  /** Stops reading the socket's events without closing it. */
  detach(): void {
    this.socket.offAny(this.onAnyEvent);
    this.socket.off('disconnect', this.onDisconnect);
  }

  private async authPayload(): Promise<Record<string, unknown>> {
    const { getToken, storage, feed } = this.options;
    if (!this.storageRead && storage) {
      this.storageRead = true;
      if (this.cursorText === null) {
        try {
          const stored = await storage.get();
          const parsed = parseCursor(stored);
          if (parsed && this.cursorText === null) {
            this.position = parsed;
            this.cursorText = stored;
          }
        } catch (err) {
          this.options.onStorageError?.(err);
        }
      }
    }
    const auth: Record<string, unknown> = { ...this.baseAuth, ...this.options.auth };
    const token = getToken ? await getToken() : this.options.token;
    if (token !== undefined) auth.token = token;
    if (this.cursorText !== null) auth.cursor = this.cursorText;
    if (feed) auth.feed = feed;
    return auth;
  }

  private receive(event: string, args: unknown[]): void {
    if (event === 'session:ready') {
      this.ready(args[0]);
      this.dispatch(event, args);
      return;
    }
    // A journaled event is `(payload, cursor)`; ephemeral ones have no trailing cursor.
    const cursor = args.length >= 2 ? parseCursor(args[args.length - 1]) : null;
    if (!cursor) {
      this.dispatch(event, args);
      return;
    }
    const replaying = this.replayLeft > 0;
    if (replaying) this.replayLeft -= 1;
    const seen = this.position;
    if (seen && seen.epoch === cursor.epoch && cursor.id <= seen.id) {
      this.duplicates += 1;
    } else {
      this.moveTo(cursor, args[args.length - 1] as string);
      this.dispatch(event, args);
    }
    if (replaying && this.replayLeft === 0) this.replayDone();
  }

  private ready(payload: unknown): void {
    const p = (typeof payload === 'object' && payload !== null ? payload : {}) as Record<string, unknown>;
    const reset = Array.isArray(p.reset) ? KINDS.filter((k) => (p.reset as unknown[]).includes(k)) : [];
    const replayed = typeof p.replayed === 'number' && p.replayed > 0 ? Math.floor(p.replayed) : 0;
    const cursorText = typeof p.cursor === 'string' ? p.cursor : null;
    const session: SessionInfo = {
      cursor: cursorText,
      recovered: p.recovered === true,
      reset,
      replayed,
      ready: p,
    };
    this.session = session;
    this.recovered = session.recovered;
    this.reset = reset;
    const end = parseCursor(cursorText);
    if (end) {
      // A new epoch (the server's journal was replaced): old ids mean nothing any more.
      if (this.position && this.position.epoch !== end.epoch) this.position = { epoch: end.epoch, id: 0 };
      this.replayLeft = replayed;
      this.replayEnd = end;
      if (replayed === 0) this.replayDone();
    }
    for (const listener of [...this.sessionListeners]) listener(session);
    if (reset.length > 0) for (const listener of [...this.resetListeners]) listener(reset, session);
  }

  /** After the replay, the client stands at the head the server named, even past its last event. */
  private replayDone(): void {
    const end = this.replayEnd;
    this.replayEnd = null;
    if (!end) return;
    const seen = this.position;
    if (!seen || seen.epoch !== end.epoch || end.id > seen.id) this.moveTo(end, `${end.epoch}:${end.id}`);
  }

  private moveTo(cursor: ParsedCursor, text: string): void {
    this.position = cursor;
    this.cursorText = text;
    this.persist(text);
  }

  /** Writes the latest cursor, one write at a time: a burst of events costs one or two writes. */
  private persist(text: string): void {
    const storage = this.options.storage;
    if (!storage) return;
    this.unwritten = text;
    if (this.writing) return;
    this.writing = true;
    const next = (): void => {
      const value = this.unwritten;
      this.unwritten = null;
      if (value === null) {
        this.writing = false;
        return;
      }
      storage.set(value).then(next, (err) => {
        this.options.onStorageError?.(err);
        next();
      });
    };
    next();
  }

  private dispatch(event: string, args: unknown[]): void {
    const list = this.listeners.get(event);
    if (!list) return;
    for (const listener of [...list]) listener(...args);
  }
}
